"""`ase:NAME` models: ASE's EMT on a small fcc Al box, served in i-PI units, against
ASE's EMT called directly (converted with ase.units, independently of ipi_mts.units; the
two sets of constants agree to 3e-7, i-PI's eV being rounded to 8 digits)."""

import numpy as np
import pytest
import torch
from ase import units as ase_units
from ase.build import bulk
from ase.calculators.emt import EMT

from ipi_mts import testing, units
from ipi_mts.errors import UserError
from ipi_mts.potentials import load_potential
from ipi_mts.server.evaluator import WireEvaluator
from ipi_mts.state import State


def aluminium(shear=0.0, seed=0):
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2))
    cell = atoms.cell.array.copy()
    cell[1, 0] += shear * cell[1, 1]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(stdev=0.05, seed=seed)
    return atoms


@pytest.mark.parametrize("shear", [0.0, 0.12])
def test_emt_in_ipi_units_matches_ase(shear):
    atoms = aluminium(shear)
    evaluator = WireEvaluator.from_name("ase:EMT", numbers=atoms.numbers)
    # in: what i-PI sends (its own bohr); out: compared through ase.units
    h = units.cell_to_wire(atoms.cell.array)[None]
    energy, forces, virial, _ = evaluator(h, units.positions_to_wire(atoms.positions)[None])
    bohr = ase_units.Bohr
    atoms.calc = EMT()
    want_energy = atoms.get_potential_energy() / ase_units.Hartree
    want_forces = atoms.get_forces() / (ase_units.Hartree / bohr)
    want_virial = -atoms.get_volume() * atoms.get_stress(voigt=False) / ase_units.Hartree
    assert abs(want_energy) > 1e-3 and np.abs(want_forces).max() > 1e-3  # not trivial
    np.testing.assert_allclose(energy[0], want_energy, rtol=1e-6)
    np.testing.assert_allclose(forces[0], want_forces, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(virial[0], want_virial, rtol=1e-6, atol=1e-9)


def test_emt_gradients_through_the_test_kit():
    """Forces and virial (the cell gradient built from ASE's stress) against finite
    differences of the energy, in a sheared cell; two structures in one batch."""
    model = load_potential("ase:emt")
    states = [State.from_ase([aluminium(shear, seed)]) for shear, seed in ((0.1, 1), (0.0, 2))]
    testing.assert_forces_match_finite_differences(model, states[0], delta=1e-5, atol=1e-6)
    testing.assert_virial_matches_finite_strain(model, states[0], atol=1e-5)
    testing.assert_batch_matches_single(model, states)


def test_ase_models_refuse_clearly():
    with pytest.raises(UserError, match="unknown ASE calculator 'nonsense'"):
        load_potential("ase:nonsense")
    with pytest.raises(UserError, match="has no 'fast' component"):
        load_potential("ase:EMT", component="fast")
    lj = load_potential("ase:LJ", sigma="2.5", epsilon="0.1")  # as i-PI's <parameters> send them
    assert (lj.calculator.parameters.sigma, lj.calculator.parameters.epsilon) == (2.5, 0.1)
    model = load_potential("ase:EMT")
    with pytest.raises(UserError, match="needs the atom species"):
        model.check(torch.zeros(4, dtype=torch.long))
    assert model.default_numbers(4) is None
