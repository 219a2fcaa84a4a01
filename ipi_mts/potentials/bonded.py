"""Bonded terms: polynomials in the bond lengths and bond angles of atoms found bound by their
distance (no topology file, so ring-polymer beads and any atom order work), switched off
smoothly between `switch_on` and `cutoff`:

    E = Σ_bonds a–b  s(r) Σ_{k=1..K} b_k (r − r0)^k
      + Σ_angles a–c–a  s(r₁) s(r₂) [Σ_{k=1..L} a_k (u − u0)^k + a_ru (δ₁ + δ₂)(u − u0) + a_rr δ₁δ₂]

with u = cos θ at the centre c, δ = r − r0 of each arm (r0 of the angle type), s(r) = 1 −
10x³ + 15x⁴ − 6x⁵, x = (r − switch_on)/(cutoff − switch_on) clamped to [0, 1] (C² at both
ends).

Its use here is `resplit` (training/resplit.py): moving the stiff short-range curvature that
a co-trained slow model took on to the fast side of the pair, fast' = fast + E_b and slow' =
slow − E_b, so that E_fast' + E_slow' is the pair's energy unchanged. E is linear in the
coefficients: `features` gives the per-structure value of every monomial, which `energy`
contracts with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from ..errors import UserError
from ..neighbors import state_pairs, within_cutoff
from ..state import State
from .base import EnergyModel


@dataclass
class BondedConfig:
    species: list[int]  # atomic numbers the model accepts (any others: UserError)
    bonds: list[dict] = field(default_factory=list)  # [{"species": [a, b], "r0": Å}]
    angles: list[dict] = field(default_factory=list)  # [{"species": [a, c, a], "r0": Å, "u0": cos θ0}]
    bond_degree: int = 4  # K
    angle_degree: int = 4  # L
    switch_on: float = 1.25  # Å
    cutoff: float = 1.4  # Å
    dtype: str = "float64"

    def __post_init__(self):
        self.species = [int(z) for z in self.species]
        if not 0 < self.switch_on < self.cutoff:
            raise UserError(f"bonded terms need 0 < switch_on < cutoff, got {self.switch_on} and {self.cutoff}")
        if min(self.bond_degree, self.angle_degree) < 1:
            raise UserError("bonded terms need bond_degree and angle_degree of at least 1")
        for kind, entries, n in (("bond", self.bonds, 2), ("angle", self.angles, 3)):
            for entry in entries:
                zs = entry.get("species", [])
                if len(zs) != n or any(int(z) not in self.species for z in zs):
                    raise UserError(f"a {kind} type needs {n} species among {self.species}, got {zs}")
                if kind == "angle" and zs[0] != zs[2]:
                    raise UserError(f"angle types a-c-a need equal arms, got {zs}")
        if self.dtype not in ("float32", "float64"):
            raise UserError(f"bad dtype {self.dtype!r}: choose float32 or float64")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "BondedConfig":
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"unknown bonded-term settings: {', '.join(unknown)}")
        try:
            return cls(**values)
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(f"bad bonded-term settings: {e}") from None


def switch(r: torch.Tensor, on: float, off: float) -> torch.Tensor:
    x = ((r - on) / (off - on)).clamp(0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x * x)


class BondedTerms(EnergyModel):
    """E as in the module docstring; coefficients (eV) in the buffers `bond_coefficients` (one
    row of K per bond type) and `angle_coefficients` (L + 2 per angle type)."""

    architecture = "bonded"

    def __init__(self, config: BondedConfig):
        super().__init__()
        self.config = config
        dtype = getattr(torch, config.dtype)
        self.register_buffer("bond_coefficients", torch.zeros(len(config.bonds), config.bond_degree, dtype=dtype))
        self.register_buffer("angle_coefficients", torch.zeros(len(config.angles), config.angle_degree + 2, dtype=dtype))

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.config.species)

    @property
    def cutoff(self) -> float:
        return float(self.config.cutoff)

    def _coefficient_buffers(self):
        return (self.bond_coefficients, self.angle_coefficients)

    @property
    def n_features(self) -> int:
        return sum(b.numel() for b in self._coefficient_buffers())

    def check(self, numbers) -> None:
        unknown = sorted(set(np.asarray(torch.as_tensor(numbers).cpu()).reshape(-1).tolist()) - set(self.species))
        if unknown:
            raise UserError(f"bonded terms know species {list(self.species)}, not Z={unknown}")

    def set_coefficients(self, flat) -> None:
        flat = torch.as_tensor(flat, dtype=self.bond_coefficients.dtype)
        start = 0
        for buffer in self._coefficient_buffers():
            buffer.copy_(flat[start : start + buffer.numel()].reshape(buffer.shape))
            start += buffer.numel()

    def coefficients(self) -> torch.Tensor:
        return torch.cat([b.reshape(-1) for b in self._coefficient_buffers()])

    def energy(self, state: State, edges=None) -> torch.Tensor:
        return self.features(state, edges) @ self.coefficients().to(state.positions.dtype)

    def bonded_edges(self, state: State, edges=None):
        """The edges (centre i ← neighbour j) within the cutoff: i, j, vectors, lengths r."""
        i, j, vectors = (state_pairs(state, self.cutoff, full_list=True) if edges is None
                         else within_cutoff(edges, self.cutoff))
        return i, j, vectors, torch.linalg.vector_norm(vectors, dim=-1)

    def topology(self, numbers, i, j):
        """Indices into the bonded edges (centres i ← neighbours j) of the terms: per bond type
        its edges, per angle type the edges of its two arms (e1, e2)."""
        zi, zj = numbers.index_select(0, i), numbers.index_select(0, j)
        bonds, angles = [], []
        for bond in self.config.bonds:
            a, b = (int(x) for x in bond["species"])
            bonds.append(((zi == a) & (zj == b) & ((i < j) if a == b else True)).nonzero().squeeze(-1))
        for angle in self.config.angles:
            arm, centre = int(angle["species"][0]), int(angle["species"][1])
            arms = ((zi == centre) & (zj == arm)).nonzero().squeeze(-1)
            angles.append(_pairs_sharing_centre(i.index_select(0, arms), arms))
        return bonds, angles

    def features(self, state: State, edges=None) -> torch.Tensor:
        """(n_structures, n_features): the per-structure sum of every monomial, in the order of
        `coefficients()`, differentiable through autograd. (Gathers by `index_select` and
        powers by `cumprod`: a force call is a few dozen small operations, whose count sets
        its cost.)"""
        c = self.config
        i, j, vectors, r = self.bonded_edges(state, edges)
        bonds, angles = self.topology(state.numbers, i, j)
        s = switch(r, c.switch_on, c.cutoff)
        out = []
        for bond, chosen in zip(c.bonds, bonds):
            d = r.index_select(0, chosen) - float(bond["r0"])
            values = s.index_select(0, chosen)[:, None] * _powers(d, c.bond_degree)
            out.append(self._per_structure(state, i.index_select(0, chosen), values))
        for angle, (e1, e2) in zip(c.angles, angles):
            v1, v2 = vectors.index_select(0, e1), vectors.index_select(0, e2)
            r1, r2 = r.index_select(0, e1), r.index_select(0, e2)
            du = (v1 * v2).sum(-1) / (r1 * r2) - float(angle["u0"])
            d1, d2 = r1 - float(angle["r0"]), r2 - float(angle["r0"])
            monomials = torch.cat([_powers(du, c.angle_degree), torch.stack([(d1 + d2) * du, d1 * d2], -1)], -1)
            weight = (s.index_select(0, e1) * s.index_select(0, e2))[:, None]
            out.append(self._per_structure(state, i.index_select(0, e1), weight * monomials))
        if not out:
            return torch.zeros(state.n_structures, 0, dtype=state.positions.dtype, device=r.device)
        return torch.cat(out, dim=-1)

    has_edge_gradient = True

    def edge_gradient(self, state: State, edges=None):
        """E per structure and ∂E/∂v of the bonded edges, in closed form:

            bond:   ∂/∂v [s P(d)]        = (s' P + s P') v / r
            angle:  ∂/∂v₁ [s₁ s₂ Q]      = (s₁' s₂ Q + s₁ s₂ ∂Q/∂δ₁) v₁ / r₁ + s₁ s₂ ∂Q/∂u ∂u/∂v₁,
                    ∂u/∂v₁ = v₂ / (r₁ r₂) − u v₁ / r₁²   (and alike for v₂)

        gathered per edge as a v + b: a the radial parts, b the cross terms of the angles.
        """
        c = self.config
        i, j, vectors, r = self.bonded_edges(state, edges)
        bonds, angles = self.topology(state.numbers, i, j)
        s, ds = _switch_and_derivative(r, c.switch_on, c.cutoff)
        energies, radial, across = torch.zeros_like(r), torch.zeros_like(r), torch.zeros_like(vectors)
        for coefficients, bond, chosen in zip(self.bond_coefficients, c.bonds, bonds):
            rb, sb = r.index_select(0, chosen), s.index_select(0, chosen)
            p, dp = _polynomial(rb - float(bond["r0"]), coefficients.to(r.dtype))
            energies = energies.index_add(0, chosen, sb * p)
            radial = radial.index_add(0, chosen, (ds.index_select(0, chosen) * p + sb * dp) / rb)
        for coefficients, angle, (e1, e2) in zip(self.angle_coefficients, c.angles, angles):
            coefficients = coefficients.to(r.dtype)
            a_ru, a_rr = coefficients[-2], coefficients[-1]
            v1, v2 = vectors.index_select(0, e1), vectors.index_select(0, e2)
            r1, r2 = r.index_select(0, e1), r.index_select(0, e2)
            s1, s2 = s.index_select(0, e1), s.index_select(0, e2)
            u = (v1 * v2).sum(-1) / (r1 * r2)
            du, d1, d2 = u - float(angle["u0"]), r1 - float(angle["r0"]), r2 - float(angle["r0"])
            p, dp = _polynomial(du, coefficients[:-2])
            w, ru = s1 * s2, a_ru * du
            q = p + ru * (d1 + d2) + a_rr * d1 * d2
            wq_u = w * (dp + a_ru * (d1 + d2))  # s₁ s₂ ∂Q/∂u
            energies = energies.index_add(0, e1, w * q)
            radial = radial.index_add(0, e1, (ds.index_select(0, e1) * s2 * q + w * (ru + a_rr * d2) - wq_u * u / r1) / r1)
            radial = radial.index_add(0, e2, (s1 * ds.index_select(0, e2) * q + w * (ru + a_rr * d1) - wq_u * u / r2) / r2)
            cross = (wq_u / (r1 * r2))[:, None]
            across = across.index_add(0, e1, cross * v2).index_add(0, e2, cross * v1)
        energy = torch.zeros(state.n_structures, dtype=r.dtype, device=r.device)
        energy = energy.index_add(0, state.batch.index_select(0, i), energies)
        return energy, [(i, j, vectors, radial[:, None] * vectors + across)]

    @staticmethod
    def _per_structure(state, centre, values):
        if state.n_structures == 1:
            return values.sum(0, keepdim=True)
        total = torch.zeros(state.n_structures, values.shape[-1], dtype=values.dtype, device=values.device)
        return total.index_add(0, state.batch.index_select(0, centre), values)


def _switch_and_derivative(r: torch.Tensor, on: float, off: float):
    """s(r) (as `switch`) and ds/dr = −30 x²(1 − x)² / (off − on)."""
    x = ((r - on) / (off - on)).clamp(0.0, 1.0)
    x2 = x * x
    return 1.0 - x2 * x * (10.0 - 15.0 * x + 6.0 * x2), (-30.0 / (off - on)) * x2 * (1.0 - x) ** 2


def _polynomial(x: torch.Tensor, coefficients: torch.Tensor):
    """Σ_k c_k x^k (k = 1..K) and its derivative."""
    powers = _powers(x, len(coefficients))
    k = torch.arange(1, len(coefficients) + 1, dtype=x.dtype, device=x.device)
    lower = torch.cat([torch.ones_like(x)[:, None], powers[:, :-1]], dim=1)
    return powers @ coefficients, lower @ (k * coefficients)


def _powers(x: torch.Tensor, degree: int) -> torch.Tensor:
    """(len(x), degree): x, x², …, x^degree."""
    return torch.cumprod(x[:, None].expand(-1, degree), dim=1)


def _pairs_sharing_centre(centre: torch.Tensor, index: torch.Tensor):
    """Every unordered pair of the edges `index` whose centres are equal (no loop over atoms):
    edges sorted by centre, then each offset k pairs position p with p + k."""
    order = torch.argsort(centre, stable=True)
    sorted_centre, sorted_index = centre.index_select(0, order), index.index_select(0, order)
    first, second = [], []
    for k in range(1, len(sorted_centre)):
        same = (sorted_centre[:-k] == sorted_centre[k:]).nonzero().squeeze(-1)
        if len(same) == 0:
            break
        first.append(sorted_index.index_select(0, same))
        second.append(sorted_index.index_select(0, same + k))
    if not first:
        return index[:0], index[:0]
    return torch.cat(first), torch.cat(second)


__all__ = ["BondedConfig", "BondedTerms", "switch"]
