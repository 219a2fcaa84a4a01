"""Boxes of water molecules to start simulations from."""

from __future__ import annotations

import numpy as np
from ase import Atoms

WATER_MOLAR_MASS = 18.01528  # g/mol
AVOGADRO = 6.02214076e23


def water_box_edge(n_molecules: int, density: float = 0.997) -> float:
    """Edge (Å) of the cubic box holding `n_molecules` waters at `density` (g/cm³)."""
    volume_cm3 = n_molecules * WATER_MOLAR_MASS / AVOGADRO / density
    return (volume_cm3 * 1e24) ** (1.0 / 3.0)


def oriented_waters(centres: np.ndarray, rng: np.random.Generator, r_oh: float = 0.9419,
                    angle_deg: float = 107.4) -> np.ndarray:
    """Positions (3M, 3) Å of M rigid waters (O, H, H; the q-TIP4P/F equilibrium geometry by
    default) centred on `centres` (M, 3), each turned by its own random rotation."""
    half = np.radians(angle_deg) / 2.0
    local = r_oh * np.array([[0.0, 0.0, 0.0],
                             [np.sin(half), 0.0, np.cos(half)],
                             [-np.sin(half), 0.0, np.cos(half)]])
    local -= local.mean(axis=0)
    return np.concatenate([centre + local @ random_rotation(rng).T for centre in centres])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly (Haar) from SO(3)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # uniform over O(3) ...
    if np.linalg.det(q) < 0:  # ... made proper
        q[:, 0] = -q[:, 0]
    return q


def water_box(n_molecules: int, density: float = 0.997, seed: int = 0,
              r_oh: float = 0.9419, angle_deg: float = 107.4) -> Atoms:
    """A cubic periodic box of randomly oriented waters on a simple-cubic lattice, atoms
    ordered O, H, H per molecule (the q-TIP4P/F equilibrium geometry by default). Meant
    to be equilibrated before use."""
    n_side = int(np.ceil(n_molecules ** (1.0 / 3.0)))
    edge = water_box_edge(n_molecules, density)
    rng = np.random.default_rng(seed)
    sites = np.array([(i, j, k) for i in range(n_side) for j in range(n_side) for k in range(n_side)])
    sites = sites[rng.permutation(len(sites))[:n_molecules]]
    positions = oriented_waters((sites + 0.5) * edge / n_side, rng, r_oh, angle_deg)
    return Atoms("OHH" * n_molecules, positions=positions, cell=[edge] * 3, pbc=True)
