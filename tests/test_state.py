import numpy as np
import pytest
import torch
from ase.build import molecule

from ipi_mts import units
from ipi_mts.errors import UserError
from ipi_mts.state import State, numbers_from_symbols, read_species


def test_from_wire_converts_and_batches():
    rng = np.random.default_rng(1)
    h = np.stack([np.diag([20.0, 21.0, 22.0]), np.diag([23.0, 24.0, 25.0])])
    q = rng.normal(size=(2, 3, 3))
    state = State.from_wire(h, q, [8, 1, 1])
    assert state.n_structures == 2 and state.n_atoms_per_structure == 3
    assert torch.allclose(state.positions[3:], torch.as_tensor(q[1] * units.ANGSTROM_PER_BOHR))
    assert torch.allclose(state.cell[1], torch.as_tensor(np.diag([23.0, 24.0, 25.0]) * units.ANGSTROM_PER_BOHR))
    assert state.batch.tolist() == [0, 0, 0, 1, 1, 1]
    assert state.numbers.tolist() == [8, 1, 1, 8, 1, 1]
    assert bool(state.pbc.all())


def test_from_ase_matches_atoms():
    atoms = molecule("H2O", vacuum=5.0)
    state = State.from_ase([atoms, atoms])
    assert state.positions.shape == (6, 3) and state.cell.shape == (2, 3, 3)
    assert state.numbers.tolist()[:3] == [8, 1, 1]


def test_species_labels_and_files(tmp_path):
    assert numbers_from_symbols(["O", "H", "Hw", "O1", "Cl"]).tolist() == [8, 1, 1, 8, 17]
    with pytest.raises(UserError):
        numbers_from_symbols(["Qq"])
    path = tmp_path / "w.xyz"
    path.write_text("3\n# CELL(abcABC): 10 10 10 90 90 90 positions{angstrom}\nO 0 0 0\nH 1 0 0\nH 0 1 0\n")
    assert read_species(path).tolist() == [8, 1, 1]
    with pytest.raises(UserError, match="cannot read"):
        read_species(tmp_path / "missing.xyz")
