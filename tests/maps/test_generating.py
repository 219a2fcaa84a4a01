"""The generating function S and its learned correction H_θ: evenness in p̄, E(3) and
permutation invariance, gradients consistent with the value, the harmonic limit."""

import math

import pytest
import torch
from e3nn import o3

from ipi_mts import units
from ipi_mts.maps import GeneratingFunction, System, harmonic_action_factor
from ipi_mts.potentials import load_potential

from map_helpers import correction, random_orthogonal, water


@pytest.fixture(scope="module")
def setup():
    q, p, masses, h, numbers = water(2)
    return q, p, System.from_ipi(masses, h, numbers), correction(), h


def correction_value(model, q, p, system):
    u = model.momentum_features(p, system.masses)
    return float(model.energy_pm(system.state(q), u).sum().detach())


def test_correction_is_exactly_even_in_momenta(setup):
    q, p, system, model, _ = setup
    plus, minus = correction_value(model, q, p, system), correction_value(model, q, -p, system)
    assert plus == pytest.approx(minus, rel=1e-14, abs=0)
    # the network itself is not even (so evenness comes from the symmetrisation) and H_θ
    # does depend on the momenta (so the check above is not vacuous)
    u = model.momentum_features(p, system.masses)
    state = system.state(q)
    raw = []
    for sign in (1.0, -1.0):
        model.embedding.vectors = sign * o3.spherical_harmonics("1o", u, False, "component") / math.sqrt(3)
        raw.append(float(model.energy(state).detach()))
    model.embedding.vectors = None
    assert abs(raw[0] - raw[1]) > 1e-6 * abs(raw[0])
    assert abs(correction_value(model, q, 1.5 * p, system) - plus) > 1e-6 * abs(plus)


def test_correction_is_invariant_under_e3_and_permutations(setup):
    q, p, system, model, h = setup
    ref = correction_value(model, q, p, system)
    for improper in (False, True):
        r = random_orthogonal(3, improper)
        turned = System.from_ipi(system.masses, r @ h, system.numbers)
        assert correction_value(model, q @ r.T, p @ r.T, turned) == pytest.approx(ref, rel=1e-11)
    shift = torch.tensor([0.7, -1.9, 3.1], dtype=torch.float64)
    assert correction_value(model, q + shift, p, system) == pytest.approx(ref, rel=1e-11)
    order = torch.randperm(q.shape[0], generator=torch.Generator().manual_seed(1))
    permuted = System.from_ipi(system.masses[order], h, system.numbers[order])
    assert correction_value(model, q[order], p[order], permuted) == pytest.approx(ref, rel=1e-11)


def test_gradients_are_those_of_the_value(setup):
    """∂S/∂q̄ and ∂S/∂p̄ (potential from the shared wrapper, correction by autograd,
    different unit conversions) against central differences of S itself."""
    q, p, system, model, _ = setup
    generating = GeneratingFunction(load_potential("qtip4pf"), 1.0, model)
    dq, dp = generating.gradients(q, p, system)
    dx, dpx = 1e-5, 1e-3  # bohr, a.u. momentum
    for atom, axis in [(0, 0), (1, 2), (5, 1)]:
        for grad, step, which in ((dq, dx, "q"), (dp, dpx, "p")):
            values = []
            for sign in (1, -1):
                qq, pp = q.clone(), p.clone()
                (qq if which == "q" else pp)[atom, axis] += sign * step
                values.append(float(generating.value(qq, pp, system).detach()))
            numeric = (values[0] - values[1]) / (2 * step)
            assert float(grad[atom, axis]) == pytest.approx(numeric, rel=1e-6, abs=1e-10 * generating.tau)


def test_harmonic_action_factor_diverges_at_half_a_period():
    assert harmonic_action_factor(0.0) == 1.0
    assert harmonic_action_factor(1e-4) == pytest.approx(1.0, abs=1e-8)
    assert harmonic_action_factor(math.pi - 1e-3) > 1e3
    for bad in (math.pi, 4.0):
        with pytest.raises(ValueError, match="no midpoint generating function"):
            harmonic_action_factor(bad)


def test_timestep_is_in_femtoseconds():
    generating = GeneratingFunction(load_potential("harmonic"), 2.0)
    assert generating.tau == pytest.approx(2.0 * units.FEMTOSECOND)
    assert generating.tau == pytest.approx(82.68, rel=1e-3)  # a.u. of time in 2 fs
    with pytest.raises(ValueError):
        GeneratingFunction(load_potential("harmonic"), 0.0)
