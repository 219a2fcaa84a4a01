"""The closed form of a frozen one-layer model (and with bonded terms, a resplit pair's fast
component) against e3nn's modules and autograd."""

import copy
from dataclasses import replace

import pytest
import torch

from ipi_mts import testing
from ipi_mts.potentials import closed_form, evaluate, forces_and_laplacian
from ipi_mts.potentials.bonded import BondedConfig, BondedTerms

from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential
from ipi_mts.potentials.pair import Shifted

FAST = dict(cutoff=2.0, num_features=8, lmax=1, num_layers=1, num_basis=6, radial_hidden=16)


def make(seed=0, **overrides):
    """A small fast model of water (float64), or another architecture by `overrides`."""
    config = EquivariantConfig(species=(1, 8), dtype="float64", avg_num_neighbors=4.0, **(FAST | overrides))
    return EquivariantPotential(config, seed=seed)


def box(seed=0, tilt=None):
    """8 waters in a 6.2 Å periodic box."""
    return testing.water_box(2, spacing=3.1, tilt=tilt, jitter=0.08, seed=seed)


def cluster(seed=0):
    """Three waters in vacuum."""
    state = testing.water_box(2, jitter=0.08, seed=seed)
    return testing.State(
        positions=state.positions[:9],
        numbers=state.numbers[:9],
        cell=torch.zeros(1, 3, 3, dtype=torch.float64),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        batch=torch.zeros(9, dtype=torch.long),
    )


def frozen_copy(model):
    return copy.deepcopy(model).requires_grad_(False)


@pytest.mark.parametrize("radial_layers", [0, 1, 2])
def test_frozen_one_layer_model_matches_autograd(radial_layers):
    """Energy, forces and virial to round-off in float64, periodic (tilted, two structures
    in one batch) and in vacuum; and the closed form is what ran."""
    model = make(seed=3, radial_layers=radial_layers)
    frozen = frozen_copy(model)
    periodic = box(seed=1, tilt=[[0, 0, 0], [0.15, 0, 0], [-0.1, 0.2, 0]])
    two = testing.concatenate([periodic, box(seed=2)])
    for state in (periodic, two, cluster(seed=4)):
        reference, closed = evaluate(model, state), evaluate(frozen, state)
        assert frozen.has_edge_gradient and not model.has_edge_gradient
        torch.testing.assert_close(closed.energy, reference.energy, rtol=1e-13, atol=1e-12)
        torch.testing.assert_close(closed.forces, reference.forces, rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(closed.virial, reference.virial, rtol=1e-11, atol=1e-12)
        assert float(reference.forces.abs().max()) > 1e-2
        # the energy itself, differentiated by autograd (as the learned maps do): the same forces
        positions = state.positions.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(frozen.energy(replace(state, positions=positions)).sum(), positions)
        torch.testing.assert_close(-grad, reference.forces, rtol=1e-11, atol=1e-12)


def test_resplit_fast_component_takes_the_edge_gradient():
    """A frozen one-layer model plus bonded terms (`Shifted`, the fast component of a resplit
    pair) gives forces and virial without autograd, equal to autograd's, with either sign."""
    terms = BondedTerms(BondedConfig(species=[1, 8], bonds=[{"species": [8, 1], "r0": 0.96}],
                                     angles=[{"species": [1, 8, 1], "r0": 0.96, "u0": -0.25}]))
    terms.set_coefficients(torch.linspace(-2.0, 3.0, terms.n_features, dtype=torch.float64))
    periodic = box(seed=11, tilt=[[0, 0, 0], [0.1, 0, 0], [0.05, -0.2, 0]])
    for sign in (1.0, -1.0):
        shifted = Shifted(frozen_copy(make(seed=10)), terms, sign)
        assert shifted.has_edge_gradient
        for state in (periodic, testing.concatenate([periodic, box(seed=12)])):
            closed, through = evaluate(shifted, state), evaluate(shifted, state, create_graph=True)
            torch.testing.assert_close(closed.energy, through.energy.detach(), rtol=1e-13, atol=1e-12)
            torch.testing.assert_close(closed.forces, through.forces.detach(), rtol=1e-11, atol=1e-11)
            torch.testing.assert_close(closed.virial, through.virial.detach(), rtol=1e-11, atol=1e-11)
    assert not Shifted(make(seed=10), terms, 1.0).has_edge_gradient  # it trains: autograd


def test_frozen_model_forces_match_finite_differences():
    testing.assert_forces_match_finite_differences(
        frozen_copy(make(seed=5)), box(seed=3), delta=1e-5, atol=1e-8, rtol=1e-6, max_atoms=8
    )


def test_second_derivatives_go_through_autograd():
    """The Laplacian (a backward with create_graph) of the frozen model is the autograd path's."""
    model = make(seed=6)
    state = box(seed=7)
    forces, lap = forces_and_laplacian(model, state, probes=2, generator=torch.Generator().manual_seed(0))
    f2, lap2 = forces_and_laplacian(frozen_copy(model), state, probes=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(f2, forces, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(lap2, lap, rtol=1e-10, atol=1e-10)
    assert float(lap.abs().max()) > 1e-3


def test_constants_follow_the_weights():
    """A weight changed in place, or a cast to another dtype, is seen at the next call."""
    model = make(seed=8)
    frozen = frozen_copy(model)
    state = box(seed=9)
    before = evaluate(frozen, state).energy
    with torch.no_grad():
        for m in (model, frozen):
            m.readout[2].bias.add_(0.25)
            m.layers[0].radial[0].weight.mul_(1.5)
    after = evaluate(frozen, state)
    assert not torch.allclose(after.energy, before)
    torch.testing.assert_close(after.forces, evaluate(model, state).forces, rtol=1e-11, atol=1e-12)
    single = evaluate(frozen.to(torch.float32), state)
    torch.testing.assert_close(single.forces, after.forces, rtol=1e-4, atol=1e-4)


def test_only_one_layer_models_of_scalars_take_it():
    assert closed_form.applies(make())
    assert not closed_form.applies(make(lmax=2, num_layers=2, cutoff=3.6))
    assert not closed_form.applies(make(num_layers=2))
    slow = frozen_copy(make(lmax=2, num_layers=2, cutoff=3.6))
    evaluate(slow, box())
    assert slow._closed_form is None
