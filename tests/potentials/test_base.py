"""potentials.base: the per-atom Laplacian of `forces_and_laplacian` (forces and virial of
`evaluate` are tested with each potential)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from ipi_mts import testing
from ipi_mts.potentials import evaluate, forces_and_laplacian
from ipi_mts.potentials.harmonic import Harmonic
from ipi_mts.potentials.lennard_jones import LennardJones

FCC = 0.5 * np.array([[0, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]])


def _exact_laplacian(model, state) -> np.ndarray:
    """Σ_a ∂²E/∂r_ia² per atom from the full Hessian."""
    flat = state.positions.detach().reshape(-1)
    hessian = torch.autograd.functional.hessian(
        lambda x: model.energy(replace(state, positions=x.reshape(-1, 3))).sum(), flat
    )
    return torch.diagonal(hessian).reshape(-1, 3).sum(1).numpy()


def test_laplacian_is_exact_without_couplings():
    """An anisotropic harmonic trap: H is diagonal, so one probe gives the exact 3 k̄."""
    state = testing.water_box(2, seed=3)
    forces, lap = forces_and_laplacian(Harmonic(1.3, 0.4, 2.1), state, probes=1)
    assert np.allclose(lap.numpy(), 1.3 + 0.4 + 2.1, rtol=1e-12)
    assert np.allclose(forces.numpy(), evaluate(Harmonic(1.3, 0.4, 2.1), state).forces.numpy(), rtol=1e-12)


def test_laplacian_estimate_is_unbiased_with_couplings():
    """Lennard-Jones argon (atoms coupled): over 4000 probes the estimate is within 4
    standard errors of the diagonal of the exact Hessian, for every atom; the forces are
    evaluate's."""
    state = testing.lattice_state(5.26 * np.eye(3), FCC, repeat=(2, 1, 1), jitter=0.2, number=18, seed=2)
    model = LennardJones()
    exact = _exact_laplacian(model, state)
    gen = torch.Generator().manual_seed(0)
    samples = np.array([forces_and_laplacian(model, state, 1, gen)[1].numpy() for _ in range(400)])
    forces, lap = forces_and_laplacian(model, state, 3600, gen)
    mean = (samples.sum(0) + 3600 * lap.numpy()) / 4000
    error = samples.std(0) / np.sqrt(4000)
    assert np.all(np.abs(mean - exact) < 4 * error), (mean, exact, error)
    assert samples.std(0).min() > 0.01 * np.abs(exact).min()  # the couplings are there
    assert np.allclose(forces.numpy(), evaluate(model, state).forces.numpy(), atol=1e-12)
