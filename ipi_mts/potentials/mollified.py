"""A model seen through a rigid averaging of every triatomic molecule: the mollified slow
force of MOLLY (Izaguirre, Reich, Skeel, J. Chem. Phys. 110, 9853 (1999)).

    E_A(q) = E(A(q)),   F_A = −∇E_A = J_A(q)ᵀ F(A(q))

A(q) replaces each molecule X–Y₂ (the central atom first) by the rigid molecule of bond
length r₀ and angle θ₀ with the same centre of mass, the same bisector b ∝ u₁ + u₂ and the
same in-plane axis e ∝ u₁ − u₂ (u the unit bond vectors):

    c' = R − 2 m_Y r₀ cos(θ₀/2) b / M,   y₁,₂' = c' + r₀ (cos(θ₀/2) b ± sin(θ₀/2) e)

with R the centre of mass and M the molecule's mass. A(q) depends on a molecule only through
R and the directions u₁, u₂: the bond lengths do not enter, a bend symmetric about b leaves
it unchanged, and an asymmetric stretch turns b only as far as it turns the bonds
(O(m_Y/m_X)). So E_A barely follows the bonds' vibrations, and as the slow part of an MTS
split its impulses hardly excite them. E_A is a potential of its own, not E: it is exact
where each molecule is rigid at (r₀, θ₀).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..errors import UserError
from ..state import State
from .base import EnergyModel


def parse_mollify(text: str) -> tuple[float, float]:
    """'rigid:R0:THETA0' (Å, degrees) -> (r0, θ0 in radians)."""
    kind, *values = str(text).split(":")
    try:
        r0, theta = (float(v) for v in values)
    except ValueError:
        r0 = theta = float("nan")
    if kind != "rigid" or not (r0 > 0 and 0 < theta < 180):
        raise UserError(f"mollify takes 'rigid:R0:THETA0' (bond length in Å, angle in degrees), not {text!r}")
    return r0, math.radians(theta)


class RigidMollified(EnergyModel):
    """`model` evaluated at A(q): every molecule X–Y₂ (central atom first, in consecutive
    triples) made rigid with bond length `r0` (Å) and angle `theta0` (rad); see the module."""

    def __init__(self, model: EnergyModel, r0: float, theta0: float):
        super().__init__()
        self.model, self.r0, self.theta0 = model, r0, theta0

    def check(self, numbers) -> None:
        self.model.check(numbers)
        _triples(numbers)

    def default_numbers(self, n_atoms: int):
        return self.model.default_numbers(n_atoms)

    def averaged(self, state: State) -> torch.Tensor:
        """A(q): the positions of the rigid molecules (n_atoms, 3)."""
        from .model_file import ipi_masses

        triples = _triples(state.numbers)
        species = torch.unique(triples)
        table = torch.tensor(ipi_masses(species.tolist()), dtype=state.positions.dtype, device=state.positions.device)
        mass = table[torch.searchsorted(species, triples)].unsqueeze(-1)  # (n_mol, 3, 1) i-PI's masses
        pos = state.positions.reshape(-1, 3, 3)
        cell = state.cell[state.batch.reshape(-1, 3)[:, 0]]  # each molecule's structure's cell
        d = pos[:, 1:] - pos[:, :1]  # (n_mol, 2, 3) bond vectors, to the nearest image
        periodic = torch.linalg.det(cell).abs() > 0
        if bool(periodic.any()):
            frac = torch.linalg.solve(cell.transpose(-1, -2)[:, None], d.unsqueeze(-1)).squeeze(-1)
            d = torch.where(periodic[:, None, None], d - torch.round(frac).detach() @ cell, d)
        u = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
        b = u[:, 0] + u[:, 1]
        b = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True)
        e = u[:, 0] - u[:, 1]
        e = e / torch.linalg.vector_norm(e, dim=-1, keepdim=True)
        m_y, total = mass[:, 1], mass.sum(1)  # each molecule's (n_mol, 1)
        com = pos[:, 0] + m_y * (d[:, 0] + d[:, 1]) / total
        half = self.theta0 / 2
        centre = com - 2 * m_y * self.r0 * math.cos(half) * b / total
        arm = self.r0 * math.cos(half) * b
        side = self.r0 * math.sin(half) * e
        return torch.stack([centre, centre + arm + side, centre + arm - side], dim=1).reshape(-1, 3)

    def energy(self, state: State) -> torch.Tensor:
        return self.model.energy(replace(state, positions=self.averaged(state)))


def _triples(numbers) -> torch.Tensor:
    """The atomic numbers as (n_mol, 3) molecules X–Y₂, or a UserError."""
    numbers = torch.as_tensor(numbers)
    triples = numbers.reshape(-1, 3) if numbers.numel() % 3 == 0 else None
    if (triples is None or not bool((triples[:, 1] == triples[:, 2]).all())
            or bool((triples[:, 0] == triples[:, 1]).any())):
        raise UserError("mollify: rigid needs molecules X-Y2 in consecutive triples, the central atom first")
    return triples
