"""Direct predictors: a cheap explicit guess of (q', p') after a stride τ.

Velocity Verlet with k sub-steps of h = τ/k and forces F = −∂V/∂q of a (cheap) potential:

    p ← p + (h/2) F(q);   q ← q + h p/m;   p ← p + (h/2) F(q)        (k times)

It is the default initial guess of the implicit solver (k = 1, the anchor potential V of
the generating function), and, with the anchor potential and k = `fallback_substeps`, the
documented fallback when the solver does not converge.

The learned direct predictor (FlashMD-like; Bigi, Spies, Ceriotti, arXiv 2508.01068) corrects
that Verlet step with the gradients of a learned scalar g_θ(q, p) at the start of the stride:

    (q', p') = Φ^VV_τ(q, p) + τ (∂g_θ/∂p, −∂g_θ/∂q)

g_θ is a `generating.MomentumCorrection` network (E(3)-invariant, exactly even in p), so the
correction is exactly equivariant, and to leading order it has the parity of Verlet's own error
(odd in p for q', even for p'). It is explicit, neither symplectic nor time-reversible: a guess
for the solver, or, alone (`model='direct:MAP'`), the kind of direct prediction the learned
maps are compared with. All arrays float64 in i-PI atomic units (bohr, a.u. momenta and
masses, a.u. time).
"""

from __future__ import annotations

import torch

from ..potentials.base import EnergyModel
from .generating import MomentumCorrection, network_gradients
from .system import System


def velocity_verlet(q, p, masses, tau: float, forces, substeps: int = 1):
    """k = `substeps` velocity-Verlet steps of τ/k; `forces(q) -> (n, 3)` Ha/bohr;
    q (n, 3) bohr, p (n, 3) a.u., masses (n,) a.u., τ a.u. Returns (q', p')."""
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, not {substeps}")
    h = tau / substeps
    inverse_mass = 1.0 / masses[:, None]
    f = forces(q)
    for _ in range(substeps):
        p = p + 0.5 * h * f
        q = q + h * p * inverse_mass
        f = forces(q)
        p = p + 0.5 * h * f
    return q, p


class VerletPredictor:
    """(q', p') ≈ k velocity-Verlet sub-steps of τ/k with `potential` (an EnergyModel)."""

    def __init__(self, potential: EnergyModel, substeps: int = 1):
        if int(substeps) < 1:
            raise ValueError(f"substeps must be >= 1, not {substeps}")
        self.potential = potential
        self.substeps = int(substeps)

    def __call__(self, q: torch.Tensor, p: torch.Tensor, system: System, tau: float):
        return velocity_verlet(
            q, p, system.masses, tau, lambda x: system.forces(self.potential, x), self.substeps
        )


class LearnedPredictor(VerletPredictor):
    """(q', p') ≈ Φ^VV_τ(q, p) + τ (∂g_θ/∂p, −∂g_θ/∂q) at (q, p) (module docstring), with
    `network` g_θ and k = `substeps` Verlet sub-steps of `potential`."""

    def __init__(self, potential: EnergyModel, network: MomentumCorrection, substeps: int = 1):
        super().__init__(potential, substeps)
        self.network = network

    def __call__(self, q: torch.Tensor, p: torch.Tensor, system: System, tau: float):
        q1, p1 = super().__call__(q, p, system, tau)
        gq, gp = network_gradients(self.network, q[None], p[None], [system])
        return q1 + tau * gp[0], p1 - tau * gq[0]
