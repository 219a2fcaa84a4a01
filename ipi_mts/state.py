"""The one small state container that every model and integrator takes.

A `State` holds one or more structures concatenated along the atom axis, as in nequip's
data keys; every field states its shape and unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from . import units
from .errors import UserError

if TYPE_CHECKING:
    from .neighbors import PairCache


@dataclass
class State:
    positions: torch.Tensor  # (n_atoms, 3) Å, all structures concatenated
    numbers: torch.Tensor  # (n_atoms,) int64 atomic numbers (0 where unknown)
    cell: torch.Tensor  # (n_structures, 3, 3) Å, cell vectors as rows
    pbc: torch.Tensor  # (n_structures, 3) bool
    batch: torch.Tensor  # (n_atoms,) int64 index of each atom's structure
    # neighbour pairs kept between evaluations of the same system (a force driver's), or None
    pairs: PairCache | None = None

    @property
    def n_structures(self) -> int:
        return self.cell.shape[0]

    @property
    def n_atoms_per_structure(self) -> int:
        """The common atom count; raises if the structures differ in size."""
        counts = torch.bincount(self.batch, minlength=self.n_structures)
        if not bool((counts == counts[0]).all()):
            raise ValueError("structures of different sizes in one State")
        return int(counts[0])

    @classmethod
    def from_wire(cls, cells_h, positions, numbers, dtype=torch.float64, device="cpu"):
        """Structures as i-PI sends them: cells h (B, 3, 3) bohr with vectors as columns,
        positions (B, N, 3) bohr; `numbers` (N,) atomic numbers shared by all B."""
        positions = np.asarray(positions, dtype=np.float64)
        n_structures, n_atoms = positions.shape[:2]
        cell = units.cell_from_wire(np.asarray(cells_h, dtype=np.float64))
        pbc = np.abs(cell).sum(axis=-1) > 0
        return cls(
            positions=torch.as_tensor(
                units.positions_from_wire(positions).reshape(-1, 3), dtype=dtype, device=device
            ),
            numbers=torch.as_tensor(np.tile(numbers, n_structures), dtype=torch.long, device=device),
            cell=torch.as_tensor(cell, dtype=dtype, device=device),
            pbc=torch.as_tensor(pbc, device=device),
            batch=torch.arange(n_structures, device=device).repeat_interleave(n_atoms),
        )

    @classmethod
    def from_ase(cls, atoms_list, dtype=torch.float64, device="cpu"):
        """Structures from ASE Atoms (Å)."""
        atoms_list = list(atoms_list)
        return cls(
            positions=torch.as_tensor(
                np.concatenate([a.positions for a in atoms_list]), dtype=dtype, device=device
            ),
            numbers=torch.as_tensor(
                np.concatenate([a.numbers for a in atoms_list]), dtype=torch.long, device=device
            ),
            cell=torch.as_tensor(
                np.stack([a.cell.array for a in atoms_list]), dtype=dtype, device=device
            ),
            pbc=torch.as_tensor(np.stack([a.pbc for a in atoms_list]), device=device),
            batch=torch.cat(
                [torch.full((len(a),), i, dtype=torch.long) for i, a in enumerate(atoms_list)]
            ).to(device),
        )


def numbers_from_symbols(symbols) -> np.ndarray:
    """Atomic numbers of element symbols; i-PI labels such as 'O1' or 'Hw' are cut to the
    element. Unknown labels give a UserError."""
    out = []
    for s in symbols:
        label = str(s).strip()
        for candidate in (label, label[:2].capitalize(), label[:1].upper()):
            if candidate in atomic_numbers and candidate != "X":
                out.append(atomic_numbers[candidate])
                break
        else:
            raise UserError(f"cannot tell the element of atom label {label!r}")
    return np.asarray(out, dtype=np.int64)


def read_species(path) -> np.ndarray:
    """Atomic numbers from a structure file: xyz/extxyz (i-PI's comment lines included),
    or anything ASE reads."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise UserError(f"cannot read species template {path}: {e.strerror}") from None
    try:
        n = int(lines[0].split()[0])
        return numbers_from_symbols(line.split()[0] for line in lines[2 : 2 + n])
    except (ValueError, IndexError):
        pass
    try:
        import ase.io

        return ase.io.read(path).numbers.astype(np.int64)
    except Exception as e:  # ASE raises many types for unreadable files
        raise UserError(f"cannot read species from {path}: {e}") from None


def symbols(numbers) -> list[str]:
    return [chemical_symbols[int(z)] for z in numbers]
