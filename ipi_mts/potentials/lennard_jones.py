"""Lennard-Jones pair potential over all pairs of atoms, whatever their species.

    E = Σ_{pairs i<j, images, r < r_c} u(r) − [shift] u(r_c),   u(r) = 4ε [(σ/r)¹² − (σ/r)⁶]

in Å and eV (defaults: argon, σ = 3.405 Å, ε = 0.0104 eV, r_c = 8.5 Å). Plainly truncated
at r_c unless `shift` (then each pair's energy is zero at r_c; forces are the same either
way). Pairs come from `ipi_mts.neighbors`: every periodic image within r_c counts, so a
box smaller than 2 r_c is exact (it stands for its infinite periodic crystal). Structures
without periodicity are clusters.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ..neighbors import state_pairs
from ..state import State
from .base import EnergyModel


class LennardJones(EnergyModel):
    """12-6 Lennard-Jones: `sigma` (Å), `epsilon` (eV), `cutoff` (Å), `shift` (bool)."""

    def __init__(
        self,
        sigma: float = 3.405,
        epsilon: float = 0.0104,
        cutoff: float = 8.5,
        shift: bool = False,
    ):
        super().__init__()
        try:
            self.sigma, self.epsilon, self.cutoff = float(sigma), float(epsilon), float(cutoff)
        except (TypeError, ValueError):
            raise UserError(
                f"LJ sigma, epsilon and cutoff must be numbers, got {sigma!r}, {epsilon!r}, {cutoff!r}"
            ) from None
        if not (self.sigma > 0 and self.cutoff > 0):
            raise UserError(
                f"LJ sigma and cutoff must be positive lengths in Å, got {sigma!r}, {cutoff!r}"
            )
        if isinstance(shift, str):
            if shift.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise UserError(f"LJ shift must be true or false, not {shift!r}")
            shift = shift.strip().lower() in ("true", "1", "yes")
        self.shift = bool(shift)
        sr6 = (self.sigma / self.cutoff) ** 6
        self.energy_at_cutoff = 4.0 * self.epsilon * sr6 * (sr6 - 1.0) if self.shift else 0.0

    def extra_repr(self) -> str:
        return (
            f"sigma={self.sigma}, epsilon={self.epsilon}, cutoff={self.cutoff}, shift={self.shift}"
        )

    def default_numbers(self, n_atoms: int):
        return np.zeros(n_atoms, dtype=np.int64)

    def energy(self, state: State) -> torch.Tensor:
        i, _, vectors = state_pairs(state, self.cutoff)
        r2 = (vectors * vectors).sum(-1)
        keep = r2 < self.cutoff**2
        sr6 = (self.sigma**2 / r2[keep]) ** 3
        pair = 4.0 * self.epsilon * sr6 * (sr6 - 1.0) - self.energy_at_cutoff
        energy = torch.zeros(
            state.n_structures, dtype=state.positions.dtype, device=state.positions.device
        )
        return energy.index_add(0, state.batch.index_select(0, i[keep]), pair)
