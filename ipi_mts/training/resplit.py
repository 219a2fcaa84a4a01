"""Resplit a fast/slow pair: move the slow model's share of the bonded stiffness to the fast side.

A co-trained slow model with a long cutoff sees the bonds too and takes on part of their
curvature (for the shipped water pair, most of the H–O–H bend's). That part of the slow force
varies at the bond and bend frequencies, which limits the outer step and is lost when the
slow force is ring-polymer contracted. Bonded polynomial terms T (potentials/bonded.py) fitted
to the slow force by least squares,

    c = argmin Σ_frames Σ_i |F_slow,i + ∂T_c/∂r_i|²      (T linear in c: normal equations)

give the pair fast' = fast + T, slow' = slow − T: the same total energy, a slow force without
its best bonded fit. Bond and angle types (and their r0, cos θ0) are those found in the frames.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from tqdm import tqdm

from ..errors import UserError
from ..potentials import evaluate
from ..potentials.bonded import BondedConfig, BondedTerms
from ..potentials.pair import LearnedPair
from ..state import State


def bonded_types(frames, species, cutoff: float) -> tuple[list[dict], list[dict]]:
    """Bond types a–b and angle types a–c–a present within `cutoff` in `frames`, with the
    mean bond length r0 and mean cos θ0 of each."""
    from ase.neighborlist import neighbor_list

    unknown = sorted({int(z) for atoms in frames for z in atoms.numbers} - set(species))
    if unknown:
        raise UserError(f"the frames hold species Z={unknown} that the pair does not know ({list(species)})")
    lengths, cosines = {}, {}
    for atoms in frames:
        i, j, d, D = neighbor_list("ijdD", atoms, cutoff)
        z = atoms.numbers
        for a, b, r in zip(z[i], z[j], d):
            if a <= b:
                lengths.setdefault((int(a), int(b)), []).append(r)
        for centre in np.unique(i):
            arms = np.flatnonzero(i == centre)
            for p, q in ((p, q) for n, p in enumerate(arms) for q in arms[n + 1 :] if z[j[p]] == z[j[q]]):
                u = D[p] @ D[q] / (d[p] * d[q])
                cosines.setdefault((int(z[j[p]]), int(z[centre]), int(z[j[p]])), []).append((u, d[p], d[q]))
    counts = {z: sum(int((atoms.numbers == z).sum()) for atoms in frames) for z in species}
    # a bond type binds at least half the atoms of its rarer species (not a close contact)
    bonds = [{"species": [a, b], "r0": float(np.mean(r))} for (a, b), r in sorted(lengths.items())
             if len(r) >= 0.5 * min(counts[a], counts[b])]
    bound = {tuple(t["species"]) for t in bonds}
    angles = [{"species": list(key), "u0": float(np.mean([v[0] for v in vals])),
               "r0": float(np.mean([v[1:] for v in vals]))} for key, vals in sorted(cosines.items())
              if tuple(sorted(key[:2])) in bound and len(vals) >= 0.5 * counts[key[1]]]
    if not bonds:
        raise UserError(f"no bonds shorter than the bond cutoff {cutoff} Å in the frames: nothing to resplit")
    return bonds, angles


def fit_transfer(pair: LearnedPair, frames, bond_degree=4, angle_degree=4, switch_on=1.25, cutoff=1.4,
                 ridge=1e-8, quiet=False) -> tuple[BondedTerms, dict]:
    """T fitted to the slow force of `pair` on `frames` (module docstring), and a summary:
    types, RMS slow force before and after, the share of its square that T takes."""
    if not isinstance(pair, LearnedPair):
        raise UserError("resplit needs a fast/slow pair, not a single model")
    if pair.transfer is not None:
        raise UserError("this pair has been resplit already: resplit the original pair")
    bonds, angles = bonded_types(frames, pair.species, cutoff)
    transfer = BondedTerms(BondedConfig(species=list(pair.species), bonds=bonds, angles=angles,
                                        bond_degree=bond_degree, angle_degree=angle_degree,
                                        switch_on=switch_on, cutoff=cutoff))
    m = transfer.n_features
    normal, rhs, slow_sq, n_values = np.zeros((m, m)), np.zeros(m), 0.0, 0
    basis_forces, slow_forces = [], []
    for atoms in tqdm(frames, desc="resplit frames", disable=quiet):
        state = State.from_ase([atoms])
        f_slow = evaluate(pair.slow, state).forces.double().numpy().reshape(-1)
        with torch.enable_grad():
            positions = state.positions.detach().requires_grad_(True)
            features = transfer.features(replace(state, positions=positions))[0]
            g = np.stack([-torch.autograd.grad(features[k], positions, retain_graph=True, allow_unused=True)[0]
                          .reshape(-1).numpy() if features[k].requires_grad else np.zeros(positions.numel())
                          for k in range(m)], axis=1)
        normal += g.T @ g
        rhs += g.T @ f_slow
        slow_sq += float(f_slow @ f_slow)
        n_values += len(f_slow)
        basis_forces.append(g)
        slow_forces.append(f_slow)
    scale = np.sqrt(np.maximum(np.diag(normal), 1e-300))
    scaled = normal / np.outer(scale, scale) + ridge * np.eye(m)
    coefficients = np.linalg.solve(scaled, rhs / scale) / scale
    transfer.set_coefficients(coefficients)
    residual_sq = sum(float(((f - g @ coefficients) ** 2).sum()) for g, f in zip(basis_forces, slow_forces))
    summary = {
        "frames": len(frames),
        "bonds": bonds,
        "angles": angles,
        "slow_force_rms_eV_per_A": float(np.sqrt(slow_sq / n_values)),
        "resplit_slow_force_rms_eV_per_A": float(np.sqrt(residual_sq / n_values)),
        "share_moved": float(1 - residual_sq / slow_sq),
        "settings": {"bond_degree": bond_degree, "angle_degree": angle_degree, "switch_on": switch_on,
                     "cutoff": cutoff, "ridge": ridge},
    }
    return transfer, summary


def resplit_file(pair_file, trajectories, output, every: int = 1, quiet: bool = False, **settings) -> dict:
    """Fit T on every `every`-th frame of `trajectories` (i-PI xyz or extxyz) and write the
    resplit pair to `output` (a new file: an existing one is never overwritten). The summary
    also goes into the new file's metadata ("resplit")."""
    from pathlib import Path

    from ..evaluation import read_trajectory
    from ..potentials import _model_file
    from ..potentials.model_file import load_model, save_model

    output = Path(output)
    if output.exists():
        raise UserError(f"{output} exists: give another --output (nothing is overwritten)")
    if every < 1:
        raise UserError(f"--every must be at least 1, not {every}")
    source = _model_file(str(pair_file))
    pair = load_model(source, dtype="float64")
    frames = [atoms for path in trajectories for atoms in read_trajectory(path)[::every]]
    if not frames:
        raise UserError("no frames in the trajectories")
    pair.check(frames[0].numbers)
    transfer, summary = fit_transfer(pair, frames, quiet=quiet, **settings)
    summary |= {"source": str(source), "trajectories": [str(t) for t in trajectories], "every": every}
    original = load_model(source)  # as saved (dtype), with the fitted T beside it
    metadata = dict(getattr(original, "metadata", {})) | {"resplit": summary}
    save_model(output, LearnedPair(original.fast, original.slow, transfer), metadata=metadata,
               masses=getattr(original, "masses", None))
    return summary


__all__ = ["bonded_types", "fit_transfer", "resplit_file"]
