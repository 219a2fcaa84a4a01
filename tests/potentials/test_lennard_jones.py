import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.stress import voigt_6_to_full_3x3_stress

from ipi_mts import testing
from ipi_mts.errors import UserError
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.potentials.lennard_jones import LennardJones
from ipi_mts.state import State

FCC = 0.5 * np.array([[0, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]])
TILT = [[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [-0.1, 0.2, 0.0]]


def argon(repeat=(1, 1, 1), a=5.26, tilt=None, jitter=0.15, seed=0):
    """fcc argon (4 atoms per cubic cell of `a` Å, below twice the 8.5 Å cutoff), jittered;
    `tilt` shears the cell (fractional coordinates kept)."""
    cell = a * (np.eye(3) + (0 if tilt is None else np.asarray(tilt)))
    return testing.lattice_state(cell, FCC, repeat=repeat, jitter=jitter, number=18, seed=seed)


def test_matches_ase_with_shift():
    """ASE's LJ (shifted to zero at the cutoff; its neighbour list finds all images)."""
    state = argon(tilt=TILT, seed=1)
    atoms = Atoms(
        numbers=[18] * 4, positions=state.positions.numpy(), cell=state.cell[0].numpy(), pbc=True
    )
    atoms.calc = AseLennardJones(sigma=3.405, epsilon=0.0104, rc=8.5)
    out = evaluate(LennardJones(shift=True), state)
    assert float(out.energy[0].detach()) == pytest.approx(
        atoms.get_potential_energy(), rel=1e-10, abs=1e-12
    )
    assert np.allclose(out.forces.numpy(), atoms.get_forces(), rtol=0, atol=1e-10)
    virial = -atoms.get_volume() * voigt_6_to_full_3x3_stress(atoms.get_stress())
    assert np.allclose(out.virial[0].detach().numpy(), virial, rtol=0, atol=1e-10)
    assert np.abs(out.forces.numpy()).max() > 1e-3


def test_dimer_energy_and_cutoff():
    def dimer(r):
        return State(
            positions=torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=torch.float64),
            numbers=torch.zeros(2, dtype=torch.long),
            cell=torch.zeros(1, 3, 3, dtype=torch.float64),
            pbc=torch.zeros(1, 3, dtype=torch.bool),
            batch=torch.zeros(2, dtype=torch.long),
        )

    sigma, epsilon = 3.405, 0.0104
    r_min = 2 ** (1 / 6) * sigma
    assert float(LennardJones().energy(dimer(r_min))) == pytest.approx(-epsilon, rel=1e-12)
    assert float(LennardJones().energy(dimer(sigma))) == pytest.approx(0.0, abs=1e-15)
    assert float(LennardJones().energy(dimer(8.6))) == 0.0
    tail = 4 * epsilon * ((sigma / 8.5) ** 12 - (sigma / 8.5) ** 6)
    shifted = float(LennardJones(shift=True).energy(dimer(r_min)))
    assert shifted == pytest.approx(-epsilon - tail, rel=1e-12)
    forces = evaluate(LennardJones(), dimer(3.5)).forces
    assert float(forces[0, 0]) < 0 < float(forces[1, 0])  # repulsive inside r_min


def test_forces_match_finite_differences():
    testing.assert_forces_match_finite_differences(LennardJones(), argon(seed=2), atol=1e-7)
    testing.assert_forces_match_finite_differences(
        LennardJones(shift=True), argon(tilt=TILT, seed=3), atol=1e-7
    )


@pytest.mark.parametrize("tilt", [None, TILT])
def test_virial_matches_finite_strain(tilt):
    out = testing.assert_virial_matches_finite_strain(
        LennardJones(), argon(tilt=tilt, seed=4), atol=1e-7
    )
    assert float(out.virial.abs().max()) > 1e-3


def test_small_box_equals_replicated_supercell():
    small = argon(seed=5)  # 5.26 Å box, 8.5 Å cutoff: many images of each pair
    big = testing.replicate(small, (4, 4, 4))  # 21 Å: minimum image would do
    one, many = evaluate(LennardJones(), small), evaluate(LennardJones(), big)
    assert float(one.energy.detach()) == pytest.approx(float(many.energy.detach()) / 64, rel=1e-11)
    assert torch.allclose(many.forces[:4], one.forces, atol=1e-11)
    assert torch.allclose(many.virial / 64, one.virial, atol=1e-10)


def test_batch_matches_single():
    states = [argon(seed=6), argon(tilt=TILT, seed=7), argon(a=5.4, seed=8)]
    out = testing.assert_batch_matches_single(LennardJones(), states)
    assert out.energy.shape == (3,) and bool((out.energy < 0).all())


def test_translation_and_rotation():
    state = argon(tilt=TILT, seed=9)
    testing.assert_translation_invariant(LennardJones(), state)
    testing.assert_rotation_equivariant(LennardJones(), state)


def test_species_agnostic_and_registry():
    model = load_potential("lj", sigma="3.0", epsilon="0.01", cutoff="7", shift="true")
    assert isinstance(model, LennardJones)
    assert (model.sigma, model.epsilon, model.cutoff, model.shift) == (3.0, 0.01, 7.0, True)
    assert model.default_numbers(5).tolist() == [0] * 5
    model.check([1, 8, 18])  # any species
    with pytest.raises(UserError):
        load_potential("lj", shift="maybe")
    with pytest.raises(UserError):
        LennardJones(cutoff=-1.0)
