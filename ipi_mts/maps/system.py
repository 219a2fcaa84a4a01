"""What a map step needs besides (q, p): masses, species and cell, in i-PI atomic units.

Maps work in i-PI's units (positions in bohr, momenta in atomic units, masses in electron
masses, time in atomic time units, energies in Hartree); the energy models they call work
in eV and Å. `System` converts at that edge, through `ipi_mts.units` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import units
from ..potentials.base import EnergyModel, evaluate
from ..state import State


@dataclass
class System:
    masses: torch.Tensor  # (n_atoms,) float64, electron masses (i-PI's atomic unit of mass)
    numbers: torch.Tensor  # (n_atoms,) int64 atomic numbers
    cell: torch.Tensor  # (1, 3, 3) float64 Å, cell vectors as rows (model units)
    pbc: torch.Tensor  # (1, 3) bool; False along a zero cell vector

    @classmethod
    def from_ipi(cls, masses, cell_h, numbers) -> "System":
        """`masses` (n,) a.u.; `cell_h` i-PI's h (3, 3) bohr, vectors as columns (all zero:
        no periodicity); `numbers` (n,) atomic numbers."""
        cell = units.cell_from_wire(np.asarray(as_numpy(cell_h), dtype=np.float64).reshape(1, 3, 3))
        return cls(
            masses=torch.as_tensor(as_numpy(masses), dtype=torch.float64).reshape(-1),
            numbers=torch.as_tensor(as_numpy(numbers), dtype=torch.long).reshape(-1),
            cell=torch.as_tensor(cell, dtype=torch.float64),
            pbc=torch.as_tensor(np.abs(cell).sum(axis=-1) > 0),
        )

    @property
    def n_atoms(self) -> int:
        return self.masses.shape[0]

    def state(self, q: torch.Tensor) -> State:
        """The model's State at positions q (n, 3) bohr (gradients flow through q)."""
        return State(
            positions=units.positions_from_wire(q),
            numbers=self.numbers,
            cell=self.cell,
            pbc=self.pbc,
            batch=torch.zeros(self.n_atoms, dtype=torch.long),
        )

    def forces(self, model: EnergyModel, q: torch.Tensor) -> torch.Tensor:
        """F = −∂V/∂q (n, 3) Ha/bohr of `model` at q (n, 3) bohr, by the shared wrapper."""
        return units.forces_to_wire(evaluate(model, self.state(q)).forces.detach())

    def potential_energy(self, model: EnergyModel, q: torch.Tensor) -> torch.Tensor:
        """V(q) Hartree (a 0-d tensor), differentiable in q (bohr)."""
        return units.energy_to_wire(model.energy(self.state(q)).sum())


def as_numpy(x):
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
