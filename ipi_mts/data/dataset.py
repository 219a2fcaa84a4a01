"""Labelled structures from extxyz (ours or a user's, e.g. DFT) and splits that keep
neighbouring frames of a trajectory together."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import UserError


def read_frames(paths):
    """ASE Atoms with energy (eV) and forces (eV/Å) from extxyz files; each frame gets
    `info['trajectory']` (file and temperature) and keeps its order in `info['order']`."""
    frames = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for k, atoms in enumerate(read_extxyz(path)):
            try:
                atoms.get_potential_energy(), atoms.get_forces()
            except Exception:
                raise UserError(f"{path}: frame {k} has no energy and forces") from None
            atoms.info["trajectory"] = f"{path}:{atoms.info.get('temperature', '')}:{atoms.info.get('bead', '')}"
            atoms.info["order"] = k
            frames.append(atoms)
    if not frames:
        raise UserError("no frames in the data files")
    return frames


def read_extxyz(path) -> list:
    """All frames of an extxyz file as ASE Atoms; a missing or unreadable file is a UserError."""
    import ase.io

    try:
        return ase.io.read(path, index=":", format="extxyz")
    except FileNotFoundError:
        raise UserError(f"data file {path} does not exist") from None
    except Exception as e:  # ASE raises many types for malformed files
        raise UserError(f"cannot read {path} as extxyz: {e}") from None


def split(frames, fractions=(0.8, 0.1, 0.1)):
    """Train/validation/test lists: each trajectory is cut, in time order, into contiguous
    blocks of the given fractions, so that a test frame's neighbours in time are test frames
    too (frame pairs made for the smoothness penalty share a `segment` and stay together)."""
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise UserError(f"split fractions {fractions} must be non-negative and add up to 1")
    by_trajectory = defaultdict(list)
    for atoms in frames:
        by_trajectory[atoms.info["trajectory"]].append(atoms)
    parts = [[] for _ in fractions]
    bounds = np.cumsum(fractions)[:-1]
    for trajectory in by_trajectory.values():
        trajectory.sort(key=lambda a: (a.info.get("time_fs", 0.0), a.info["order"]))
        segments = []
        for atoms in trajectory:
            key = atoms.info.get("segment", atoms.info["order"])
            if not segments or segments[-1][0] != key:
                segments.append((key, []))
            segments[-1][1].append(atoms)
        cuts = np.round(bounds * len(segments)).astype(int)
        for part, chunk in zip(parts, np.split(np.arange(len(segments)), cuts)):
            for s in chunk:
                part.extend(segments[s][1])
    return parts
