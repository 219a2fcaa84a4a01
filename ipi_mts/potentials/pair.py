"""A fast/slow pair of learned potentials (Fu et al., arXiv 2310.13756): E = E_fast + E_slow.

The fast model (short cutoff, small) carries the stiff short-range interactions and is
evaluated at every inner MTS step; the slow one (longer cutoff, larger) the rest, at every
outer step. `LearnedPair` is itself an EnergyModel (the full energy, both models on one
shared neighbour list) and hands out either part as an EnergyModel of its own:

    pair.component("fast") -> fast model,  "slow" -> slow model,  "full" -> the pair

A pair may carry a `transfer` model T (bonded.py, made by `ipi-mts resplit`): then the
components are fast + T and slow − T, and the full energy stays fast + slow.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..neighbors import state_pairs
from ..state import State
from .base import EnergyModel

COMPONENTS = ("fast", "slow", "full")


class LearnedPair(EnergyModel):
    """E = fast(state) + slow(state). Both models must know the same species and take
    `energy(state, edges=(i, j, vectors))`, a full neighbour list at least as long as their
    cutoff (as `EquivariantPotential` does)."""

    def __init__(self, fast: EnergyModel, slow: EnergyModel, transfer: EnergyModel | None = None):
        super().__init__()
        fast_species = tuple(getattr(fast, "species", ()))
        slow_species = tuple(getattr(slow, "species", ()))
        if fast_species != slow_species:
            raise UserError(
                f"fast and slow models know different species: {list(fast_species)} and "
                f"{list(slow_species)}"
            )
        self.fast = fast
        self.slow = slow
        self.transfer = transfer
        if transfer is not None:
            self.parts = torch.nn.ModuleDict({"fast": Shifted(fast, transfer, 1.0), "slow": Shifted(slow, transfer, -1.0)})

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.fast.species)

    @property
    def cutoff(self) -> float:
        return max(float(self.fast.cutoff), float(self.slow.cutoff))

    def component(self, name: str) -> EnergyModel:
        if name in ("fast", "slow"):
            return self.parts[name] if self.transfer is not None else getattr(self, name)
        if name == "full":
            return self
        raise UserError(f"unknown component {name!r}: choose one of {', '.join(COMPONENTS)}")

    def check(self, numbers) -> None:
        self.fast.check(numbers)
        self.slow.check(numbers)

    def energy(self, state: State) -> torch.Tensor:
        # one neighbour list at the longer cutoff; each model keeps its own pairs of it
        edges = state_pairs(state, self.cutoff, full_list=True)
        return self.fast.energy(state, edges=edges) + self.slow.energy(state, edges=edges)


class Shifted(EnergyModel):
    """E = base + sign · transfer, on one neighbour list: a component of a resplit pair."""

    def __init__(self, base: EnergyModel, transfer: EnergyModel, sign: float):
        super().__init__()
        self.base, self.transfer, self.sign = base, transfer, sign

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.base.species)

    @property
    def cutoff(self) -> float:
        return max(float(self.base.cutoff), float(self.transfer.cutoff))

    def check(self, numbers) -> None:
        self.base.check(numbers)

    def energy(self, state: State, edges=None) -> torch.Tensor:
        if edges is None:
            edges = state_pairs(state, self.cutoff, full_list=True)
        return self.base.energy(state, edges=edges) + self.sign * self.transfer.energy(state, edges=edges)

    @property
    def has_edge_gradient(self) -> bool:
        return self.base.has_edge_gradient and self.transfer.has_edge_gradient

    def edge_gradient(self, state: State, edges=None):
        if edges is None:
            edges = state_pairs(state, self.cutoff, full_list=True)
        (base, base_parts), (transfer, parts) = (m.edge_gradient(state, edges) for m in (self.base, self.transfer))
        return base + self.sign * transfer, base_parts + [(i, j, v, self.sign * g) for i, j, v, g in parts]


__all__ = ["COMPONENTS", "LearnedPair", "Shifted"]
