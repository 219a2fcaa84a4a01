"""Bonded terms: the closed form on one molecule, forces and virial by finite differences,
invariances, the switch, and rejected settings."""

import math

import numpy as np
import pytest
import torch

from ipi_mts import testing
from ipi_mts.errors import UserError
from ipi_mts.potentials import evaluate
from ipi_mts.potentials.bonded import BondedConfig, BondedTerms, switch
from ipi_mts.state import State

R0, U0 = 0.96, math.cos(math.radians(104.5))


def water_terms(seed=0, **settings):
    config = BondedConfig(species=[1, 8], bonds=[{"species": [8, 1], "r0": R0}],
                          angles=[{"species": [1, 8, 1], "r0": R0, "u0": U0}], **settings)
    terms = BondedTerms(config)
    rng = np.random.default_rng(seed)
    terms.set_coefficients(rng.normal(size=terms.n_features) * [1, 5, 20, 50, 1, 2, 3, 4, 2, 5])
    return terms


def molecule(r1, r2, theta_deg, cell=20.0):
    t = math.radians(theta_deg)
    positions = [[5, 5, 5], [5 + r1, 5, 5], [5 + r2 * math.cos(t), 5 + r2 * math.sin(t), 5]]
    return State(positions=torch.tensor(positions, dtype=torch.float64), numbers=torch.tensor([8, 1, 1]),
                 cell=cell * torch.eye(3, dtype=torch.float64)[None], pbc=torch.tensor([True] * 3),
                 batch=torch.zeros(3, dtype=torch.long))


def test_one_molecule_is_the_closed_form():
    terms = water_terms()
    b, a = terms.bond_coefficients[0].numpy(), terms.angle_coefficients[0].numpy()
    r1, r2, theta = 0.99, 0.93, 101.0
    d1, d2, du = r1 - R0, r2 - R0, math.cos(math.radians(theta)) - U0
    want = sum(b[k] * (d1 ** (k + 1) + d2 ** (k + 1)) for k in range(4))
    want += sum(a[k] * du ** (k + 1) for k in range(4)) + a[4] * (d1 + d2) * du + a[5] * d1 * d2
    assert float(terms.energy(molecule(r1, r2, theta))) == pytest.approx(want, rel=1e-12)


def test_forces_and_virial_match_finite_differences():
    terms = water_terms(seed=1)
    state = testing.water_box(2, jitter=0.08, seed=3)
    testing.assert_forces_match_finite_differences(terms, state, atol=1e-7)
    testing.assert_virial_matches_finite_strain(terms, state, atol=1e-7)


def test_edge_gradient_is_autograds():
    """Energy, forces and virial of the closed-form gradient (`edge_gradient`, what `evaluate`
    takes) against autograd through the features, in a batch of two structures with bonds
    inside the switch (1.25–1.4 Å)."""
    terms = water_terms(seed=2)
    assert terms.has_edge_gradient
    stretched = []
    for seed, length in ((4, 1.31), (8, 1.37)):
        state = testing.water_box(2, jitter=0.08, seed=seed, tilt=[[0, 0, 0], [0.2, 0, 0], [0.1, -0.15, 0]])
        oh = state.positions[1] - state.positions[0]
        state.positions[1] = state.positions[0] + oh * (length / float(oh.norm()))
        stretched.append(state)
    for state in (*stretched, testing.concatenate(stretched)):
        closed, through = evaluate(terms, state), evaluate(terms, state, create_graph=True)
        torch.testing.assert_close(closed.energy, through.energy.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(closed.forces, through.forces.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(closed.virial, through.virial.detach(), rtol=1e-10, atol=1e-10)
        assert float(closed.forces.abs().max()) > 1.0


def test_batch_matches_each_structure_alone():
    """Beads and batches: the per-structure sums (index_add) against one structure's (sum)."""
    terms = water_terms(seed=5)
    states = [testing.water_box(2, jitter=0.08, seed=seed) for seed in (5, 6, 7)]
    together = testing.assert_batch_matches_single(terms, states, atol=1e-12)
    assert len(set(together.energy.tolist())) == 3


def test_invariant_under_rotation_translation_and_atom_order():
    terms = water_terms(seed=2)
    state = testing.water_box(2, jitter=0.08, seed=4)
    testing.assert_translation_invariant(terms, state)
    testing.assert_equivariant(terms, state)
    testing.assert_permutation_equivariant(terms, state)  # no topology: found by distance


def test_switch_is_smooth_and_ends_at_the_cutoff():
    edges = torch.tensor([1.25, 1.4], dtype=torch.float64)
    r = torch.cat([edges - 1e-7, edges + 1e-7, torch.linspace(1.0, 1.6, 61, dtype=torch.float64)]).requires_grad_(True)
    s = switch(r, 1.25, 1.4)
    (ds,) = torch.autograd.grad(s.sum(), r, create_graph=True)
    (d2s,) = torch.autograd.grad(ds.sum(), r)
    s, ds, d2s, r = s.detach(), ds.detach(), d2s.detach(), r.detach()
    assert float(s[r <= 1.25].min()) == 1.0 and float(s[r >= 1.4].abs().max()) == 0.0
    # value, slope and curvature continuous at both ends (zero slope and curvature there)
    assert float(ds[:4].abs().max()) < 1e-9 and float(d2s[:4].abs().max()) < 1e-2
    assert float(ds.max()) <= 0.0  # monotonic
    # a hydrogen pulled away: the terms fade to nothing, forces along the way stay finite
    far = evaluate(water_terms(), molecule(1.45, 0.96, 104.5))
    near = evaluate(water_terms(), molecule(0.96, 0.96, 104.5))
    assert float(far.energy) == pytest.approx(0.0, abs=1e-12) and float(near.energy) == pytest.approx(0.0, abs=1e-12)
    mid = evaluate(water_terms(), molecule(1.33, 0.96, 104.5))
    assert torch.isfinite(mid.forces).all() and float(mid.energy) != 0.0


@pytest.mark.parametrize("settings, message", [
    ({"switch_on": 1.5}, "0 < switch_on < cutoff"),
    ({"bond_degree": 0}, "degree of at least 1"),
    ({"bonds": [{"species": [8, 6], "r0": 1.0}]}, "needs 2 species among"),
    ({"angles": [{"species": [1, 8, 8], "r0": 1.0, "u0": 0.0}]}, "equal arms"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    values = {"species": [1, 8], "bonds": [{"species": [8, 1], "r0": R0}]} | settings
    with pytest.raises(UserError, match=message):
        BondedConfig.from_dict(values)
    with pytest.raises(UserError, match="unknown bonded-term settings: colour"):
        BondedConfig.from_dict(values | {"colour": 1})
