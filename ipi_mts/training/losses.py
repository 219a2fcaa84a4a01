"""Losses and error statistics of energy models against labelled frames.

With B structures of N_b atoms, predicted E_b, F_i and reference E_b*, F_i*:

    L_E = (1/B) Σ_b ((E_b − E_b*) / N_b)²                      (eV/atom)²
    L_F = (1/3n) Σ_i |F_i − F_i*|²                              (eV/Å)², per component
    L   = w_E L_E + w_F L_F  [+ λ S]

and the slow-force smoothness penalty over the m atoms of the frame pairs (x_t, x_t+Δ) in
the batch, Δ one outer MTS step:

    S = (1/3m) Σ_i |F_slow,i(x_t+Δ) − F_slow,i(x_t)|²           (eV/Å)², per component

so that λ = 1 weighs a change of the slow force over one outer step like a force error of
the same size. The slow bond-response penalty moves the two atoms of every covalent bond b
apart by an independent Gaussian vector d_b (each component of standard deviation ε, the
bond's centre of mass fixed, `batches.covalent_bonds`) and asks the slow force not to follow:

    R = (1/3n) Σ_i |F_slow,i(x + Δ(d)) − F_slow,i(x)|²                    (eV/Å)², per component

In expectation over d that is, to first order, ε² Σ_b Σ_a |H_slow v_b,a|² / 3n, with v_b,a
the displacement that moves bond b's atoms apart by a unit step along axis a: the slow force's
response to each bonded pair's relative motion (stretch, bend and, for the hydrogens of a
molecule, libration), which an outer MTS step longer than those motions' periods samples
badly. The slow bond-force penalty asks instead that the slow force not act on any bond's
relative coordinate r_b = x_j − x_i at all, through its generalised force

    f_b = −∂E_slow/∂r_b = (m_i F_slow,j − m_j F_slow,i)/(m_i + m_j),    B = (1/3K) Σ_b |f_b|²

(zero when the slow force accelerates both atoms of every bond alike; for water: moves each
molecule as a whole), which at every configuration also makes its curvature along r_b vanish.

Errors are reported as MAE and RMSE of the energy per atom (meV/atom) and of the force
components (meV/Å), as nequip does.
"""

from __future__ import annotations

import math

import torch


def energy_force_loss(energy, forces, batch, w_energy: float, w_forces: float):
    """(weighted loss, L_E, L_F) of predictions against a `batches.Batch`'s labels."""
    e_per_atom = (energy.to(torch.float64) - batch.energy) / batch.n_atoms
    l_e = (e_per_atom**2).mean()
    l_f = ((forces.to(torch.float64) - batch.forces) ** 2).mean()
    return w_energy * l_e + w_forces * l_f, l_e, l_f


def smoothness_penalty(slow_forces, pair_first, pair_second):
    """S: mean squared change per component of the slow force between the frames of each
    pair (atom indices `pair_first` at x_t, `pair_second` at x_t+Δ). 0 without pairs."""
    if pair_first.numel() == 0:
        return slow_forces.new_zeros(())
    diff = slow_forces.index_select(0, pair_second) - slow_forces.index_select(0, pair_first)
    return (diff**2).mean()


def bond_displacement(bonds, weights, n_atoms: int, amplitude: float, generator=None):
    """Δ (n_atoms, 3): every bond's atoms moved apart by d_b ~ N(0, ε² I), centre of mass fixed."""
    d = amplitude * torch.randn((bonds.shape[0], 3), generator=generator, dtype=weights.dtype).to(weights.device)
    out = torch.zeros((n_atoms, 3), dtype=weights.dtype, device=weights.device)
    out.index_add_(0, bonds[:, 0], weights[:, :1] * d)
    return out.index_add_(0, bonds[:, 1], weights[:, 1:] * d)


def bond_forces(forces, bonds, weights):
    """f_b (K, 3): the generalised force on each bond's relative coordinate x_j − x_i."""
    return weights[:, :1] * forces.index_select(0, bonds[:, 0]) + weights[:, 1:] * forces.index_select(0, bonds[:, 1])


class ErrorStats:
    """Running MAE/RMSE of energies per atom and force components, and force magnitudes."""

    def __init__(self):
        self.n_structures = 0
        self.n_components = 0
        self.e_abs = self.e_sq = 0.0
        self.f_abs = self.f_sq = 0.0
        self.f_ref_sq = 0.0

    def add(self, energy, forces, batch):
        e = ((energy.detach().double() - batch.energy) / batch.n_atoms).cpu()
        f = (forces.detach().double() - batch.forces).cpu()
        self.n_structures += e.numel()
        self.n_components += f.numel()
        self.e_abs += float(e.abs().sum())
        self.e_sq += float((e**2).sum())
        self.f_abs += float(f.abs().sum())
        self.f_sq += float((f**2).sum())
        self.f_ref_sq += float((batch.forces.cpu() ** 2).sum())

    def loss(self, w_energy: float, w_forces: float) -> float:
        """The training loss (without the smoothness term) over everything added."""
        return w_energy * self.e_sq / max(self.n_structures, 1) + w_forces * self.f_sq / max(
            self.n_components, 1
        )

    def summary(self) -> dict:
        ns, nc = max(self.n_structures, 1), max(self.n_components, 1)
        return {
            "energy_mae_mev_per_atom": 1000.0 * self.e_abs / ns,
            "energy_rmse_mev_per_atom": 1000.0 * math.sqrt(self.e_sq / ns),
            "forces_mae_mev_per_A": 1000.0 * self.f_abs / nc,
            "forces_rmse_mev_per_A": 1000.0 * math.sqrt(self.f_sq / nc),
            "reference_forces_rms_mev_per_A": 1000.0 * math.sqrt(self.f_ref_sq / nc),
            "n_structures": self.n_structures,
        }





def measure_errors(model, frames, batch_size: int = 8, components=None) -> dict:
    """Errors of `model` (any EnergyModel) on a `batches.FrameSet`, through
    `potentials.evaluate`: `ErrorStats.summary()`. `components` ({name: EnergyModel}, e.g.
    the fast and slow parts of a pair) adds the RMS and mean norm of each one's forces
    (meV/Å; parts have no reference labels of their own)."""
    from ..potentials import evaluate

    stats = ErrorStats()
    sums = {name: [0.0, 0.0, 0] for name in (components or {})}
    for indices in frames.all_batches(batch_size):
        batch = frames.collate(indices)
        out = evaluate(model, batch.state)
        stats.add(out.energy, out.forces, batch)
        for name, part in (components or {}).items():
            f = evaluate(part, batch.state).forces.detach().double().cpu()
            sums[name][0] += float((f**2).sum())
            sums[name][1] += float(torch.linalg.vector_norm(f, dim=-1).sum())
            sums[name][2] += f.shape[0]
    result = stats.summary()
    for name, (sq, norm, n) in sums.items():
        result[f"{name}_forces_rms_mev_per_A"] = 1000.0 * math.sqrt(sq / max(3 * n, 1))
        result[f"{name}_forces_mean_norm_mev_per_A"] = 1000.0 * norm / max(n, 1)
    return result

__all__ = ["ErrorStats", "bond_displacement", "bond_forces", "energy_force_loss", "measure_errors", "smoothness_penalty"]
