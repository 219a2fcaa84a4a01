import pytest
import torch

from ipi_mts import testing
from ipi_mts.errors import UserError
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.potentials.harmonic import Harmonic

TILT = [[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.1, -0.2, 0.0]]


def test_energy_forces_virial_in_closed_form():
    state = testing.water_box(2, tilt=TILT, seed=1)
    r = state.positions
    out = evaluate(Harmonic(k=2.5), state)
    assert torch.allclose(out.energy, 0.5 * 2.5 * (r * r).sum().reshape(1), rtol=1e-14)
    assert torch.allclose(out.forces, -2.5 * r, rtol=1e-14)
    assert torch.allclose(out.virial[0], out.forces.T @ r, rtol=1e-12)  # Σ f ⊗ r


def test_anisotropic():
    state = testing.water_box(2, seed=2)
    r = state.positions
    out = evaluate(Harmonic(k=1.0, k2=2.0, k3=3.0), state)
    k = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(out.energy, 0.5 * (k * r * r).sum().reshape(1), rtol=1e-14)
    assert torch.allclose(out.forces, -k * r, rtol=1e-14)


def test_forces_and_virial_by_finite_differences():
    state = testing.water_box(2, tilt=TILT, seed=3)
    testing.assert_forces_match_finite_differences(Harmonic(k=0.7), state, atol=1e-7)
    testing.assert_virial_matches_finite_strain(Harmonic(k=0.7, k2=0.2, k3=1.1), state, atol=1e-6)


def test_batch_matches_single_and_rotation():
    states = [testing.water_box(2, seed=4), testing.water_box(2, tilt=TILT, seed=5)]
    out = testing.assert_batch_matches_single(Harmonic(k=1.3), states)
    assert out.energy.shape == (2,) and bool((out.energy > 0).all())
    testing.assert_rotation_equivariant(Harmonic(k=1.3), states[1])  # isotropic trap


def test_registry_and_parameters():
    model = load_potential("harmonic", k="2.0")
    assert isinstance(model, Harmonic) and model.k == (2.0, 2.0, 2.0)
    assert model.default_numbers(3).tolist() == [0, 0, 0]
    with pytest.raises(UserError, match="k2 and k3"):
        Harmonic(k=1.0, k2=2.0)
    with pytest.raises(UserError):
        load_potential("harmonic", k="stiff")


# --- the test kit catches what it is meant to catch ------------------------------------------
class _WrongSlope(torch.autograd.Function):
    """x², with a derivative 1 % too steep."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2.02 * x


class _NonConservative(Harmonic):
    def energy(self, state):
        per_atom = 0.5 * self.k[0] * _WrongSlope.apply(state.positions).sum(-1)
        return torch.zeros(state.n_structures, dtype=per_atom.dtype).index_add(
            0, state.batch, per_atom
        )


class _CoupledStructures(Harmonic):
    def energy(self, state):
        return super().energy(state).sum().expand(state.n_structures)


def test_kit_rejects_wrong_forces_virial_and_batching():
    state = testing.water_box(2, seed=6)
    with pytest.raises(AssertionError, match="forces vs finite differences"):
        testing.assert_forces_match_finite_differences(_NonConservative(k=1.0), state)
    with pytest.raises(AssertionError, match="virial vs finite strain"):
        testing.assert_virial_matches_finite_strain(_NonConservative(k=1.0), state)
    with pytest.raises(AssertionError, match="batched vs alone"):
        testing.assert_batch_matches_single(
            _CoupledStructures(k=1.0), [state, testing.water_box(2, seed=7)]
        )
    with pytest.raises(AssertionError, match="translation"):
        testing.assert_translation_invariant(Harmonic(k=1.0), state)  # a trap is not
