"""Labelled frames as tensors on the training device, and mini-batches of them.

Frames that share a `segment` (the frame pairs of `ipi-mts data generate`: a frame and its
partner one outer MTS step later) form a group. With the smoothness penalty on, a batch is
built from whole groups, so that both frames of every pair are in it; otherwise every frame
is its own group.

With `bonds`, every frame also holds its covalent bonds (ASE's natural cutoffs × 1.2) and,
for each bond (i, j), the weights that move its atoms apart by a vector d while their
centre of mass stays: x_i −= m_j/(m_i+m_j) d, x_j += m_i/(m_i+m_j) d (the bond
penalties of `losses`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..state import State


@dataclass
class Frame:
    state: State  # one structure: positions (n, 3) Å float64, on the training device
    energy: float  # eV
    forces: torch.Tensor  # (n, 3) eV/Å float64
    key: tuple  # (trajectory, segment): frames with one key form a pair
    time_fs: float  # fs along its trajectory (0 if unknown)
    bonds: torch.Tensor | None = None  # (k, 2) atom indices of the covalent bonds
    bond_weights: torch.Tensor | None = None  # (k, 2) −m_j/(m_i+m_j), m_i/(m_i+m_j)


@dataclass
class Batch:
    state: State  # the frames' structures, concatenated
    energy: torch.Tensor  # (B,) eV, reference
    forces: torch.Tensor  # (n_atoms, 3) eV/Å, reference
    n_atoms: torch.Tensor  # (B,) atoms per structure (float64, to divide energies)
    frames: list[int]  # indices into the FrameSet
    pair_first: torch.Tensor  # (m,) atom indices in the batch of the first frame of each pair
    pair_second: torch.Tensor  # (m,) the same atoms one outer step later
    bonds: torch.Tensor | None = None  # (K, 2) atom indices in the batch (FrameSet with bonds)
    bond_weights: torch.Tensor | None = None  # (K, 2)


def covalent_bonds(atoms) -> tuple[np.ndarray, np.ndarray]:
    """(bonds (k, 2), weights (k, 2)) of `atoms`: the pairs i < j closer than 1.2 × the sum
    of their covalent radii (minimum image), and −m_j/(m_i+m_j), m_i/(m_i+m_j)."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    keep = i < j
    bonds = np.stack([i[keep], j[keep]], axis=1).astype(np.int64)
    m = atoms.get_masses()[bonds]
    return bonds, np.stack([-m[:, 1], m[:, 0]], axis=1) / m.sum(axis=1, keepdims=True)


def frame_from_atoms(atoms, device, index: int = 0, bonds: bool = False) -> Frame:
    state = State.from_ase([atoms], dtype=torch.float64, device=device)
    info = atoms.info
    key = (str(info.get("trajectory", "")), info.get("segment", f"frame-{index}"))
    frame = Frame(
        state=state,
        energy=float(atoms.get_potential_energy()),
        forces=torch.as_tensor(atoms.get_forces(), dtype=torch.float64, device=device),
        key=key,
        time_fs=float(info.get("time_fs", 0.0)),
    )
    if bonds:
        b, w = covalent_bonds(atoms)
        frame.bonds = torch.as_tensor(b, device=device)
        frame.bond_weights = torch.as_tensor(w, dtype=torch.float64, device=device)
    return frame


class FrameSet:
    """Frames on a device, their groups (frame pairs) and batching."""

    def __init__(self, atoms_list, device="cpu", group_pairs: bool = False, bonds: bool = False):
        self.frames = [frame_from_atoms(a, device, k, bonds) for k, a in enumerate(atoms_list)]
        self.device = torch.device(device)
        by_key: dict = {}
        for k, frame in enumerate(self.frames):
            by_key.setdefault(frame.key, []).append(k)
        self.pair_groups = [sorted(v, key=lambda k: self.frames[k].time_fs) for v in by_key.values()]
        self.group_pairs = group_pairs
        self.groups = self.pair_groups if group_pairs else [[k] for k in range(len(self.frames))]

    def __len__(self):
        return len(self.frames)

    @property
    def n_pairs(self) -> int:
        """Frame pairs usable by the smoothness penalty (same atoms, consecutive in time)."""
        return sum(len(self._pairs_of(g)) for g in self.pair_groups)

    def _pairs_of(self, group):
        out = []
        for a, b in zip(group[:-1], group[1:]):
            fa, fb = self.frames[a], self.frames[b]
            if fa.state.numbers.shape == fb.state.numbers.shape and bool(
                (fa.state.numbers == fb.state.numbers).all()
            ):
                out.append((a, b))
        return out

    def batches(self, order, batch_size: int) -> list[list[int]]:
        """Groups taken in `order` (indices into `groups`), packed into batches of at least
        `batch_size` frames (whole groups; the last batch may be smaller)."""
        out, current = [], []
        for g in order:
            current.extend(self.groups[int(g)])
            if len(current) >= batch_size:
                out.append(current)
                current = []
        if current:
            out.append(current)
        return out

    def all_batches(self, batch_size: int) -> list[list[int]]:
        """Every frame once, in order, `batch_size` at a time (for evaluation)."""
        n = len(self.frames)
        return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]

    def collate(self, indices) -> Batch:
        frames = [self.frames[k] for k in indices]
        counts = [f.state.positions.shape[0] for f in frames]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        device = self.device
        state = State(
            positions=torch.cat([f.state.positions for f in frames]),
            numbers=torch.cat([f.state.numbers for f in frames]),
            cell=torch.cat([f.state.cell for f in frames]),
            pbc=torch.cat([f.state.pbc for f in frames]),
            batch=torch.cat(
                [torch.full((n,), b, dtype=torch.long, device=device) for b, n in enumerate(counts)]
            ),
        )
        position = {k: p for p, k in enumerate(indices)}
        first, second = [], []
        if self.group_pairs:
            seen = set()
            for k in indices:
                key = self.frames[k].key
                if key in seen:
                    continue
                seen.add(key)
                group = [j for j in indices if self.frames[j].key == key]
                group.sort(key=lambda j: self.frames[j].time_fs)
                for a, b in self._pairs_of(group):
                    n = counts[position[a]]
                    first.append(np.arange(n) + starts[position[a]])
                    second.append(np.arange(n) + starts[position[b]])
        bonds = weights = None
        if frames and frames[0].bonds is not None:
            bonds = torch.cat([f.bonds + int(s) for f, s in zip(frames, starts)])
            weights = torch.cat([f.bond_weights for f in frames])
        as_index = lambda parts: torch.as_tensor(  # noqa: E731
            np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64), dtype=torch.long, device=device
        )
        return Batch(
            state=state,
            energy=torch.tensor([f.energy for f in frames], dtype=torch.float64, device=device),
            forces=torch.cat([f.forces for f in frames]),
            n_atoms=torch.tensor(counts, dtype=torch.float64, device=device),
            frames=list(indices),
            pair_first=as_index(first),
            pair_second=as_index(second),
            bonds=bonds,
            bond_weights=weights,
        )


def spread(items: list, n: int | None) -> list:
    """At most `n` of `items`, evenly spread (all of them if n is None or larger)."""
    if n is None or n >= len(items):
        return list(items)
    keep = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[k] for k in keep]


__all__ = ["Batch", "Frame", "FrameSet", "covalent_bonds", "frame_from_atoms", "spread"]
