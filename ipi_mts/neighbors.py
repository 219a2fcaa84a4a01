"""The one place for neighbour lists.

Pairs come from vesin (a C++ cell list, linear in the number of atoms, exact for any cutoff
against any cell: a cutoff longer than half the box simply yields several images of a pair).
Pairs are found on detached coordinates; distances are then recomputed in torch from the
positions and the cell, so that gradients (forces and virial) flow through them.
"""

from __future__ import annotations

import numpy as np
import torch
from vesin import NeighborList

from .state import State


def neighbor_pairs(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float,
    full_list: bool = False,
):
    """All pairs closer than `cutoff` within each structure.

    positions (n, 3) Å; cell (B, 3, 3) Å rows; pbc (B, 3); batch (n,).
    Returns i, j (n_pairs,) global atom indices and vectors (n_pairs, 3) Å, r_j + S·cell − r_i,
    differentiable with respect to positions and cell. A half list (each pair once) unless
    `full_list`.
    """
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
    # index_select (backward: index_add) is much cheaper than advanced indexing here, and
    # the Cartesian shifts S·cell are one small matrix product per structure (pairs come
    # grouped by structure), not a (n_pairs, 3, 3) gather of the cells
    bounds = np.concatenate([[0], np.cumsum([len(x) for x in ii])])
    if cell.shape[0] == 1:
        cartesian = shifts @ cell[0]
    else:
        cartesian = torch.cat(
            [shifts[bounds[b] : bounds[b + 1]] @ cell[b] for b in range(cell.shape[0])]
        )
    vectors = positions.index_select(0, j) - positions.index_select(0, i) + cartesian
    return i, j, vectors


def state_pairs(state: State, cutoff: float, full_list: bool = False):
    """`neighbor_pairs` of a State."""
    return neighbor_pairs(state.positions, state.cell, state.pbc, state.batch, cutoff, full_list)
