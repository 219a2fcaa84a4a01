"""The one place for neighbour lists.

Pairs come from vesin (a C++ cell list, linear in the number of atoms, exact for any cutoff
against any cell: a cutoff longer than half the box simply yields several images of a pair).
Pairs are found on detached coordinates; distances are then recomputed in torch from the
positions and the cell, so that gradients (forces and virial) flow through them.

A `PairCache` (Verlet list) keeps the pairs found with a skin between calls on the same system,
as a force driver evaluates it step after step; see its docstring.
"""

from __future__ import annotations

import numpy as np
import torch
from vesin import NeighborList

from .state import State


class PairCache:
    """Pairs found within cutoff + `skin` (Å), reused while they still hold every pair within
    the cutoff: the same atoms, pbc and cell (exactly), and no atom moved by skin/2 or more
    since the search (|r_ij| ≤ |r_ij⁰| + |Δr_i| + |Δr_j|, the Verlet-list criterion). Per
    (cutoff, full_list) it keeps the searches used in its last `keep` calls (fewer where they
    would hold more than `max_pairs` pairs, 40 bytes each), so that the beads of a ring
    polymer, which i-PI sends one after another, each find their own, and a search that has
    gone stale leaves. It tries the entry used last first (the same structure again:
    classical MD), then from the least recently used on (the next bead of a cycle), so that a
    hit costs one or two checks; `searches`, `calls` and `checks` count what it did.
    With 0.5 Å, the fast model of water-216 on a 0.5 fs step searched once every 9 calls
    (0.3 Å: every 5.6).
    """

    def __init__(self, skin: float = 0.5, keep: int = 32, max_pairs: int = 2**24):
        if not skin > 0:
            raise ValueError(f"pair cache skin {skin} is not a positive length")
        self.skin, self.keep, self.max_pairs = float(skin), int(keep), int(max_pairs)
        self.searches = self.calls = self.checks = 0
        self._entries, self._calls = {}, {}  # per (cutoff, full_list): [positions, cell, pbc, batch, found, last call]

    def pairs(self, positions, cell, pbc, batch, cutoff, full_list):
        """i, j, integer shifts S and the pairs' bounds per structure, possibly a superset."""
        self.calls += 1
        key = (float(cutoff), bool(full_list))
        call = self._calls[key] = self._calls.get(key, 0) + 1
        entries = self._entries[key] = [e for e in self._entries.get(key, []) if e[-1] >= call - self.keep]
        for k in range(-1, len(entries) - 1):  # the last used, then the least recently used on
            self.checks += 1
            if self._still_valid(entries[k], positions, cell, pbc, batch):
                entry = entries.pop(k)
                entry[-1] = call
                entries.append(entry)
                return entry[-2]
        found = _search(positions, cell, pbc, batch, cutoff + self.skin, full_list)
        entries.append([positions.detach().clone(), cell.detach().clone(), pbc, batch, found, call])
        while len(entries) > 1 and (len(entries) > self.keep
                                    or sum(len(entry[-2][0]) for entry in entries) > self.max_pairs):
            entries.pop(0)
        self.searches += 1
        return found

    def _still_valid(self, entry, positions, cell, pbc, batch) -> bool:
        old_positions, old_cell, old_pbc, old_batch = entry[:4]
        if old_positions.shape != positions.shape or old_cell.shape != cell.shape:
            return False
        same = torch.equal(old_pbc, pbc) and torch.equal(old_batch, batch)
        if not (same and torch.equal(old_cell, cell.detach())):
            return False
        moved = torch.linalg.vector_norm(positions.detach() - old_positions, dim=-1).max()
        return bool(moved < 0.5 * self.skin)


def _search(positions, cell, pbc, batch, cutoff, full_list):
    """vesin's pairs closer than `cutoff` per structure: global i, j, integer shifts S (numpy)
    and the bounds of each structure's pairs."""
    calculator = NeighborList(cutoff=float(cutoff), full_list=full_list)
    pos_np = positions.detach().cpu().numpy().astype(np.float64)
    cell_np = cell.detach().cpu().numpy().astype(np.float64)
    pbc_np = pbc.detach().cpu().numpy().astype(bool)
    counts = torch.bincount(batch, minlength=cell.shape[0]).cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ii, jj, ss = [], [], []
    for b, (start, count) in enumerate(zip(starts, counts)):
        box = cell_np[b] if pbc_np[b].any() else np.zeros((3, 3))
        i, j, s = calculator.compute(
            pos_np[start : start + count], box, pbc_np[b], quantities="ijS", copy=True
        )
        ii.append(i.astype(np.int64) + start)
        jj.append(j.astype(np.int64) + start)
        ss.append(s)
    device = positions.device
    i = torch.as_tensor(np.concatenate(ii), device=device)
    j = torch.as_tensor(np.concatenate(jj), device=device)
    shifts = torch.as_tensor(np.concatenate(ss), dtype=positions.dtype, device=device)
    return i, j, shifts, np.concatenate([[0], np.cumsum([len(x) for x in ii])])


def neighbor_pairs(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float,
    full_list: bool = False,
    cache: PairCache | None = None,
):
    """All pairs closer than `cutoff` within each structure.

    positions (n, 3) Å; cell (B, 3, 3) Å rows; pbc (B, 3); batch (n,).
    Returns i, j (n_pairs,) global atom indices and vectors (n_pairs, 3) Å, r_j + S·cell − r_i,
    differentiable with respect to positions and cell. A half list (each pair once) unless
    `full_list`. With a `cache`, the same pairs (in another order) from a search with a skin.
    """
    if cache is None:
        i, j, shifts, bounds = _search(positions, cell, pbc, batch, cutoff, full_list)
    else:
        i, j, shifts, bounds = cache.pairs(positions, cell, pbc, batch, cutoff, full_list)
    # index_select (backward: index_add) is much cheaper than advanced indexing here, and
    # the Cartesian shifts S·cell are one small matrix product per structure (pairs come
    # grouped by structure), not a (n_pairs, 3, 3) gather of the cells
    if cell.shape[0] == 1:
        cartesian = shifts @ cell[0]
    else:
        cartesian = torch.cat(
            [shifts[bounds[b] : bounds[b + 1]] @ cell[b] for b in range(cell.shape[0])]
        )
    vectors = positions.index_select(0, j) - positions.index_select(0, i) + cartesian
    if cache is not None:  # drop the skin's pairs
        return within_cutoff((i, j, vectors), cutoff)
    return i, j, vectors


def within_cutoff(edges, cutoff: float):
    """The edges (i, j, vectors) shorter than `cutoff`: a list made for a longer cutoff, or
    with a skin, cut to a model's (returned as given if none is longer)."""
    i, j, vectors = edges
    keep = (torch.linalg.vector_norm(vectors.detach(), dim=-1) < cutoff).nonzero().squeeze(-1)
    if len(keep) == len(i):
        return i, j, vectors
    return i.index_select(0, keep), j.index_select(0, keep), vectors.index_select(0, keep)


def state_pairs(state: State, cutoff: float, full_list: bool = False):
    """`neighbor_pairs` of a State, through its `pairs` cache if it has one."""
    return neighbor_pairs(
        state.positions, state.cell, state.pbc, state.batch, cutoff, full_list, cache=state.pairs
    )
