"""Energies and their gradient in closed form for a frozen one-layer model of scalars (the fast
model of a pair), without an autograd graph: a few dozen tensor operations per call instead
of the several hundred of e3nn's modules and their backward pass.

A one-layer `EquivariantPotential` (features of scalars only) is of embedded-atom form. With
s_i the species of atom i and e = (i ← j) an edge of length r (`equivariant` for the parts):

    w_e = R(r) = φ(u(r) B(r) W₁) W₂                (F channels; φ = c_φ SiLU, hidden layers alike)
    m_i = Σ_{e: i ← j} x_{s_j} ⊙ w_e               x_s = (c_path / √N̄) Lin1 h⁰_s
    h_i = c_g SiLU(m_i L₂ + SC_{s_i}) + h⁰_{s_i}    (the gate of scalars and the residual)
    ε_i = MLP(h_i)

so that ∂ε_i/∂v_e = (g_i · (x_{s_j} ⊙ R'(r))) v_e / r for the edges of atom i, where
g_i = ∂ε_i/∂m_i comes from the per-atom chain (readout, gate, L₂), and R'(r) is carried
forward alongside R (∂_r(uB), then through each layer: z' = z'_prev W, φ'(z) ⊙ z').

`EquivariantPotential` uses it when no parameter requires grad (a driver's model): `evaluate`
takes the energy and ∂E/∂v from `energies_and_gradient` (`edge_gradient`, no autograd at
all), and an energy differentiated by autograd goes through `atomic_outputs`. The matrices are
read from its modules once and kept while the weights do not change. A backward with `create_graph` (second derivatives: the Laplacian of the configurational
temperature, force training against a frozen partner) differentiates the autograd path
instead, so it is never silently first-order only.
"""

from __future__ import annotations

import math

import torch

from . import equivariant  # (a module: equivariant imports this one)


def applies(model) -> bool:
    """Whether `model`'s energy has the closed form above: one layer, on scalars only."""
    return len(model.layers) == 1 and model.layers[0].scalar_path is not None


def _silu_and_derivative(z):
    s = torch.sigmoid(z)
    return z * s, s * (1.0 + z * (1.0 - s))


def matrices(model) -> dict:
    """The constants of the closed form, read from `model`'s modules (in its dtype)."""
    layer, readout = model.layers[0], model.readout
    species = torch.eye(len(model.species), dtype=model.dtype, device=model.radial_basis.weights.device)
    h0 = model.embedding(species)
    x, self_interaction = layer.linear_1(h0), layer.self_interaction(h0, species)
    features = x.shape[1]
    one = torch.ones(1, features, dtype=model.dtype, device=species.device)
    radial = []
    for dense in layer.radial:  # e3nn's FullyConnectedNet: x W / √(h_in var_in (/ var_out)), φ, √var_out
        if dense.act is None:
            radial.append((dense.weight / math.sqrt(dense.h_in * dense.var_in / dense.var_out), None))
        else:
            scale = float(dense.act(one[:, :1]) / torch.nn.functional.silu(one[:, :1])) * dense.var_out**0.5
            radial.append((dense.weight / math.sqrt(dense.h_in * dense.var_in), scale))
    gate = layer.gate(one) / torch.nn.functional.silu(one)  # c_g per channel (SiLU on scalars)
    return {
        "h0": h0,
        "x": x * (layer.scalar_path * layer.norm),
        "self_interaction": self_interaction,
        "linear_2": layer.linear_2(torch.eye(features, dtype=model.dtype, device=species.device)),
        "gate": gate[0],
        "radial": radial,
        "readout": (readout[0].weight.T, readout[0].bias, readout[2].weight.T, readout[2].bias),
    }


def _radial(model, m, r, need_derivative: bool):
    """R(r) (E, F) and, if asked, R'(r)."""
    cutoff, p = model.cutoff, model.config.cutoff_p
    bessel = model.radial_basis(r)
    envelope = equivariant.polynomial_cutoff(r, cutoff, p)[:, None]
    z = bessel * envelope
    dz = None
    if need_derivative:  # B = (2/r_c) sin(w r/r_c) / r, so B' = ((2/r_c)(w/r_c) cos(w r/r_c) − B) / r
        w = model.radial_basis.weights
        y = (r / cutoff)[:, None]
        d_envelope = (p * (p + 1) * (p + 2) / (2 * cutoff)) * y ** (p - 1) * (-1.0 + 2.0 * y - y * y) * (y < 1.0)
        d_bessel = ((2.0 / cutoff) * (w / cutoff) * torch.cos(w * y) - bessel) / r[:, None]
        dz = d_bessel * envelope + bessel * d_envelope
    for weight, scale in m["radial"]:
        z = z @ weight
        if dz is not None:
            dz = dz @ weight
        if scale is not None:
            act, d_act = _silu_and_derivative(z)
            z = scale * act
            if dz is not None:
                dz = (scale * d_act) * dz
    return z, dz


def energies_and_gradient(model, m, vectors, centre, neighbour, index, need_gradient: bool):
    """ε (n_atoms,) and, if asked, q (n_edges,) with ∂ε_centre(e)/∂v_e = q_e v_e."""
    r = torch.linalg.vector_norm(vectors, dim=-1)
    w, dw = _radial(model, m, r, need_gradient)
    x_neighbour = m["x"].index_select(0, index.index_select(0, neighbour))
    messages = torch.zeros(index.shape[0], w.shape[1], dtype=w.dtype, device=w.device)
    messages = messages.index_add(0, centre, x_neighbour * w)
    pre = messages @ m["linear_2"] + m["self_interaction"].index_select(0, index)
    gated, d_gated = _silu_and_derivative(pre)
    h = m["gate"] * gated + m["h0"].index_select(0, index)
    w1, b1, w2, b2 = m["readout"]
    hidden, d_hidden = _silu_and_derivative(torch.addmm(b1, h, w1))
    energies = torch.addmm(b2, hidden, w2).squeeze(-1)
    if not need_gradient:
        return energies, None
    g = ((d_hidden * w2.T) @ w1.T) * (m["gate"] * d_gated) @ m["linear_2"].T  # ∂ε_i/∂m_i
    q = (g.index_select(0, centre) * x_neighbour * dw).sum(-1) / r
    return energies, q


class _ClosedForm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors, model, m, centre, neighbour, index):
        energies, q = energies_and_gradient(model, m, vectors, centre, neighbour, index, ctx.needs_input_grad[0])
        ctx.save_for_backward(vectors, q, centre, neighbour, index)
        ctx.model = model
        return energies

    @staticmethod
    def backward(ctx, grad_energies):
        vectors, q, centre, neighbour, index = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: second derivatives through autograd
            energies = ctx.model.generic_outputs(vectors, centre, neighbour, index)
            (grad,) = torch.autograd.grad(energies, vectors, grad_energies, create_graph=True)
            return grad, None, None, None, None, None
        grad = (grad_energies.index_select(0, centre) * q)[:, None] * vectors
        return grad, None, None, None, None, None


def atomic_outputs(model, m, vectors, centre, neighbour, index):
    """ε_i (n_atoms,) of the closed form, differentiable in `vectors` (n_edges, 3)."""
    return _ClosedForm.apply(vectors, model, m, centre, neighbour, index)


__all__ = ["applies", "atomic_outputs", "energies_and_gradient", "matrices"]
