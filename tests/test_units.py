import ase.units
import numpy as np
from ipi.utils.units import unit_to_internal, unit_to_user

from ipi_mts import units


def test_constants_agree_with_ase_and_ipi():
    assert np.isclose(units.ANGSTROM_PER_BOHR, ase.units.Bohr, rtol=1e-7)
    assert np.isclose(units.EV_PER_HARTREE, ase.units.Hartree, rtol=1e-7)
    assert np.isclose(units.BOHR_PER_ANGSTROM, unit_to_internal("length", "angstrom", 1.0), rtol=1e-15)
    assert np.isclose(units.EV_PER_HARTREE, unit_to_user("energy", "electronvolt", 1.0), rtol=1e-15)
    assert np.isclose(units.FORCE_WIRE_PER_MODEL, unit_to_internal("force", "ev/ang", 1.0), rtol=1e-7)
    assert np.isclose(units.FEMTOSECOND, 1e-15 / ase.units._aut, rtol=1e-6)


def test_wire_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 3))
    for there, back in [
        (units.positions_to_wire, units.positions_from_wire),
        (units.energy_to_wire, units.energy_from_wire),
        (units.forces_to_wire, units.forces_from_wire),
        (units.cell_to_wire, units.cell_from_wire),
    ]:
        assert np.allclose(back(there(x[..., :3, :])), x[..., :3, :], rtol=1e-14, atol=0)


def test_cell_vectors_become_columns_on_the_wire():
    cell = np.array([[10.0, 0.0, 0.0], [2.0, 9.0, 0.0], [1.0, 1.0, 8.0]])  # rows, Å
    h = units.cell_to_wire(cell)
    assert np.allclose(h[:, 1], cell[1] * units.BOHR_PER_ANGSTROM)
    assert np.allclose(h[1, 0], 0.0)  # i-PI's h is upper triangular for this cell
