import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ipi_mts import testing, units
from ipi_mts.errors import UserError
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.potentials.qtip4pf import QTIP4PF, _ReciprocalSum, erfc_as
from ipi_mts.state import State

REFERENCE = Path(__file__).parents[2].parent / "shared" / "data" / "qtip4pf-water216-ipi-f90.npz"
TILT = [[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.1, -0.15, 0.0]]


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE.is_file():
        pytest.fail(f"reference data missing: {REFERENCE}")
    data = dict(np.load(REFERENCE))
    # one batched State of all 10 frames (i-PI's h has the cell vectors as columns)
    data["state"] = State.from_wire(
        np.swapaxes(data["cell_bohr"], 1, 2), data["positions_bohr"], np.tile([8, 1, 1], 216)
    )
    return data


def _wire(out, n_frames):
    energy = units.energy_to_wire(out.energy.detach().numpy())
    forces = units.forces_to_wire(out.forces.detach().numpy()).reshape(n_frames, -1, 3)
    return energy, forces


@pytest.fixture(scope="module")
def evaluated(reference):
    state = reference["state"]
    return {part: _wire(evaluate(QTIP4PF(part), state), 10) for part in ("full", "intra", "inter")}


@pytest.mark.parametrize(
    "part, energy_key, forces_key",
    [
        ("full", "energy_ha", "forces_ha_per_bohr"),
        ("intra", "intra_energy_ha", "intra_forces_ha_per_bohr"),
    ],
)
def test_matches_ipi_fortran_driver(evaluated, reference, part, energy_key, forces_key):
    energy, forces = evaluated[part]
    assert energy.shape == (10,) and forces.shape == (10, 648, 3)
    assert np.abs(energy - reference[energy_key]).max() < 1e-5  # Ha, every frame
    assert np.abs(forces - reference[forces_key]).max() < 1e-5  # Ha/bohr, every component


def test_inter_is_full_minus_intra(evaluated, reference):
    full, intra, inter = evaluated["full"], evaluated["intra"], evaluated["inter"]
    assert np.allclose(inter[0], full[0] - intra[0], rtol=0, atol=1e-9)
    assert np.allclose(inter[1], full[1] - intra[1], rtol=0, atol=1e-9)
    want = reference["energy_ha"] - reference["intra_energy_ha"]
    assert np.abs(inter[0] - want).max() < 1e-5
    assert np.abs(inter[0]).min() > 0.1  # not trivially zero


def test_fortran_erfc_gradient_reproduces_its_forces(reference):
    state = testing.split(reference["state"])[3]
    energy, forces = _wire(evaluate(QTIP4PF("full", erfc_gradient="fortran"), state), 1)
    default_energy, default_forces = _wire(evaluate(QTIP4PF("full"), state), 1)
    assert energy[0] == pytest.approx(default_energy[0], abs=1e-12)
    assert np.abs(forces[0] - reference["forces_ha_per_bohr"][3]).max() < 2e-7
    # the two derivatives differ, but by far less than the match asked of either
    assert 0 < np.abs(forces - default_forces).max() < 2e-6


def test_erfc_polynomial_is_abramowitz_stegun():
    x = torch.linspace(0, 6, 2001, dtype=torch.float64)
    assert float((erfc_as(x) - torch.special.erfc(x)).abs().max()) < 1.5e-7


def test_ewald_parameters_follow_the_fortran_rule(reference):
    model = QTIP4PF()
    cell = reference["state"].cell[:1]
    r_c, alpha, integers, mask = model._ewald_parameters(cell, 648)
    length = float(cell[0, 0, 0])
    assert r_c[0] == pytest.approx(length * min(0.5, 1.2 * 648 ** (-1 / 6)), rel=1e-14)
    assert alpha[0] == pytest.approx(math.pi / r_c[0], rel=1e-14)
    n = integers[0][mask[0]]
    kmax = int(alpha[0] * length)
    assert np.abs(n).max() == kmax
    # half of all n ≠ 0 with |k| = 2π|n|/L < 2πα (one of each ±n)
    grid = np.stack(np.meshgrid(*[np.arange(-kmax, kmax + 1)] * 3, indexing="ij"), -1).reshape(
        -1, 3
    )
    full_count = int(((grid**2).sum(-1) < (alpha[0] * length) ** 2).sum()) - 1
    assert 2 * len(n) == full_count


