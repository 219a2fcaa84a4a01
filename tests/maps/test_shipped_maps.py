"""The shipped learned maps (`al-map-16fs`, `al-map-32fs` of EMT aluminium, `water-map-2fs`
of q-TIP4P/F water): each loads by name, says what it is, and its step converges and is
time-reversible on a state it was not trained on."""

import numpy as np
import pytest
from ase.build import bulk
from ase.units import kB

from ipi_mts import units
from ipi_mts.data.trajectories import MOMENTUM_AU_PER_ASE
from ipi_mts.potentials.model_file import load_map


def _state(seed=11):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)  # 32 atoms: not the 108 of the data
    rng = np.random.default_rng(seed)
    atoms.positions += 0.05 * rng.standard_normal(atoms.positions.shape)
    atoms.set_momenta(np.sqrt(atoms.get_masses()[:, None] * kB * 600) * rng.standard_normal((len(atoms), 3)))
    return atoms


def _step(m, atoms, q, p):
    masses = atoms.get_masses() * units.AMU
    cell = units.cell_to_wire(atoms.cell.array)
    return m.step(q, p, masses, cell, atoms.numbers)


@pytest.mark.parametrize("name, stride", [("al-map-16fs", 16.0), ("al-map-32fs", 32.0)])
def test_al_maps_load_and_are_reversible(name, stride):
    m = load_map(name)
    assert list(m.species) == [13] and m.metadata["stride_fs"] == stride and m.anchor == "ase:EMT"
    atoms = _state()
    q = units.positions_to_wire(atoms.positions)
    p = atoms.get_momenta() * MOMENTUM_AU_PER_ASE
    q1, p1, info = _step(m, atoms, q, p)
    assert info["converged"] and not info["fallback"]
    assert np.abs(q1 - q).max() > 0.05  # it moved (bohr)
    q0, p0, info = _step(m, atoms, q1, -p1)  # flip the momenta and step again: back to the start
    assert info["converged"]
    assert np.abs(q0 - q).max() < 1e-6 and np.abs(p0 + p).max() < 1e-6 * np.abs(p).max()


def test_water_map_2fs_loads_and_is_reversible():
    """On water-64 from inputs/ (an equilibrated q-TIP4P/F structure, not a training frame)
    with fresh 300 K momenta: the 2 fs map converges, moves, and steps back to the start."""
    from pathlib import Path

    from ase import Atoms

    from ipi_mts.data.generate import read_ipi_trajectory

    m = load_map("water-map-2fs")
    assert sorted(m.species) == [1, 8] and m.metadata["stride_fs"] == 2.0 and m.anchor == "qtip4pf"
    path = Path(__file__).resolve().parents[2] / "inputs" / "water-64" / "init.xyz"
    symbols, positions, cell = next(read_ipi_trajectory(path))
    atoms = Atoms(symbols, positions=positions, cell=cell, pbc=True)
    rng = np.random.default_rng(3)
    atoms.set_momenta(np.sqrt(atoms.get_masses()[:, None] * kB * 300) * rng.standard_normal((len(atoms), 3)))
    q = units.positions_to_wire(atoms.positions)
    p = atoms.get_momenta() * MOMENTUM_AU_PER_ASE
    q1, p1, info = _step(m, atoms, q, p)
    assert info["converged"] and not info["fallback"]
    assert np.abs(q1 - q).max() > 0.02  # bohr
    q0, p0, info = _step(m, atoms, q1, -p1)
    assert info["converged"]
    assert np.abs(q0 - q).max() < 1e-6 and np.abs(p0 + p).max() < 1e-6 * np.abs(p).max()
