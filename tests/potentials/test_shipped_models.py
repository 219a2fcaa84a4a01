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
    assert {"water-pair", "water-baseline"} <= set(shipped_models())


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