# --- derivatives on small boxes ------------------------------------------------------------
@pytest.mark.parametrize("part", ["full", "intra", "inter"])
def test_forces_match_finite_differences(part):
    testing.assert_forces_match_finite_differences(
        QTIP4PF(part), testing.water_box(2, seed=3), atol=2e-5
    )


def test_forces_match_finite_differences_triclinic():
    state = testing.water_box(2, tilt=TILT, seed=4)
    testing.assert_forces_match_finite_differences(QTIP4PF("full"), state, atol=2e-5)


def test_hessian_matches_finite_differences_of_forces():
    """Second derivatives by autograd (the configurational temperature's Laplacian needs
    them): columns of the Hessian equal central differences of the forces, and it is
    symmetric."""
    from dataclasses import replace

    state = testing.water_box(2, seed=5)
    model = QTIP4PF("full")
    flat = state.positions.detach().reshape(-1)
    hessian = torch.autograd.functional.hessian(
        lambda x: model.energy(replace(state, positions=x.reshape(-1, 3))).sum(), flat
    ).numpy()
    assert np.allclose(hessian, hessian.T, atol=1e-8)
    h = 1e-4
    for k in (0, 4, 11, 23, 50):
        step = torch.zeros_like(flat)
        step[k] = h
        plus = evaluate(model, replace(state, positions=(flat + step).reshape(-1, 3))).forces
        minus = evaluate(model, replace(state, positions=(flat - step).reshape(-1, 3))).forces
        column = -((plus - minus) / (2 * h)).reshape(-1).numpy()
        assert np.allclose(hessian[:, k], column, rtol=1e-5, atol=1e-5), k


@pytest.mark.parametrize("part", ["full", "intra", "inter"])
def test_virial_matches_finite_strain_triclinic(part):
    state = testing.water_box(2, tilt=TILT, seed=5)
    out = testing.assert_virial_matches_finite_strain(
        QTIP4PF(part, ewald_cutoff=4.5), state, atol=2e-5
    )
    assert float(out.virial.abs().max()) > 1e-2  # not trivially zero


def test_virial_matches_finite_strain_cubic_with_fortran_rule_cutoff():
    state = testing.water_box(2, seed=6)
    length = float(state.cell[0, 0, 0])
    r_c = length * 0.5  # the Fortran rule for 24 atoms
    testing.assert_virial_matches_finite_strain(QTIP4PF("full", ewald_cutoff=r_c), state, atol=2e-5)


def test_triclinic_basis_of_a_cubic_lattice_gives_the_same_result():
    """The same periodic system described by a sheared basis (a2 -> a2 + a1 - a3): Ewald
    in a triclinic cell must give what the cubic cell gives, at the same r_c and α."""
    cubic = testing.water_box(2, seed=13)
    basis = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sheared = State(**{**cubic.__dict__, "cell": basis @ cubic.cell})
    model = QTIP4PF("full", ewald_cutoff=2.9)
    a, b = evaluate(model, cubic), evaluate(model, sheared)
    assert torch.allclose(a.energy, b.energy, rtol=0, atol=1e-9)
    assert torch.allclose(a.forces, b.forces, rtol=0, atol=1e-8)
    assert torch.allclose(a.virial, b.virial, rtol=0, atol=1e-8)


def test_default_virial_holds_ewald_parameters_fixed():
    """With the Fortran rule α follows the cell but is not differentiated: the virial is
    the one at fixed α, equal to fixing r_c at the rule's value."""
    state = testing.water_box(2, tilt=TILT, seed=7)
    cell = state.cell[0].numpy()
    heights = abs(np.linalg.det(cell)) / np.linalg.norm(
        np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=-1
    )
    r_c = heights.min() * min(0.5, 1.2 * 24 ** (-1 / 6))
    rule, fixed = evaluate(QTIP4PF(), state), evaluate(QTIP4PF(ewald_cutoff=r_c), state)
    assert torch.allclose(rule.energy, fixed.energy, rtol=0, atol=1e-10)
    assert torch.allclose(rule.virial, fixed.virial, rtol=0, atol=1e-10)


