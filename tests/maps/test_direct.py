"""The direct predictor and fallback: velocity-Verlet sub-steps of a potential."""

import pytest
import torch

from ipi_mts.maps import System, VerletPredictor, velocity_verlet
from ipi_mts.potentials import load_potential

from map_helpers import water


def test_verlet_substeps_converge_at_second_order():
    q, p, masses, h, numbers = water(2)
    system = System.from_ipi(masses, h, numbers)
    model = load_potential("qtip4pf")
    tau = 2.0 * 41.341373  # 2 fs in a.u.
    reference = velocity_verlet(q, p, masses, tau, lambda x: system.forces(model, x), 64)
    errors = []
    for k in (2, 4, 8):
        qk, _ = VerletPredictor(model, k)(q, p, system, tau)
        errors.append(float((qk - reference[0]).abs().max()))
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    print("Verlet sub-step errors (bohr):", errors, "ratios", ratios)
    for ratio in ratios:
        assert 3.0 < ratio < 5.0


def test_predictor_is_one_verlet_step_by_default():
    q, p, masses, h, numbers = water(2)
    system = System.from_ipi(masses, h, numbers)
    model = load_potential("qtip4pf")
    f = system.forces(model, q)
    tau = 20.0
    p_half = p + 0.5 * tau * f
    q1 = q + tau * p_half / masses[:, None]
    p1 = p_half + 0.5 * tau * system.forces(model, q1)
    qp, pp = VerletPredictor(model)(q, p, system, tau)
    assert torch.allclose(qp, q1, rtol=0, atol=1e-14) and torch.allclose(pp, p1, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        VerletPredictor(model, 0)
