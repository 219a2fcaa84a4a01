"""Models evaluated on structures as i-PI sends them; results as i-PI expects them.

This is the bridge that `ipi-mts serve`, the PES plugin and in-process use share: wire
arrays in atomic units in, float64 C-contiguous arrays in atomic units out.
"""

from __future__ import annotations

import json

import numpy as np

from .. import units
from ..errors import UserError
from ..neighbors import PairCache
from ..potentials import EnergyModel, evaluate, load_potential
from ..potentials.base import pick_device
from ..state import State


class WireEvaluator:
    """Evaluate `model` on batches of i-PI structures.

    `numbers` are the atomic numbers of one structure (from a template or the launcher);
    when None the model's own default species for that atom count are used (q-TIP4P/F:
    O,H,H triplets), and a model without defaults refuses. Neighbour pairs are searched with a
    skin and kept between calls (`neighbors.PairCache`): i-PI sends the same system every step.
    """

    def __init__(self, model: EnergyModel, numbers=None, device=None, name: str = ""):
        self.device = pick_device(device)
        # inference: forces are gradients with respect to positions only, so autograd need not
        # record what depends on the parameters alone (5-10 % of an evaluation)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.numbers = None if numbers is None else np.asarray(numbers, dtype=np.int64)
        self.name = name
        self._checked_natoms = None
        self.pairs = PairCache()
        self.extras = json.dumps({}, ensure_ascii=True)

    @classmethod
    def from_name(cls, name, component="full", numbers=None, device=None, **params):
        return cls(load_potential(name, component, **params), numbers, device, name=name)

    def _numbers_for(self, n_atoms: int) -> np.ndarray:
        numbers = self.numbers
        if numbers is None:
            numbers = self.model.default_numbers(n_atoms)
            if numbers is None:
                raise UserError(
                    f"model {self.name or type(self.model).__name__} needs the atom species: "
                    "give a template structure file"
                )
        if len(numbers) != n_atoms:
            raise UserError(
                f"i-PI sent {n_atoms} atoms but the species template has {len(numbers)}"
            )
        if self._checked_natoms != n_atoms:
            self.model.check(numbers)
            self._checked_natoms = n_atoms
        return numbers

    def __call__(self, cells_h, positions):
        """cells_h (B, 3, 3) bohr (vectors as columns), positions (B, N, 3) bohr ->
        energies (B,) Ha, forces (B, N, 3) Ha/bohr, virials (B, 3, 3) Ha, extras (B,) str."""
        positions = np.asarray(positions, dtype=np.float64)
        cells_h = np.asarray(cells_h, dtype=np.float64)
        if not (np.isfinite(positions).all() and np.isfinite(cells_h).all()):
            raise UserError("i-PI sent non-finite (NaN or inf) positions or cell: the run has blown up")
        n_structures, n_atoms = positions.shape[:2]
        numbers = self._numbers_for(n_atoms)
        state = State.from_wire(cells_h, positions, numbers, device=self.device)
        state.pairs = self.pairs
        out = evaluate(self.model, state)
        energies = units.energy_to_wire(out.energy.detach().cpu().double().numpy())
        forces = units.forces_to_wire(out.forces.detach().cpu().double().numpy())
        virials = units.energy_to_wire(out.virial.detach().cpu().double().numpy())
        return (
            np.ascontiguousarray(energies, dtype=np.float64),
            np.ascontiguousarray(forces.reshape(n_structures, n_atoms, 3), dtype=np.float64),
            np.ascontiguousarray(virials, dtype=np.float64),
            [self.extras] * n_structures,
        )
