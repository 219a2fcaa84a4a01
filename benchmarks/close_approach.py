"""What each water model does when two molecules are pushed into each other: the energy as one
molecule, moved rigidly, brings one of its atoms to a distance r from an atom of another, and
how close unrelated atoms come in trajectories.

A learned potential knows only the distances its training data visited; nothing but a prior
makes it repulsive below them. For each species pair (H···H, O···H, O···O, between different
molecules) the molecule holding the second atom of the closest such pair of the first frame is
translated along the line between the two atoms until they are r apart; printed: E(r) − E(r₀)
in eV, r₀ their distance before the move. A physical model rises steeply (q-TIP4P/F: the O–O
Lennard-Jones wall and the Coulomb repulsion of like charges); a model that falls lets a
trajectory collapse into the hole. With --trajectories, the closest intermolecular distance of
each species pair over all frames (molecules by index: O,H,H order), and how many frames
come closer than --below.

    OMP_NUM_THREADS=1 python benchmarks/close_approach.py --structure inputs/water-64/init.xyz \\
        --models water-pair,water-pair:fast,water-pair:slow,water-baseline,qtip4pf \\
        --trajectories 'runs/bench/placement-resplit/reference*/nvt/run.pos_0.xyz'
"""

import argparse
import glob

import numpy as np

from ipi_mts.benchmarking import read_frames_xyz
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.state import State

DISTANCES = (1.6, 1.2, 1.0, 0.8, 0.6, 0.4, 0.2)
PAIRS = (("H", "H"), ("O", "H"), ("O", "O"))


def closest(atoms, a, b):
    """(i, j, r): the closest atoms of species a and b of different molecules (minimum image)."""
    symbols = np.array(atoms.get_chemical_symbols())
    molecule = np.arange(len(atoms)) // 3
    best = (None, None, np.inf)
    for i in np.flatnonzero(symbols == a):
        js = np.flatnonzero((symbols == b) & (molecule != molecule[i]))
        d = atoms.get_distances(i, js, mic=True)
        k = int(np.argmin(d))
        if d[k] < best[2]:
            best = (int(i), int(js[k]), float(d[k]))
    return best


def pushed(atoms, i, j, r):
    """A copy with j's molecule translated rigidly along i→j so that |r_i − r_j| = r."""
    vector = atoms.get_distance(i, j, mic=True, vector=True)
    d = np.linalg.norm(vector)
    moved = atoms.copy()
    start = 3 * (j // 3)
    moved.positions[start : start + 3] += vector / d * (r - d)
    return moved


def scan(models, atoms):
    print("| pair | r₀ Å | model | " + " | ".join(f"{r} Å" for r in DISTANCES) + " |")
    print("|---|---|---|" + "---|" * len(DISTANCES))
    for a, b in PAIRS:
        i, j, r0 = closest(atoms, a, b)
        for name, model in models.items():
            e0 = float(evaluate(model, State.from_ase([atoms])).energy)
            e = [float(evaluate(model, State.from_ase([pushed(atoms, i, j, r)])).energy) - e0 for r in DISTANCES]
            print(f"| {a}···{b} | {r0:.2f} | {name} | " + " | ".join(f"{x:+.2f}" for x in e) + " |", flush=True)


def closest_in_trajectories(paths, below):
    print(f"\n| trajectory | frames | closest H···H Å | O···H Å | O···O Å | frames with H···H < {below} Å |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        rows = [[closest(atoms, a, b)[2] for a, b in PAIRS] for atoms in read_frames_xyz(path)]
        d = np.array(rows)
        print(f"| {path} | {len(d)} | {d[:, 0].min():.2f} | {d[:, 1].min():.2f} | {d[:, 2].min():.2f} | "
              f"{int((d[:, 0] < below).sum())} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structure", default="inputs/water-64/init.xyz", help="an i-PI xyz, O,H,H molecules")
    parser.add_argument("--models", default="water-pair,water-pair:fast,water-pair:slow,water-baseline,qtip4pf",
                        help="comma-separated NAME or NAME:COMPONENT")
    parser.add_argument("--trajectories", default="", help="a glob of i-PI xyz trajectories to scan")
    parser.add_argument("--below", type=float, default=1.0, help="H···H distance (Å) counted as a collapse")
    args = parser.parse_args()
    atoms = next(read_frames_xyz(args.structure))
    models = {spec: load_potential(*spec.split(":")) for spec in args.models.split(",")}
    scan(models, atoms)
    paths = sorted(glob.glob(args.trajectories)) if args.trajectories else []
    if paths:
        closest_in_trajectories(paths, args.below)


if __name__ == "__main__":
    main()
