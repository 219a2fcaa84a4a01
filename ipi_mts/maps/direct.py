"""The direct predictor: a cheap guess of (q', p') after a stride τ, explicitly.

Velocity Verlet with k sub-steps of h = τ/k and forces F = −∂V/∂q of a (cheap) potential:

    p ← p + (h/2) F(q);   q ← q + h p/m;   p ← p + (h/2) F(q)        (k times)

It is the default initial guess of the implicit solver (k = 1, the anchor potential V of
the generating function), and, with the anchor potential and k = `fallback_substeps`, the
documented fallback when the solver does not converge. Nothing is learned here: a learned
direct predictor (FlashMD-like) would be a drop-in replacement with the same call.
All arrays float64 in i-PI atomic units (bohr, a.u. momenta and masses, a.u. time).
"""

from __future__ import annotations

import torch

from ..potentials.base import EnergyModel
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
