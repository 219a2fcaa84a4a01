"""Any ASE calculator as a reference potential: `--model ase:NAME` (e.g. `ase:EMT`).

NAME is one of ASE's calculator names (`ase.calculators.calculator.names`, any case); the
model's parameters go to the calculator's constructor. ASE works in eV and Å like every
model here, so nothing converts. The energy is an autograd function of positions and cell
whose gradients are ASE's own forces and stress:

    ∂E/∂r_i = −F_i,     ∂E/∂C = (M C⁻¹)ᵀ,   M = V σ + Σ_i F_i ⊗ r_i

for the cell C (vectors as rows, volume V) and ASE's stress σ = (1/V) ∂E/∂ε: under the
strain r -> r(1+ε)ᵀ, C -> C(1+ε)ᵀ, ∂E/∂ε = −Σ_i F_i ⊗ r_i + (∂E/∂C)ᵀ C = Vσ, so that
`evaluate` returns the virial W = −∂E/∂ε = −Vσ. A structure without periodicity gets no
cell gradient. No second derivatives (not for training). The species
come from the structure (`--template`): i-PI sends none.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ..state import State
from .base import EnergyModel


def calculator_class(name: str):
    """ASE's calculator class called `name` (any case), or a UserError listing them."""
    from ase.calculators import calculator

    key = name.strip().lower()
    if key not in calculator.names:
        raise UserError(
            f"unknown ASE calculator {name!r}; ASE knows: {', '.join(calculator.names)}"
        )
    return calculator.get_calculator_class(key)


class _ASEEnergy(torch.autograd.Function):
    """energies (B,) of positions (n, 3) and cells (B, 3, 3); gradients from ASE."""

    @staticmethod
    def forward(ctx, positions, cell, model, state):
        energies, grad_r, grad_c = model.compute(state, positions, cell)
        ctx.save_for_backward(grad_r, grad_c)
        ctx.batch = state.batch
        return energies

    @staticmethod
    def backward(ctx, grad_energies):
        grad_r, grad_c = ctx.saved_tensors
        per_atom = grad_energies.index_select(0, ctx.batch)[:, None]
        return per_atom * grad_r, grad_energies[:, None, None] * grad_c, None, None


class ASECalculator(EnergyModel):
    """E of every structure from an ASE calculator; see the module docstring."""

    def __init__(self, name: str, **params):
        super().__init__()
        self.name = name
        cls = calculator_class(name)
        try:
            self.calculator = cls(**params)
        except TypeError as e:
            raise UserError(f"bad parameters for ASE calculator {name!r}: {e}") from None

    def extra_repr(self) -> str:
        return f"calculator={type(self.calculator).__name__}"

    def check(self, numbers) -> None:
        numbers = np.asarray(torch.as_tensor(numbers).cpu(), dtype=np.int64).reshape(-1)
        if (numbers <= 0).any():
            raise UserError(f"ASE calculator {self.name} needs the atom species: give --template")

    def energy(self, state: State) -> torch.Tensor:
        return _ASEEnergy.apply(state.positions, state.cell, self, state)

    def compute(self, state: State, positions: torch.Tensor, cell: torch.Tensor):
        """Energies (B,), ∂E/∂r (n, 3), ∂E/∂C (B, 3, 3) from ASE, as tensors like positions."""
        from ase import Atoms

        self.check(state.numbers)
        r = positions.detach().cpu().double().numpy()
        cells = cell.detach().cpu().double().numpy()
        pbc = state.pbc.cpu().numpy()
        batch = state.batch.cpu().numpy()
        numbers = state.numbers.cpu().numpy()
        energies = np.zeros(len(cells))
        grad_r = np.zeros_like(r)
        grad_c = np.zeros_like(cells)
        for b in range(len(cells)):
            mine = batch == b
            atoms = Atoms(numbers=numbers[mine], positions=r[mine], cell=cells[b], pbc=pbc[b])
            atoms.calc = self.calculator
            try:
                energies[b] = atoms.get_potential_energy()
                forces = atoms.get_forces()
                if pbc[b].all():
                    stress = atoms.get_stress(voigt=False)
            except (NotImplementedError, KeyError, ValueError) as e:
                raise UserError(f"ASE calculator {self.name} failed: {e}") from None
            grad_r[mine] = -forces
            if pbc[b].all():
                m = atoms.get_volume() * stress + forces.T @ r[mine]
                grad_c[b] = (m @ np.linalg.inv(cells[b])).T
        like = dict(dtype=positions.dtype, device=positions.device)
        return (
            torch.as_tensor(energies, **like),
            torch.as_tensor(grad_r, **like),
            torch.as_tensor(grad_c, **like),
        )
