"""The shipped learned water models against an external reference they never saw: 10 frames
of 216 q-TIP4P/F molecules from i-PI's Fortran driver (they were trained on water-64)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ipi_mts import units
from ipi_mts.potentials import evaluate, load_potential, shipped_models
from ipi_mts.state import State

REFERENCE = Path(__file__).parents[2].parent / "shared" / "data" / "qtip4pf-water216-ipi-f90.npz"


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE.is_file():
        pytest.fail(f"reference data missing: {REFERENCE}")
    data = dict(np.load(REFERENCE))
    state = State.from_wire(np.swapaxes(data["cell_bohr"], 1, 2), data["positions_bohr"], np.tile([8, 1, 1], 216))
    return state, units.energy_from_wire(data["energy_ha"]), units.forces_from_wire(data["forces_ha_per_bohr"])


def test_both_are_installed():
    assert {"water-pair", "water-pair-resplit", "water-baseline"} <= set(shipped_models())


@pytest.mark.parametrize("name", ["water-pair", "water-baseline"])
def test_accuracy_on_unseen_water_216(reference, name):
    state, energy, forces = reference
    out = evaluate(load_potential(name, dtype="float64"), state)
    n_atoms = forces.shape[1]
    f_mae = 1000 * np.abs(out.forces.detach().numpy().reshape(forces.shape) - forces).mean()
    e_mae = 1000 * np.abs(out.energy.detach().numpy() - energy).mean() / n_atoms
    assert f_mae <= 30.0, f"{name}: force MAE {f_mae:.1f} meV/Å"
    assert e_mae <= 1.0, f"{name}: energy MAE {e_mae:.2f} meV/atom"


def test_pair_components_add_up(reference):
    state = reference[0]
    parts = {c: evaluate(load_potential("water-pair", c, dtype="float64"), state) for c in ("fast", "slow", "full")}
    torch.testing.assert_close(parts["fast"].energy + parts["slow"].energy, parts["full"].energy)
    torch.testing.assert_close(parts["fast"].forces + parts["slow"].forces, parts["full"].forces)


def _curvature(model, state, v, h=1e-3):
    """v·H·v (eV/Å²) by central differences of the forces along the unit vector v."""
    from dataclasses import replace

    f = [evaluate(model, replace(state, positions=state.positions + s * h * v)).forces for s in (1, -1)]
    return float(-((f[0] - f[1]) * v).sum() / (2 * h))


def test_resplit_pair_has_the_same_total_and_a_slow_part_without_bond_stiffness(reference):
    """water-pair-resplit (`ipi-mts resplit`, docs/learned-mts.md): its total is water-pair's
    bit for bit, and its slow part holds less than 3 % (either sign) of the O–H stretch's curvature and < 20 % of the
    bend's (water-pair's: 10 % and 62 %)."""
    state = reference[0]
    state = type(state)(**{**vars(state), "positions": state.positions[:648], "numbers": state.numbers[:648],
                           "cell": state.cell[:1], "batch": state.batch[:648]})
    full = {name: evaluate(load_potential(name, dtype="float64"), state) for name in ("water-pair", "water-pair-resplit")}
    assert torch.equal(full["water-pair"].forces, full["water-pair-resplit"].forces)
    fast, slow = (load_potential("water-pair-resplit", c, dtype="float64") for c in ("fast", "slow"))
    parts = [evaluate(m, state).forces for m in (fast, slow)]
    torch.testing.assert_close(parts[0] + parts[1], full["water-pair"].forces)
    pos = state.positions.reshape(-1, 3, 3)
    bond = pos[:, 1] - pos[:, 0]
    normal = torch.linalg.cross(bond, pos[:, 2] - pos[:, 0])
    for kind, direction, limit in (("stretch", bond, 0.03), ("bend", torch.linalg.cross(normal, bond), 0.20)):
        v = torch.zeros_like(pos)
        v[:, 1] = direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)
        v = (v / torch.linalg.vector_norm(v)).reshape(-1, 3)
        k_fast, k_slow = _curvature(fast, state, v), _curvature(slow, state, v)
        assert abs(k_slow / (k_fast + k_slow)) < limit, f"{kind}: slow share {k_slow / (k_fast + k_slow):.3f}"
