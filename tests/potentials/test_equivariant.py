"""The learned equivariant model and the fast/slow pair, through the model test kit."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from ipi_mts import testing
from ipi_mts.errors import UserError
from ipi_mts.potentials import evaluate
from ipi_mts.potentials.equivariant import (
    EquivariantConfig,
    EquivariantPotential,
    average_num_neighbors,
    fit_reference_energies,
    polynomial_cutoff,
)
from ipi_mts.potentials.pair import LearnedPair

WATER = (1, 8)
TILT = [[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [-0.1, 0.2, 0.0]]
# small versions of the two roles: a short-cutoff one-layer model and a longer-range
# two-layer one with l = 2 features (both big enough to exercise every code path)
FAST = dict(cutoff=2.0, num_features=8, lmax=1, num_layers=1, num_basis=6, radial_hidden=16)
SLOW = dict(cutoff=3.6, num_features=8, lmax=2, num_layers=2, num_basis=6, radial_hidden=16)


def make(kind="slow", dtype="float64", seed=0, **overrides):
    values = {"fast": FAST, "slow": SLOW}[kind] | overrides
    config = EquivariantConfig(species=WATER, dtype=dtype, avg_num_neighbors=4.0, **values)
    return EquivariantPotential(config, seed=seed)


@pytest.fixture(scope="module")
def fast():
    return make("fast", seed=1)


@pytest.fixture(scope="module")
def slow():
    return make("slow", seed=2)


@pytest.fixture(scope="module")
def pair(fast, slow):
    return LearnedPair(fast, slow)


def box(seed=0, tilt=None, dtype=torch.float64):
    """8 waters in a 6.2 Å periodic box (24 atoms)."""
    return testing.water_box(2, spacing=3.1, tilt=tilt, jitter=0.08, seed=seed, dtype=dtype)


def cluster(n_molecules=3, seed=0):
    """A few waters in vacuum (no cell)."""
    state = testing.water_box(2, jitter=0.08, seed=seed)
    n = 3 * n_molecules
    return testing.State(
        positions=state.positions[:n],
        numbers=state.numbers[:n],
        cell=torch.zeros(1, 3, 3, dtype=torch.float64),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        batch=torch.zeros(n, dtype=torch.long),
    )


def test_energy_and_forces_are_nontrivial(fast, slow):
    """So that the checks below can fail: forces are O(0.1–1) eV/Å and the models differ."""
    state = box()
    for model in (fast, slow):
        out = evaluate(model, state)
        assert out.energy.shape == (1,) and out.energy.dtype == torch.float64
        assert out.forces.shape == (24, 3) and out.forces.dtype == torch.float64
        assert 1e-2 < float(out.forces.abs().max()) < 1e3
        assert torch.isfinite(out.virial).all()
    assert not torch.allclose(evaluate(fast, state).forces, evaluate(slow, state).forces)


def test_scalar_layers_skip_the_tensor_product(fast, slow):
    """A layer of scalars whose one path is 0e x Y_0 computes c x_j R without e3nn's tensor
    product: the same energy and forces as through it, and no spherical harmonics at all."""
    assert [layer.uses_harmonics for layer in fast.layers] == [False]
    assert [layer.uses_harmonics for layer in slow.layers] == [True, True]
    state, layer = box(), fast.layers[0]
    shortcut = evaluate(fast, state)
    path, layer.scalar_path = layer.scalar_path, None
    try:
        through_tp = evaluate(fast, state)
    finally:
        layer.scalar_path = path
    torch.testing.assert_close(shortcut.energy, through_tp.energy, rtol=0, atol=1e-12)
    torch.testing.assert_close(shortcut.forces, through_tp.forces, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["fast", "slow"])
def test_forces_match_finite_differences(kind, fast, slow):
    model = {"fast": fast, "slow": slow}[kind]
    testing.assert_forces_match_finite_differences(
        model, box(seed=3), delta=1e-5, atol=1e-8, rtol=1e-6, max_atoms=8
    )
    testing.assert_forces_match_finite_differences(
        model, cluster(seed=4), delta=1e-5, atol=1e-8, rtol=1e-6, max_atoms=5
    )


@pytest.mark.parametrize("tilt", [None, TILT])
def test_virial_matches_finite_strain(tilt, slow):
    out = testing.assert_virial_matches_finite_strain(slow, box(seed=5, tilt=tilt), atol=1e-8, rtol=1e-6)
    assert float(out.virial.abs().max()) > 1e-2


def test_equivariant_under_rotations_reflections_translations(fast, slow):
    for model in (fast, slow):
        testing.assert_equivariant(model, box(seed=6, tilt=TILT), seed=1, atol=1e-9, rtol=1e-9)
        testing.assert_equivariant(model, cluster(seed=7), seed=2, atol=1e-9, rtol=1e-9)


def test_equivariant_in_float32():
    model = make("slow", dtype="float32", seed=3)
    testing.assert_equivariant(model, box(seed=8), seed=3, atol=2e-4, rtol=1e-4)


def test_equivariance_check_catches_a_broken_model(slow):
    """The kit fails on a model that sees absolute directions (a fixed axis)."""

    class Biased(EquivariantPotential):
        def energy(self, state, edges=None):
            return super().energy(state, edges) + state.positions[:, 0].sin().sum()[None]

    biased = Biased(slow.config)
    biased.load_state_dict(slow.state_dict())
    with pytest.raises(AssertionError, match="rotation"):
        testing.assert_equivariant(biased, cluster(seed=9), atol=1e-9, rtol=1e-9)


def test_permutation_of_atoms(fast, slow):
    for model in (fast, slow):
        testing.assert_permutation_equivariant(model, box(seed=10), seed=4, atol=1e-9, rtol=1e-9)


def test_batch_matches_single(slow, pair):
    states = [box(seed=11), box(seed=12, tilt=TILT), cluster(n_molecules=4, seed=13)]
    testing.assert_batch_matches_single(slow, states, atol=1e-10, rtol=1e-10)
    testing.assert_batch_matches_single(pair, states[:2], atol=1e-10, rtol=1e-10)


def test_periodic_images_make_the_energy_extensive(slow):
    """A box and its 2x1x1 supercell: twice the energy, the same forces on each image."""
    small = box(seed=14)
    big = testing.replicate(small, (2, 1, 1))
    one, two = evaluate(slow, small), evaluate(slow, big)
    assert float(two.energy) == pytest.approx(2 * float(one.energy), rel=1e-10, abs=1e-10)
    assert torch.allclose(two.forces, one.forces.repeat(2, 1), atol=1e-10)
    assert torch.allclose(two.virial, 2 * one.virial, atol=1e-9)


@pytest.mark.parametrize("numbers", [(8, 1), (8, 8), (1, 1)])
def test_smooth_at_cutoff(numbers, fast, slow):
    for model in (fast, slow):
        testing.assert_smooth_at_cutoff(
            model, model.cutoff, numbers=numbers, eps=1e-3, atol_energy=1e-7, atol_force=1e-5
        )


def test_smoothness_check_catches_a_hard_cutoff(slow, monkeypatch):
    """Without the envelope the dimer energy jumps at r_c: the kit must notice."""
    import ipi_mts.potentials.equivariant as module

    monkeypatch.setattr(module, "polynomial_cutoff", lambda r, cutoff, p: (r < cutoff).to(r.dtype))
    with pytest.raises(AssertionError, match="r_c"):
        testing.assert_smooth_at_cutoff(slow, slow.cutoff, numbers=(8, 1))


def test_polynomial_envelope():
    r = torch.linspace(0, 1.2, 121, dtype=torch.float64, requires_grad=True)
    u = polynomial_cutoff(r, 1.0, 6)
    (du,) = torch.autograd.grad(u.sum(), r, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), r)
    u, du = u.detach(), du.detach()
    assert float(u[0]) == 1.0 and float(u[-1]) == 0.0
    near = (r > 0.99) & (r <= 1.0)
    assert float(u[near].abs().max()) < 1e-5
    assert float(du[near].abs().max()) < 1e-3 and float(d2u[near].abs().max()) < 0.2
    assert bool((u[:100] > 0).all()) and bool((u[101:] == 0).all())


def test_float32_model_matches_float64():
    """The same weights in float32 and float64: energies and forces agree to float32
    precision; what comes out of `evaluate` is float64 for a float64 State."""
    m32 = make("slow", dtype="float32", seed=5)
    m64 = EquivariantPotential(replace(m32.config, dtype="float64"))
    m64.load_state_dict(m32.state_dict())
    state = box(seed=15)
    a, b = evaluate(m32, state), evaluate(m64, state)
    assert a.energy.dtype == a.forces.dtype == a.virial.dtype == torch.float64
    assert float(a.energy) == pytest.approx(float(b.energy), rel=1e-5, abs=1e-5)
    assert torch.allclose(a.forces, b.forces, rtol=1e-4, atol=1e-5)
    assert torch.allclose(a.virial, b.virial, rtol=1e-4, atol=1e-4)
    # a float32 State works too and gives float32 results
    out = evaluate(m32, replace(state, positions=state.positions.float(), cell=state.cell.float()))
    assert out.forces.dtype == torch.float32
    assert torch.allclose(out.forces.double(), b.forces, rtol=1e-3, atol=1e-4)


def test_forces_train_by_double_backward(slow):
    """A force loss back-propagates to the weights (create_graph), as training needs."""
    model = make("slow", seed=6)
    out = evaluate(model, box(seed=16), create_graph=True)
    loss = out.forces.pow(2).mean() + out.energy.pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    radial = model.layers[0].radial
    assert any(float(p.grad.abs().max()) > 0 for p in radial.parameters())


def test_reference_energies_scale_and_shift():
    model = make("fast", seed=7)
    state = box(seed=17)
    raw = evaluate(model, state)
    n_o, n_h = 8, 16
    model.set_reference_energies({8: -432.0, 1: -13.5})
    shifted = evaluate(model, state)
    assert float(shifted.energy - raw.energy) == pytest.approx(n_o * -432.0 + n_h * -13.5, rel=1e-12)
    assert torch.equal(shifted.forces, raw.forces)
    model.set_reference_energies([0.0, 0.0])
    model.set_scale_shift(2.0, 0.25)
    scaled = evaluate(model, state)
    assert float(scaled.energy) == pytest.approx(2 * float(raw.energy) + 0.25 * 24, rel=1e-10)
    assert torch.allclose(scaled.forces, 2 * raw.forces, rtol=1e-12, atol=1e-12)
    with pytest.raises(UserError, match="species"):
        model.set_reference_energies({6: 1.0})
    with pytest.raises(UserError, match="3 reference energies for 2 species"):
        model.set_reference_energies([1.0, 2.0, 3.0])


def test_fit_reference_energies_least_squares():
    rng = np.random.default_rng(0)
    numbers_list = [rng.choice([1, 8], size=rng.integers(3, 12)) for _ in range(20)]
    truth = {1: -13.6, 8: -430.0}
    energies = [sum(truth[int(z)] for z in n) + rng.normal(scale=1e-3) for n in numbers_list]
    model = make("fast", seed=8)
    fitted = model.fit_reference_energies(numbers_list, energies)
    assert fitted[1] == pytest.approx(-13.6, abs=1e-2) and fitted[8] == pytest.approx(-430.0, abs=1e-2)
    assert model.reference_energies.tolist() == pytest.approx([fitted[1], fitted[8]])
    # all-water compositions are collinear: the minimum-norm solution still fits exactly
    water = [np.tile([8, 1, 1], k) for k in (2, 4, 8)]
    values = fit_reference_energies(water, [-100.0 * k for k in (2, 4, 8)], WATER)
    assert 2 * values[0] + values[1] == pytest.approx(-100.0)
    with pytest.raises(UserError, match="Z=6"):
        fit_reference_energies([[6, 1]], [0.0], WATER)


def test_unknown_species_rejected(fast):
    fast.check([8, 1, 1])
    with pytest.raises(UserError, match=r"knows only H, O.*C \(Z=6\)"):
        fast.check([8, 1, 6])
    state = box()
    bad = replace(state, numbers=state.numbers.clone().index_fill_(0, torch.tensor([3]), 7))
    with pytest.raises(UserError, match="N"):
        fast.energy(bad)


def test_config_validation_and_round_trip():
    config = EquivariantConfig(species=[8, 1], cutoff=4.5, num_features=16, lmax=2, num_layers=3)
    assert config.species == (8, 1)
    assert EquivariantConfig.from_dict(config.to_dict()) == config
    for bad in (
        dict(species=[]),
        dict(species=[1, 1]),
        dict(species=[1], cutoff=-1.0),
        dict(species=[1], dtype="float16"),
        dict(species=[1], num_layers=0),
    ):
        with pytest.raises(UserError, match="bad equivariant model config"):
            EquivariantConfig(**bad)
    with pytest.raises(UserError, match="unknown equivariant model config keys: colour"):
        EquivariantConfig.from_dict({"species": [1], "colour": "red"})


def test_seeded_construction_is_reproducible():
    a, b, c = make("fast", seed=9), make("fast", seed=9), make("fast", seed=10)
    state = cluster()
    assert torch.equal(a.energy(state), b.energy(state))
    assert not torch.equal(a.energy(state), c.energy(state))


def test_average_num_neighbors():
    assert average_num_neighbors(testing.dimer(1.0, (8, 1)), 1.5) == 1.0
    assert average_num_neighbors([testing.dimer(1.0, (8, 1)), testing.dimer(2.0, (8, 1))], 1.5) == 0.5


# --- the fast/slow pair -------------------------------------------------------------------------
def test_pair_is_fast_plus_slow(fast, slow, pair):
    for state in (box(seed=18, tilt=TILT), cluster(seed=19)):
        full, f, s = evaluate(pair, state), evaluate(fast, state), evaluate(slow, state)
        assert torch.allclose(full.energy, f.energy + s.energy, rtol=1e-12, atol=1e-12)
        assert torch.allclose(full.forces, f.forces + s.forces, rtol=1e-12, atol=1e-12)
        assert torch.allclose(full.virial, f.virial + s.virial, rtol=1e-12, atol=1e-12)
    assert pair.component("fast") is fast and pair.component("slow") is slow
    assert pair.component("full") is pair
    assert pair.cutoff == slow.cutoff and pair.species == WATER
    with pytest.raises(UserError, match="unknown component 'medium'"):
        pair.component("medium")


def test_pair_checks(pair):
    testing.assert_forces_match_finite_differences(
        pair, box(seed=20), delta=1e-5, atol=1e-8, rtol=1e-6, max_atoms=4
    )
    testing.assert_equivariant(pair, box(seed=21), atol=1e-9, rtol=1e-9)
    testing.assert_smooth_at_cutoff(pair, pair.cutoff, numbers=(8, 1))
    with pytest.raises(UserError, match="C"):
        pair.check([6, 1, 1])


def test_pair_needs_matching_species(fast):
    other = EquivariantPotential(EquivariantConfig(species=(1, 6, 8), **FAST), seed=0)
    with pytest.raises(UserError, match="different species"):
        LearnedPair(fast, other)