def test_small_box_equals_replicated_supercell():
    """A 6.2 Å box (LJ cutoff 9 Å and r_c 5 Å both beyond half the box, so several images
    of a pair count) is the 3×3×3 supercell divided by 27; the supercell (18.6 Å) needs
    only minimum images."""
    small = testing.water_box(2, seed=8)
    big = testing.replicate(small, (3, 3, 3))
    model = QTIP4PF("full", ewald_cutoff=5.0)
    one, many = evaluate(model, small), evaluate(model, big)
    assert float(one.energy.detach()) == pytest.approx(
        float(many.energy.detach()) / 27, rel=1e-10, abs=1e-10
    )
    assert torch.allclose(many.forces[:24], one.forces, atol=1e-9)
    assert torch.allclose(many.forces[24 * 13 : 24 * 14], one.forces, atol=1e-9)
    assert torch.allclose(many.virial / 27, one.virial, atol=1e-9)
    # and the LJ part alone is not the minimum-image sum: more than one image is in range
    lj_small = QTIP4PF("inter", ewald_cutoff=5.0)._lennard_jones(small, small.positions[::3][None])
    lj_big = QTIP4PF("inter", ewald_cutoff=5.0)._lennard_jones(big, big.positions[::3][None])
    assert float(lj_small) == pytest.approx(float(lj_big) / 27, rel=1e-12)


def test_batch_matches_single_with_different_cells():
    states = [testing.water_box(2, seed=9), testing.water_box(2, spacing=3.3, tilt=TILT, seed=10)]
    out = testing.assert_batch_matches_single(QTIP4PF("full"), states)
    assert out.energy.shape == (2,)


def test_translation_and_rotation():
    state = testing.water_box(2, tilt=TILT, seed=11)
    testing.assert_translation_invariant(QTIP4PF("full"), state)
    testing.assert_rotation_equivariant(QTIP4PF("full"), state)


def test_wrapped_molecules_give_the_same_result():
    state = testing.water_box(2, seed=12)
    out = evaluate(QTIP4PF("full"), state)
    cell = state.cell[0]
    frac = state.positions @ torch.linalg.inv(cell)
    wrapped = State(**{**state.__dict__, "positions": (frac - torch.floor(frac - 0.45)) @ cell})
    assert not torch.allclose(wrapped.positions, state.positions)  # some molecules were cut
    again = evaluate(QTIP4PF("full"), wrapped)
    assert torch.allclose(again.energy, out.energy, rtol=0, atol=1e-10)
    assert torch.allclose(again.forces, out.forces, rtol=0, atol=1e-9)


def test_reciprocal_sum_backward_and_double_backward():
    gen = torch.Generator().manual_seed(0)
    kvec = torch.randn(2, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    sites = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.rand(2, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    charges = torch.tensor([-1.0, 0.5, 0.5, 0.0], dtype=torch.float64)

    def f(k, s, w):
        return _ReciprocalSum.apply(k, s, charges, w)

    assert torch.autograd.gradcheck(f, (kvec, sites, weight))
    assert torch.autograd.gradgradcheck(f, (kvec, sites, weight))


# --- species and registry ---------------------------------------------------------------------
def test_check_rejects_what_is_not_water():
    model = QTIP4PF()
    model.check([8, 1, 1, 8, 1, 1])
    with pytest.raises(UserError, match="O,H,H") as error:
        model.check([8, 1, 1, 1, 8, 1])
    assert "\n" not in str(error.value) and "atom 3" in str(error.value)
    with pytest.raises(UserError, match="multiple of 3"):
        model.check([8, 1, 1, 8])
    state = testing.water_box(2)
    state.numbers[:3] = torch.tensor([1, 8, 1])
    with pytest.raises(UserError):
        model.energy(state)


def test_default_numbers():
    assert QTIP4PF().default_numbers(6).tolist() == [8, 1, 1, 8, 1, 1]
    with pytest.raises(UserError, match="multiple of 3"):
        QTIP4PF().default_numbers(7)


def test_registry_names():
    for name, part in [("qtip4pf", "full"), ("qtip4pf-intra", "intra"), ("qtip4pf-inter", "inter")]:
        model = load_potential(name)
        assert isinstance(model, QTIP4PF) and model.part == part
    assert load_potential("qtip4pf", ewald_cutoff="6.5").ewald_cutoff == 6.5
    with pytest.raises(UserError):
        load_potential("qtip4pf", no_such_parameter=1)
    with pytest.raises(UserError):
        QTIP4PF(part="bonds")
