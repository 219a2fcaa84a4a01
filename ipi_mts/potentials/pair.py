"""A fast/slow pair of learned potentials (Fu et al., arXiv 2310.13756): E = E_fast + E_slow.

The fast model (short cutoff, small) carries the stiff short-range interactions and is
evaluated at every inner MTS step; the slow one (longer cutoff, larger) the rest, at every
outer step. `LearnedPair` is itself an EnergyModel (the full energy, both models on one
shared neighbour list) and hands out either part as an EnergyModel of its own:

    pair.component("fast") -> fast model,  "slow" -> slow model,  "full" -> the pair
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

    def __init__(self, fast: EnergyModel, slow: EnergyModel):
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

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.fast.species)

    @property
    def cutoff(self) -> float:
        return max(float(self.fast.cutoff), float(self.slow.cutoff))

    def component(self, name: str) -> EnergyModel:
        if name == "fast":
            return self.fast
        if name == "slow":
            return self.slow
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


__all__ = ["COMPONENTS", "LearnedPair"]
