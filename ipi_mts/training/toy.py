"""Tiny labelled water data sets for tests and examples (seconds to make, no i-PI).

`write_toy_water` writes frame pairs as `ipi-mts data generate` does (extxyz, info keys
`temperature`, `segment`, `time_fs`, `pair_offset_fs`): each segment is a jittered box of
8 waters (24 atoms, q-TIP4P/F geometry on a 6.2 Å grid) and its partner, every atom moved
by a small random step, as if one outer step later; all labelled with q-TIP4P/F.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def toy_water_frames(n_segments=6, seed=0, step=0.02, pair_offset_fs=2.0, identical_pairs=False):
    """ASE Atoms, two per segment, labelled with q-TIP4P/F (eV, eV/Å)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from .. import testing
    from ..potentials import evaluate, load_potential
    from ..state import State

    rng = np.random.default_rng(seed)
    reference = load_potential("qtip4pf")
    frames = []
    base = testing.water_box(2, 3.1, jitter=0.0, seed=seed)
    for k in range(n_segments):
        jitter = rng.uniform(-0.08, 0.08, size=base.positions.shape)
        first = base.positions.numpy() + jitter
        second = first if identical_pairs else first + rng.normal(scale=step, size=first.shape)
        for j, positions in enumerate((first, second)):
            atoms = Atoms(numbers=base.numbers.numpy(), positions=positions, cell=base.cell[0].numpy(), pbc=True)
            atoms.info.update(
                temperature=300.0, segment=k + 1, time_fs=50.0 * (k + 1) + j * pair_offset_fs,
                bead=0, pair_offset_fs=pair_offset_fs,
            )
            frames.append(atoms)
    state = State.from_ase(frames)
    out = evaluate(reference, state)
    forces = out.forces.detach().numpy()
    offset = 0
    for b, atoms in enumerate(frames):
        n = len(atoms)
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(out.energy[b]), forces=forces[offset : offset + n].copy()
        )
        offset += n
    return frames


def write_toy_water(path, n_segments=6, seed=0, **kwargs) -> Path:
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, toy_water_frames(n_segments, seed, **kwargs), format="extxyz")
    return path


__all__ = ["toy_water_frames", "write_toy_water"]
