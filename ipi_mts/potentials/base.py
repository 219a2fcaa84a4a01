"""Energy models and the one wrapper that derives forces and virial from them.

Every potential is an `EnergyModel`: it maps a `State` to one energy per structure (eV).
`evaluate` derives, for every model alike,

    F_i = -dE/dr_i                                (eV/Å)
    W   = -dE/dε  at ε = 0,  r -> r (1 + ε)ᵀ, cell -> cell (1 + ε)ᵀ   (eV)

so W_ab = Σ_i F_ia r_ib for a pair potential: i-PI's virial (an energy, not divided by the
volume, Σ f ⊗ r). By autograd, unless the model gives ∂E/∂v_e per pair vector v_e = r_j −
r_i (+ the cell's shift) in closed form (`EnergyModel.edge_gradient`; its energy then depends
on the positions through those vectors only). Then, with no autograd graph, which costs more
than the force itself for a small, cheap model:

    F_i = Σ_{e: i(e)=i} ∂E/∂v_e − Σ_{e: j(e)=i} ∂E/∂v_e,    W = −Σ_e ∂E/∂v_e ⊗ v_e

(v → v (1 + ε)ᵀ under the strain). `forces_and_laplacian` adds each atom's Laplacian
Δ_i E = Σ_a ∂²E/∂r_ia² (for the configurational temperature).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import UserError
from ..state import State


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given ('auto' or None: CUDA when present, else CPU); a CUDA device asked for
    where there is none is a UserError."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"bad device {device!r}: {e}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available here")
    return chosen


class EnergyModel(torch.nn.Module):
    """Base class: subclasses implement `energy(state) -> (n_structures,) eV`."""

    def energy(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def check(self, numbers) -> None:
        """Raise UserError if the model cannot handle a structure with these atomic numbers."""

    def default_numbers(self, n_atoms: int):
        """Atomic numbers to assume when i-PI sends none and no template is given, or None
        if the model needs to be told."""
        return None

    @property
    def has_edge_gradient(self) -> bool:
        """Whether `edge_gradient` applies now: False (the default) where the model has no such
        closed form, or its gradient must come from autograd (a model that trains)."""
        return False

    def edge_gradient(self, state: State, edges=None):
        """(E per structure, [(i, j, v, ∂E/∂v), ...]): the energy and its gradient with respect to
        the pair vectors v = r_j − r_i of one or more lists of edges (i, j), computed without
        autograd, where `has_edge_gradient`. `edges` as for `energy`."""
        raise NotImplementedError

    def forward(self, state: State) -> torch.Tensor:
        return self.energy(state)


@dataclass
class Evaluation:
    energy: torch.Tensor  # (n_structures,) eV
    forces: torch.Tensor  # (n_atoms, 3) eV/Å
    virial: torch.Tensor  # (n_structures, 3, 3) eV, Σ f ⊗ r


def evaluate(model: EnergyModel, state: State, create_graph: bool = False) -> Evaluation:
    """Energy, forces = -∂E/∂r and virial = -∂E/∂ε of every structure in `state`: from the
    model's `edge_gradient` where it has one (and no graph is asked for), else by autograd."""
    if not create_graph and model.has_edge_gradient:
        with torch.no_grad():
            return _from_edge_gradient(state, *model.edge_gradient(state))
    with torch.enable_grad():
        strain = torch.zeros_like(state.cell, requires_grad=True)
        positions = state.positions.detach().requires_grad_(True)
        deformation = torch.eye(3, dtype=state.cell.dtype, device=state.cell.device) + strain
        # r -> r (1 + ε)ᵀ per structure (one structure, a driver's hot path: one matrix product,
        # no per-atom gather); cell rows deform the same way
        transposed = deformation.mT
        if state.n_structures == 1:
            strained_positions = positions @ transposed[0]
        else:
            per_atom = transposed.index_select(0, state.batch)
            strained_positions = (positions.unsqueeze(-2) @ per_atom).squeeze(-2)
        strained = replace(state, positions=strained_positions, cell=state.cell @ transposed)
        energy = model.energy(strained)
        grad_r, grad_e = torch.autograd.grad(
            energy.sum(), (positions, strain), create_graph=create_graph, allow_unused=True
        )
    if not create_graph:
        energy = energy.detach()
    forces = -grad_r if grad_r is not None else torch.zeros_like(positions)
    virial = -grad_e if grad_e is not None else torch.zeros_like(state.cell)
    return Evaluation(energy=energy, forces=forces, virial=virial)


def _from_edge_gradient(state: State, energy, parts) -> Evaluation:
    dtype = state.positions.dtype
    forces = torch.zeros_like(state.positions)
    virial = torch.zeros_like(state.cell)
    for i, j, vectors, grad in parts:
        grad = grad.to(dtype)
        forces = forces.index_add(0, i, grad).index_add(0, j, -grad)
        if state.n_structures == 1:
            virial = virial - (grad.T @ vectors.to(dtype))[None]
        else:
            pair_virial = grad[:, :, None] * vectors.to(dtype)[:, None, :]
            virial = virial.index_add(0, state.batch.index_select(0, i), -pair_virial)
    return Evaluation(energy=energy.to(dtype), forces=forces, virial=virial)


def forces_and_laplacian(model: EnergyModel, state: State, probes: int = 1, generator=None):
    """Forces F = -∂E/∂r (n_atoms, 3) and each atom's Laplacian Δ_i E = Σ_a ∂²E/∂r_ia²
    (n_atoms,), eV/Å², by Hutchinson's estimator over `probes` random z (±1 per coordinate):

        Δ_i E ≈ mean_z Σ_a z_ia (H z)_ia,    H z = ∂(∂E/∂r · z)/∂r   (a double backward)

    unbiased (E[z z^T] = 1) and exact when H has no coupling between coordinates; the
    couplings add zero-mean noise that averages out over atoms and frames."""
    with torch.enable_grad():
        positions = state.positions.detach().requires_grad_(True)
        energy = model.energy(replace(state, positions=positions))
        (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=True)
        lap = torch.zeros(len(positions), dtype=positions.dtype, device=positions.device)
        for k in range(probes):
            z = torch.randint(0, 2, positions.shape, generator=generator, dtype=positions.dtype) * 2 - 1
            z = z.to(positions.device)
            (hz,) = torch.autograd.grad(grad, positions, grad_outputs=z, retain_graph=k + 1 < probes)
            lap += (z * hz).sum(dim=1)
    return -grad.detach(), lap / probes
