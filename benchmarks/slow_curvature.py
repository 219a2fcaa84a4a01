"""How much of each water molecule's intramolecular stiffness a fast/slow pair puts in its
slow component: what ring-polymer contraction of the slow force throws away.

Contracting the slow force to the centroid (`<force nbeads='1'>`) makes it act on the
centroid only: the beads' spread, and with it the quantum kinetic energy, then feels the
curvature of the fast component alone. That is harmless where the slow component is flat
along the fast intramolecular coordinates (q-TIP4P/F's intermolecular part) and not where
it is not. For every O–H bond and every H–O–H bend of the structure(s), the directional
curvature v·H·v (eV/Å²) of each component along the unit vector v that stretches the bond
(H moves along O→H) or closes the angle (H moves in the molecule's plane, perpendicular to
its bond), and for every molecule along its three rigid rotations about the O (librations,
held by the hydrogen bonds), by a Hessian-vector product (autograd's double backward;
checked against central finite differences of the forces on the first vector). Printed as
a markdown table: the mean over vectors and frames, and the slow component's share of the
sum. A second table gives the RMS of each slow component's force and of its generalised force
on every covalent bond's relative coordinate (`training.losses.bond_forces`, what
`loss.slow_bond_force` penalises).

    OMP_NUM_THREADS=1 python benchmarks/slow_curvature.py --structure inputs/water-64/init.xyz \\
        --pairs water-pair:fast:slow,water-pair-resplit:fast:slow,qtip4pf-intra:full:qtip4pf-inter
"""

import argparse
from dataclasses import replace

import numpy as np
import torch

from ipi_mts.benchmarking import read_frames_xyz
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.state import State
from ipi_mts.training.batches import covalent_bonds
from ipi_mts.training.losses import bond_forces


def directions(atoms):
    """Unit displacement vectors (n_atoms, 3) of each bond stretch and each bend, and of each
    molecule's rigid rotation about its O around the normal, the bisector and the in-plane
    axis perpendicular to both (libration), O,H,H order."""
    out = {"stretch": [], "bend": [], "libration": []}
    pos = atoms.positions
    for o in range(0, len(atoms), 3):
        bonds = [pos[o + k] - pos[o] for k in (1, 2)]
        normal = np.cross(bonds[0], bonds[1])
        for k, bond in enumerate(bonds):
            u = bond / np.linalg.norm(bond)
            for kind, w in (("stretch", u), ("bend", np.cross(normal, u) * (1 if k == 0 else -1))):
                v = np.zeros_like(pos)
                v[o + 1 + k] = w / np.linalg.norm(w)
                out[kind].append(v)
        n = normal / np.linalg.norm(normal)
        bisector = (bonds[0] + bonds[1]) / np.linalg.norm(bonds[0] + bonds[1])
        for axis in (n, bisector, np.cross(n, bisector)):
            v = np.zeros_like(pos)
            for k in (1, 2):
                v[o + k] = np.cross(axis, bonds[k - 1])
            out["libration"].append(v / np.linalg.norm(v))
    return out


def curvatures(model, atoms, vectors):
    """v·H·v for each v, eV/Å²."""
    state = State.from_ase([atoms])
    with torch.enable_grad():
        positions = state.positions.detach().requires_grad_(True)
        energy = model.energy(replace(state, positions=positions))
        (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=True)
        out = []
        for v in vectors:
            v = torch.as_tensor(v, dtype=positions.dtype)
            (hv,) = torch.autograd.grad(grad, positions, grad_outputs=v, retain_graph=True)
            out.append(float((hv * v).sum()))
    return np.array(out)


def finite_difference(model, atoms, v, h=1e-4):
    """−(F(r + h v) − F(r − h v))·v / 2h, eV/Å²."""
    f = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions = atoms.positions + sign * h * v
        f.append(evaluate(model, State.from_ase([moved])).forces.numpy())
    return float(-((f[0] - f[1]) * v).sum() / (2 * h))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structure", default="inputs/water-64/init.xyz",
                        help="an i-PI xyz with O,H,H molecules; every frame is used")
    parser.add_argument("--frames", type=int, default=4, help="at most this many frames, evenly spaced")
    parser.add_argument("--pairs", default="water-pair:fast:slow,qtip4pf-intra:full:qtip4pf-inter",
                        help="MODEL:FAST:SLOW (components of one file) or FAST:full:SLOW (two models), comma-separated")
    args = parser.parse_args()
    frames = list(read_frames_xyz(args.structure))
    frames = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, min(args.frames, len(frames))).astype(int))]
    print(f"{len(frames)} frame(s) of {args.structure}, {len(frames[0]) // 3} molecules\n")
    print("| pair | coordinate | fast eV/Å² | slow eV/Å² | slow share | HVP vs finite difference (first bond, slow) |")
    print("|---|---|---|---|---|---|")
    slows = {}
    for spec in args.pairs.split(","):
        a, b, c = spec.split(":")
        fast, slow = ((load_potential(a, b), load_potential(a, c)) if b != "full"
                      else (load_potential(a), load_potential(c)))
        slows[spec] = slow
        for kind in ("stretch", "bend", "libration"):
            k = {"fast": [], "slow": []}
            for atoms in frames:
                vectors = directions(atoms)[kind]
                k["fast"].append(curvatures(fast, atoms, vectors))
                k["slow"].append(curvatures(slow, atoms, vectors))
            kf, ks = np.concatenate(k["fast"]).mean(), np.concatenate(k["slow"]).mean()
            v0 = directions(frames[0])[kind][0]
            check = f"{k['slow'][0][0]:.4f} vs {finite_difference(slow, frames[0], v0):.4f}"
            print(f"| {spec} | {kind} | {kf:.2f} | {ks:.2f} | {ks / (kf + ks):.3f} | {check} |", flush=True)
    print("\n| pair | slow force RMS meV/Å | its force on the bonds' relative coordinates, RMS meV/Å |")
    print("|---|---|---|")
    for spec, slow in slows.items():
        f, fb = [], []
        for atoms in frames:
            forces = evaluate(slow, State.from_ase([atoms])).forces.detach().double()
            bonds, weights = (torch.as_tensor(x) for x in covalent_bonds(atoms))
            f.append(forces.reshape(-1))
            fb.append(bond_forces(forces, bonds, weights).reshape(-1))
        rms = lambda x: 1000 * float(torch.cat(x).pow(2).mean().sqrt())  # noqa: E731
        print(f"| {spec} | {rms(f):.0f} | {rms(fb):.0f} |", flush=True)


if __name__ == "__main__":
    main()
