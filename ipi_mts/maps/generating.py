r"""Midpoint generating functions: long-time-step maps that are symplectic by construction.

Bigi, Spies, Ceriotti, "Learning the action" (arXiv 2508.01068). A scalar S(q̄, p̄) of the
midpoints q̄ = (q + q')/2, p̄ = (p + p')/2 defines the map (q, p) -> (q', p') of a stride τ
implicitly by

    q' = q + ∂S/∂p̄ (q̄, p̄),     p' = p − ∂S/∂q̄ (q̄, p̄)

which is symplectic for any smooth S (its Jacobian is the Cayley transform
(1 − ½ΩA)⁻¹(1 + ½ΩA) of A = ∇²S, and so JᵀΩJ = Ω), and time-reversible when S is even in
p̄: starting from (q', −p') the same equations are solved by (q, −p). Here

    S(q̄, p̄) = τ H̃(q̄, p̄),    H̃ = Σ_i |p̄_i|² / 2m_i + V(q̄) + H_θ(q̄, p̄)

with V any `EnergyModel` (a reference or learned potential, the physics anchor) and H_θ an
optional learned correction (`MomentumCorrection`). With H_θ = 0 the map is the implicit
midpoint rule, second order in τ like velocity Verlet.

H_θ sees the momenta mass-scaled and made dimensionless, u_i = p̄_i / √(m_i E₀)
(|u_i|² = 2 × kinetic energy of atom i in units of E₀ = `kinetic_scale`, k_B·300 K by
default: thermal u ~ 1 for every species alike), and is an E(3)-invariant, permutation-
invariant network of (q̄, Z, u) that is EXACTLY even in u by symmetrisation:

    H_θ(q̄, p̄) = ½ [ f_θ(q̄, u) + f_θ(q̄, −u) ]

where f_θ is the NequIP-style model of `ipi_mts.potentials.equivariant` with u_i fed in as
one 1o (polar vector) feature next to the species embedding, h_i⁽⁰⁾ = [W onehot(Z_i) ; u_i].
Both signs go through the network as one batch of two structures on one neighbour list.

Units: maps work in i-PI atomic units (q bohr, p a.u., m electron masses, τ a.u. time;
S in Hartree · a.u. time, an action); V and H_θ are eV models of positions in Å, converted
by `ipi_mts.units` only. ∂V/∂q̄ comes from the shared wrapper `potentials.evaluate`; the
gradients of H_θ (in q̄ and p̄ at once) from one autograd call here.

The midpoint parametrisation has a limit: the exact flow of a harmonic oscillator of
frequency ω has the midpoint generating function S* = (2/ω) tan(ωτ/2) H, which diverges at
ωτ = π (there the flow maps z to −z, so z̄ = 0 whatever z). No S, learned or not, represents
the exact flow at or beyond half a period of the fastest vibration: for water's O–H stretch
(period ≈ 9 fs) that is τ ≈ 4.5 fs (`harmonic_action_factor`).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

from .. import units
from ..potentials.base import EnergyModel
from ..potentials.equivariant import EquivariantConfig, EquivariantPotential, Interaction
from ..state import State
from .system import System

KINETIC_SCALE_EV = 0.025852  # k_B · 300 K in eV, E₀ of the momentum features


# --- the learned correction --------------------------------------------------------------------
class _SpeciesAndMomenta(torch.nn.Module):
    """h_i⁽⁰⁾ = [W onehot(Z_i) ; u_i]: the species embedding with the momentum feature u_i
    (1x1o, in e3nn's l = 1 basis) appended. `vectors` is set by `MomentumCorrection` for the
    duration of one call, since `EquivariantPotential` calls its embedding with the one-hot
    species only."""

    def __init__(self, species_embedding: torch.nn.Module):
        super().__init__()
        self.species = species_embedding
        self.vectors = None

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        if self.vectors is None:
            raise RuntimeError("MomentumCorrection needs momenta: call its energy_pm(state, u)")
        return torch.cat([self.species(onehot), self.vectors.to(onehot.dtype)], dim=-1)


class MomentumCorrection(EquivariantPotential):
    """H_θ(q̄, u) in eV, even in u; an `EquivariantPotential` whose first layer also takes
    the momentum feature u_i (module docstring). Not an energy model of positions alone:
    call `energy_pm(state, u)`."""

    architecture = "momentum-correction"

    def __init__(
        self,
        config: EquivariantConfig,
        seed: int | None = None,
        kinetic_scale: float = KINETIC_SCALE_EV,
    ):
        super().__init__(config, seed=seed)
        # E₀ (eV) of u = p / √(m E₀); a buffer, so that it travels with the weights
        scale = torch.tensor(float(kinetic_scale), dtype=torch.float64)
        self.register_buffer("kinetic_scale", scale)

    def _build(self, config: EquivariantConfig):
        super()._build(config)
        first = self.layers[0]
        self.embedding = _SpeciesAndMomenta(self.embedding)
        self.layers[0] = Interaction(
            first.irreps_in + o3.Irreps("1x1o"),
            first.irreps_out,
            self.irreps_sh,
            self.irreps_species,
            config,
        )

    def momentum_features(self, p: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        """u = p / √(m E₀), dimensionless; p (n, 3) and masses (n,) in atomic units."""
        e0 = units.energy_to_wire(self.kinetic_scale)
        return p / torch.sqrt(masses * e0)[:, None]

    def energy_pm(self, state: State, u: torch.Tensor) -> torch.Tensor:
        """(n_structures,) eV: ½ [f(q, u) + f(q, −u)], exactly even in u (n_atoms, 3)."""
        n, b = state.positions.shape[0], state.n_structures
        i, j, vectors = self.edges(state)
        doubled = State(
            positions=torch.cat([state.positions, state.positions]),
            numbers=torch.cat([state.numbers, state.numbers]),
            cell=torch.cat([state.cell, state.cell]),
            pbc=torch.cat([state.pbc, state.pbc]),
            batch=torch.cat([state.batch, state.batch + b]),
        )
        edges = (torch.cat([i, i + n]), torch.cat([j, j + n]), torch.cat([vectors, vectors]))
        # u in e3nn's l = 1 basis (spherical harmonics of l = 1, unnormalised, are ∝ u)
        y = o3.spherical_harmonics("1o", u, normalize=False, normalization="component")
        y = y / math.sqrt(3.0)
        self.embedding.vectors = torch.cat([y, -y])
        try:
            both = self.energy(doubled, edges=edges)
        finally:
            self.embedding.vectors = None
        return 0.5 * (both[:b] + both[b:])


# --- the generating function --------------------------------------------------------------------
class GeneratingFunction(torch.nn.Module):
    """S(q̄, p̄) = τ [Σ p̄²/2m + V(q̄) + H_θ(q̄, p̄)] (module docstring); τ = `timestep_fs`."""

    def __init__(
        self,
        potential: EnergyModel,
        timestep_fs: float,
        correction: MomentumCorrection | None = None,
    ):
        super().__init__()
        if not float(timestep_fs) > 0:
            raise ValueError(f"timestep_fs must be positive, not {timestep_fs!r}")
        self.potential = potential
        self.correction = correction
        self.timestep_fs = float(timestep_fs)

    @property
    def tau(self) -> float:
        """The stride τ in atomic time units."""
        return self.timestep_fs * units.FEMTOSECOND

    def value(self, qbar: torch.Tensor, pbar: torch.Tensor, system: System) -> torch.Tensor:
        """S (0-d, Hartree · a.u. time), differentiable in q̄ (n, 3) bohr and p̄ (n, 3) a.u."""
        h = system.hamiltonian(self.potential, qbar, pbar)
        if self.correction is not None:
            h = h + self._correction(qbar, pbar, system)
        return self.tau * h

    def _correction(self, qbar, pbar, system) -> torch.Tensor:
        """H_θ (0-d, Hartree)."""
        return network_energy(self.correction, qbar[None], pbar[None], [system])

    def gradients(self, qbar: torch.Tensor, pbar: torch.Tensor, system: System):
        """(∂S/∂q̄ (n, 3) a.u. momentum, ∂S/∂p̄ (n, 3) bohr), detached:

            ∂S/∂q̄ = τ (−F(q̄) + ∂H_θ/∂q̄),   ∂S/∂p̄ = τ (p̄/m + ∂H_θ/∂p̄)
        """
        dq = -system.forces(self.potential, qbar)
        dp = pbar / system.masses[:, None]
        if self.correction is not None:
            gq, gp = network_gradients(self.correction, qbar[None], pbar[None], [system])
            dq, dp = dq + gq[0], dp + gp[0]
        return self.tau * dq, self.tau * dp


def network_energy(network: MomentumCorrection, q, p, systems) -> torch.Tensor:
    """h = Σ_b `network`(q_b, p_b) (0-d, Hartree) of B structures as one State: q (B, n, 3)
    bohr, p (B, n, 3) a.u., `systems` one `System` each; differentiable in q and p."""
    b, n = q.shape[:2]
    state = State(
        positions=units.positions_from_wire(q.reshape(-1, 3)),
        numbers=torch.cat([s.numbers for s in systems]),
        cell=torch.cat([s.cell for s in systems]),
        pbc=torch.cat([s.pbc for s in systems]),
        batch=torch.arange(b).repeat_interleave(n),
    )
    u = network.momentum_features(p.reshape(-1, 3), torch.cat([s.masses for s in systems]))
    return units.energy_to_wire(network.energy_pm(state, u).sum())


def network_gradients(network: MomentumCorrection, q, p, systems, create_graph=False):
    """(∂h/∂q Ha/bohr, ∂h/∂p bohr/a.u. time), each (B, n, 3), of h = `network_energy` (the
    per-structure gradients, since h is their sum). Detached unless `create_graph` (training)."""
    with torch.enable_grad():
        q = q.detach().requires_grad_(True)
        p = p.detach().requires_grad_(True)
        return torch.autograd.grad(network_energy(network, q, p, systems), (q, p), create_graph=create_graph)


def harmonic_action_factor(omega_tau: float) -> float:
    """S*/(τH) = tan(ωτ/2) / (ωτ/2): the factor by which the midpoint generating function of
    the exact harmonic flow over τ exceeds τH. It diverges at ωτ = π; beyond, the exact flow
    has no midpoint generating function (ValueError)."""
    x = 0.5 * float(omega_tau)
    if not 0.0 <= x < 0.5 * math.pi:
        raise ValueError(
            f"ωτ = {omega_tau:g}: the exact harmonic flow has no midpoint generating function "
            "for ωτ >= π (half a period or more)"
        )
    return 1.0 if x == 0.0 else math.tan(x) / x


__all__ = ["GeneratingFunction", "MomentumCorrection", "harmonic_action_factor", "network_gradients", "KINETIC_SCALE_EV"]
