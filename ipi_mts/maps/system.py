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
from ..errors import UserError
from ..neighbors import neighbor_pairs
from ..potentials.base import EnergyModel, evaluate
from ..state import State

MAX_MOLECULE_ATOMS = 8  # the molecule-block Newton solver's largest block (48 unknowns)


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

    def molecules(self, q: torch.Tensor, max_atoms: int = MAX_MOLECULE_ATOMS) -> torch.Tensor:
        """(n_molecules, k) atom indices of the molecules at positions q (n, 3) bohr, each row
        padded with −1 to the largest molecule's k atoms: the connected components of the
        covalent bonds, |r_ij| < 1.2 (r_i + r_j) with ASE's covalent radii. A component of more
        than `max_atoms` atoms (a metal, a polymer) is refused (UserError)."""
        from ase.data import covalent_radii
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        radii = covalent_radii[self.numbers.numpy()]
        state = self.state(q.detach())
        i, j, vectors = neighbor_pairs(state.positions, state.cell, state.pbc, state.batch, 1.2 * 2 * radii.max())
        i, j = i.numpy(), j.numpy()
        bonded = torch.linalg.vector_norm(vectors, dim=-1).numpy() < 1.2 * (radii[i] + radii[j])
        graph = coo_matrix((np.ones(bonded.sum()), (i[bonded], j[bonded])), shape=(self.n_atoms,) * 2)
        _, label = connected_components(graph, directed=False)
        sizes = np.bincount(label)
        if sizes.max() > max_atoms:
            raise UserError(
                f"the molecule-block Newton solver needs molecules of at most {max_atoms} atoms; "
                f"covalent bonds join {sizes.max()} atoms here (a metal or a large molecule): "
                "set the map's solver to blocks: atoms, or newton: false"
            )
        blocks = np.full((len(sizes), sizes.max()), -1, dtype=np.int64)
        order = np.argsort(label, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        blocks[label[order], np.arange(self.n_atoms) - starts[label[order]]] = order
        return torch.as_tensor(blocks)

    def potential_energy(self, model: EnergyModel, q: torch.Tensor) -> torch.Tensor:
        """V(q) Hartree (a 0-d tensor), differentiable in q (bohr)."""
        return units.energy_to_wire(model.energy(self.state(q)).sum())

    def hamiltonian(self, model: EnergyModel, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """H(q, p) = Σ p²/2m + V(q) Hartree (a 0-d tensor), differentiable in q and p."""
        return 0.5 * (p * p / self.masses[:, None]).sum() + self.potential_energy(model, q)


def as_numpy(x):
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
