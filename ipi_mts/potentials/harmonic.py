"""Harmonic trap for every atom about the origin, like i-PI's `harmonic` driver but in eV/Å:

    E = ½ k Σ_i |r_i|²            (isotropic), or   E = ½ Σ_i (k x_i² + k2 y_i² + k3 z_i²)

with k (and k2, k3 when both are given) in eV/Å². Positions are taken as they are (not
wrapped into the cell). Unlike i-PI's Python driver, which returns a zero virial, the
virial here is −∂E/∂ε = Σ_i f_i ⊗ r_i like every model's.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ..state import State
from .base import EnergyModel


class Harmonic(EnergyModel):
    """E = ½ Σ k_a r_a² per atom; `k` (eV/Å²), optional `k2`, `k3` for y and z."""

    def __init__(self, k: float = 1.0, k2: float | None = None, k3: float | None = None):
        super().__init__()
        if (k2 is None) != (k3 is None):
            raise UserError("harmonic: give both k2 and k3 (anisotropic) or neither (isotropic)")
        try:
            self.k = (float(k),) * 3 if k2 is None else (float(k), float(k2), float(k3))
        except (TypeError, ValueError):
            raise UserError(
                f"harmonic spring constants must be numbers in eV/Å², got {k!r}, {k2!r}, {k3!r}"
            ) from None

    def extra_repr(self) -> str:
        return f"k={self.k}"

    def default_numbers(self, n_atoms: int):
        return np.zeros(n_atoms, dtype=np.int64)

    def energy(self, state: State) -> torch.Tensor:
        k = torch.tensor(self.k, dtype=state.positions.dtype, device=state.positions.device)
        per_atom = 0.5 * (k * state.positions * state.positions).sum(-1)
        energy = torch.zeros(
            state.n_structures, dtype=state.positions.dtype, device=state.positions.device
        )
        return energy.index_add(0, state.batch, per_atom)
