"""Small systems for the map tests, in i-PI atomic units (float64, seeded)."""

from __future__ import annotations

import numpy as np
import torch

from ipi_mts import testing, units
from ipi_mts.maps import GeneratingFunction, MidpointMap, MomentumCorrection
from ipi_mts.potentials import load_potential
from ipi_mts.potentials.equivariant import EquivariantConfig

AMU = {1: 1.008, 8: 15.999}
KT_EV = 0.025852  # 300 K


def water(n_molecules: int = 2, seed: int = 0, temperature_scale: float = 1.0):
    """`n_molecules` waters from a 2x2x2 box (6.2 Å, periodic) with thermal momenta:
    q (n, 3) bohr, p (n, 3) a.u., masses (n,) a.u., h (3, 3) bohr columns, numbers (n,)."""
    box = testing.water_box(2, seed=seed)
    n = 3 * n_molecules
    q = units.positions_to_wire(box.positions[:n].clone())
    numbers = box.numbers[:n].clone()
    masses = torch.tensor([AMU[int(z)] for z in numbers], dtype=torch.float64) * units.AMU
    gen = torch.Generator().manual_seed(seed)
    kt = units.energy_to_wire(KT_EV) * temperature_scale
    p = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.sqrt(masses * kt)[:, None]
    p = p - masses[:, None] * (p.sum(0) / masses.sum())  # no centre-of-mass drift
    h = torch.as_tensor(units.cell_to_wire(box.cell[0].numpy()))
    return q, p, masses, h, numbers


def correction(seed: int = 0, scale: float = 0.02) -> MomentumCorrection:
    """A small random (untrained) H_θ for water, per-atom outputs scaled by `scale` eV."""
    config = EquivariantConfig(
        species=(1, 8), cutoff=3.0, num_features=8, lmax=1, num_layers=2, num_basis=6,
        radial_hidden=16, readout_hidden=8, avg_num_neighbors=4.0, dtype="float64",
    )
    model = MomentumCorrection(config, seed=seed)
    model.set_scale_shift(scale)
    return model


def water_map(timestep_fs: float = 1.0, learned: bool = True, **kwargs) -> MidpointMap:
    potential = load_potential("qtip4pf")
    generating = GeneratingFunction(potential, timestep_fs, correction() if learned else None)
    return MidpointMap(generating, **(dict(tol=1e-13, max_iter=100) | kwargs))


def random_orthogonal(seed: int, improper: bool = False) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return torch.as_tensor(-q if improper else q)
