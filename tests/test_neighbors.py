"""Neighbour pairs (`ipi_mts.neighbors`): against a brute-force search over periodic images,
and the Verlet-list cache that a force driver keeps between steps."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from ipi_mts import testing
from ipi_mts.neighbors import PairCache, neighbor_pairs, state_pairs
from ipi_mts.potentials import evaluate
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential

TILT = [[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [-0.1, 0.2, 0.0]]
CUTOFF = 2.9  # Å, below half the 6.2 Å box: each pair once per image


def brute_force(state, cutoff):
    """Sorted (i, j, |r_ij| rounded) of every ordered pair closer than `cutoff`."""
    r, cell = state.positions.numpy(), state.cell[0].numpy()
    out = []
    for shift in itertools.product((-1, 0, 1), repeat=3):
        d = r[None, :, :] + np.asarray(shift) @ cell - r[:, None, :]
        dist = np.linalg.norm(d, axis=-1)
        for i, j in zip(*np.nonzero((dist < cutoff) & (dist > 1e-9))):
            out.append((int(i), int(j), round(float(dist[i, j]), 9)))
    return sorted(out)


def found(state, cutoff, cache=None):
    i, j, vectors = neighbor_pairs(state.positions, state.cell, state.pbc, state.batch, cutoff, True, cache)
    lengths = torch.linalg.vector_norm(vectors, dim=-1)
    return sorted((int(a), int(b), round(float(d), 9)) for a, b, d in zip(i, j, lengths))


@pytest.mark.parametrize("tilt", [None, TILT])
def test_pairs_match_brute_force(tilt):
    state = testing.water_box(2, tilt=tilt, jitter=0.1)
    expected = brute_force(state, CUTOFF)
    assert len(expected) > 100
    assert found(state, CUTOFF) == expected
    i, j, _ = state_pairs(state, CUTOFF)  # a half list: each pair once
    assert 2 * len(i) == len(expected)


def test_cache_keeps_pairs_while_no_atom_moved_half_the_skin():
    state, cache = testing.water_box(2, tilt=TILT, jitter=0.1), PairCache(skin=0.4)
    rng = np.random.default_rng(0)
    start = state.positions.clone()
    assert found(state, CUTOFF, cache) == brute_force(state, CUTOFF)
    for step in range(4):  # every atom within 0.19 Å of where the search was made
        moved = replace(state, positions=start + torch.as_tensor(rng.uniform(-0.11, 0.11, start.shape)))
        assert found(moved, CUTOFF, cache) == brute_force(moved, CUTOFF), step
    assert (cache.searches, cache.calls) == (1, 5)

    far = start.clone()
    far[4] += torch.tensor([0.0, 0.0, 0.21])  # one atom past skin / 2
    moved = replace(state, positions=far)
    assert found(moved, CUTOFF, cache) == brute_force(moved, CUTOFF)
    assert cache.searches == 2

    strained = replace(moved, cell=moved.cell * 1.001)
    assert found(strained, CUTOFF, cache) == brute_force(strained, CUTOFF)
    assert cache.searches == 3
    found(strained, CUTOFF + 0.1, cache)  # another cutoff: its own entry
    assert cache.searches == 4
    with pytest.raises(ValueError, match="skin"):
        PairCache(skin=0.0)


def test_a_hit_costs_one_check_however_many_searches_are_kept():
    """Classical MD: the structure of the last call is the one to try first."""
    state, cache = testing.water_box(2, tilt=TILT, jitter=0.1), PairCache(skin=0.4, keep=8)
    for step in range(10):  # ten searches, eight kept
        found(replace(state, positions=state.positions + 0.25 * step), CUTOFF, cache)
    assert cache.searches == 10
    checks = cache.checks
    for step in range(5):
        found(replace(state, positions=state.positions + 2.25 + 0.01 * step), CUTOFF, cache)
    assert (cache.searches, cache.checks - checks) == (10, 5)


def test_a_stale_search_leaves_once_unused_for_keep_calls():
    """Classical MD: a search, hits on it, the next search... A new search checks only the
    searches used in the last `keep` calls, not every one kept before."""
    state, cache = testing.water_box(2, tilt=TILT, jitter=0.1), PairCache(skin=0.4, keep=4)
    for search in range(5):
        for hit in range(5):  # a search (every atom 0.43 Å from the last), then four hits on it
            found(replace(state, positions=state.positions + 0.25 * search + 0.01 * hit), CUTOFF, cache)
    assert cache.searches == 5
    assert cache.checks == 4 + 4 * (1 + 4)  # each later search checks only the one before


def test_model_through_the_cache_gives_the_same_energy_forces_and_virial():
    config = EquivariantConfig(species=(1, 8), cutoff=3.0, num_features=4, lmax=1, num_layers=2,
                               num_basis=4, radial_hidden=8, dtype="float64")
    model = EquivariantPotential(config, seed=0)
    state, cache = testing.water_box(2, tilt=TILT, jitter=0.1), PairCache(skin=0.5)
    for k in range(3):
        positions = state.positions + 0.05 * k
        fresh = evaluate(model, replace(state, positions=positions))
        cached = evaluate(model, replace(state, positions=positions, pairs=cache))
        for name in ("energy", "forces", "virial"):
            torch.testing.assert_close(getattr(cached, name), getattr(fresh, name), rtol=0, atol=1e-12)
    assert cache.searches == 1


def test_the_beads_of_a_ring_polymer_each_keep_their_pairs():
    """i-PI sends beads one after another: each finds its own search again, every step."""
    state, cache = testing.water_box(2, tilt=TILT, jitter=0.1), PairCache(skin=0.4, keep=4)
    rng = np.random.default_rng(1)
    beads = [state.positions + torch.as_tensor(rng.uniform(-0.3, 0.3, state.positions.shape)) for _ in range(4)]
    for step in range(3):
        for k, bead in enumerate(beads):
            moved = replace(state, positions=bead + 0.02 * step)
            assert found(moved, CUTOFF, cache) == brute_force(moved, CUTOFF), (step, k)
    assert (cache.searches, cache.calls) == (4, 12)
    assert cache.checks == 0 + 1 + 2 + 3 + 8 * 2  # a hit: the bead before, then this one
    for fewer in (PairCache(skin=0.4, keep=3), PairCache(skin=0.4, max_pairs=3 * len(found(state, CUTOFF + 0.4)))):
        for step in range(2):  # room for three beads' pairs: the oldest is dropped each time
            for bead in beads:
                found(replace(state, positions=bead), CUTOFF, fewer)
        assert fewer.searches == 8
