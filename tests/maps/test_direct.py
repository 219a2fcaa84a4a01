"""The direct predictors and the fallback: velocity-Verlet sub-steps of a potential, and the
learned predictor that corrects them."""

import pytest
import torch

from ipi_mts import units
from ipi_mts.maps import LearnedPredictor, System, VerletPredictor, velocity_verlet
from ipi_mts.potentials import load_potential
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential

from map_helpers import correction, random_orthogonal, water


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


def test_learned_predictor_is_verlet_plus_the_gradients_of_g():
    """(q', p') = Φ^VV_τ(q, p) + τ (∂g/∂p, −∂g/∂q) at (q, p); with g = 0 exactly Verlet."""
    q, p, masses, h, numbers = water(2)
    system = System.from_ipi(masses, h, numbers)
    model = load_potential("qtip4pf")
    tau = 1.0 * 41.341373
    g = correction(seed=1)
    qv, pv = VerletPredictor(model, 2)(q, p, system, tau)
    ql, pl = LearnedPredictor(model, g, 2)(q, p, system, tau)
    qa, pa = q.clone().requires_grad_(True), p.clone().requires_grad_(True)
    u = g.momentum_features(pa, system.masses)
    value = units.energy_to_wire(g.energy_pm(system.state(qa), u).sum())
    gq, gp = torch.autograd.grad(value, (qa, pa))
    assert float((ql - qv).abs().max()) > 1e-6  # g does something
    torch.testing.assert_close(ql, qv + tau * gp, rtol=0, atol=1e-12)
    torch.testing.assert_close(pl, pv - tau * gq, rtol=0, atol=1e-12)
    zero = correction(seed=1)
    with torch.no_grad():
        zero.readout[-1].weight.zero_()
        zero.readout[-1].bias.zero_()
    qz, pz = LearnedPredictor(model, zero, 2)(q, p, system, tau)
    assert torch.equal(qz, qv) and torch.equal(pz, pv)


@pytest.mark.parametrize("improper", [False, True])
def test_learned_predictor_is_equivariant(improper):
    """Rotating (or inverting) positions and momenta rotates the prediction; permuting the
    atoms permutes it."""
    q, p, masses, h, numbers = water(2, seed=4)
    config = EquivariantConfig(species=(1, 8), cutoff=3.0, num_features=8, lmax=1, num_layers=1,
                               num_basis=6, radial_hidden=16, avg_num_neighbors=4.0, dtype="float64")
    anchor = EquivariantPotential(config, seed=3)  # q-TIP4P/F needs a periodic cell
    predictor = LearnedPredictor(anchor, correction(seed=2, scale=0.2))
    tau = 1.0 * 41.341373
    open_cell = torch.zeros(3, 3, dtype=torch.float64)  # a cluster: rotations are symmetries
    system = System.from_ipi(masses, open_cell, numbers)
    q1, p1 = predictor(q, p, system, tau)
    r = random_orthogonal(5, improper)
    qr, pr = predictor(q @ r.T, p @ r.T, system, tau)
    torch.testing.assert_close(qr, q1 @ r.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(pr, p1 @ r.T, rtol=0, atol=1e-10)
    perm = torch.tensor([3, 4, 5, 0, 1, 2])
    permuted = System.from_ipi(masses[perm], open_cell, numbers[perm])
    qp, pp = predictor(q[perm], p[perm], permuted, tau)
    torch.testing.assert_close(qp, q1[perm], rtol=0, atol=1e-10)
    torch.testing.assert_close(pp, p1[perm], rtol=0, atol=1e-10)
