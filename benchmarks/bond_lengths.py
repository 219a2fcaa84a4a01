"""Intramolecular O–H bond-length statistics of water runs (i-PI xyz trajectories whose atoms
come as O, H, H per molecule, unwrapped as `ipi-mts bench` writes them): mean, standard
deviation, skewness and kurtosis, and the histogram around the peak. Finer than g_OH's first
peak: it tells a wider distribution from a differently shaped one.

    python benchmarks/bond_lengths.py runs/bench/learned-216/{reference,pair-2} [--skip 0.17]

Each argument is a bench method folder (its nvt/run.pos_0.xyz) or a trajectory file; the first
`--skip` fraction of the frames (the equilibration) is left out.
"""

import argparse
from pathlib import Path

import ase.io
import numpy as np

EDGES = np.arange(0.91, 1.03, 0.01)  # Å: the histogram printed around the peak


def bond_lengths(path: Path, skip: float) -> np.ndarray:
    frames = ase.io.read(path, ":")
    lengths = []
    for atoms in frames[int(len(frames) * skip):]:
        oxygens = np.flatnonzero(atoms.numbers == 8)
        if not (atoms.numbers[oxygens + 1] == 1).all() or not (atoms.numbers[oxygens + 2] == 1).all():
            raise SystemExit(f"{path}: atoms are not ordered O, H, H per molecule")
        q = atoms.positions
        lengths += [np.linalg.norm(q[oxygens + k] - q[oxygens], axis=1) for k in (1, 2)]
    return np.concatenate(lengths)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="bench method folders or trajectory files")
    parser.add_argument("--skip", type=float, default=1 / 6, help="leading fraction left out (default 1/6)")
    args = parser.parse_args()
    print("| run | mean Å | std Å | skewness | kurtosis | "
          + " | ".join(f"{a:.2f}–{b:.2f}" for a, b in zip(EDGES[:-1], EDGES[1:])) + " |")
    print("|---" * (5 + len(EDGES) - 1) + "|")
    for run in args.runs:
        path = Path(run)
        if path.is_dir():
            path = path / "nvt" / "run.pos_0.xyz"
        r = bond_lengths(path, args.skip)
        z = (r - r.mean()) / r.std()
        density = np.histogram(r, EDGES)[0] / len(r) / np.diff(EDGES)
        print(f"| {run} | {r.mean():.4f} | {r.std():.4f} | {(z ** 3).mean():+.2f} | {(z ** 4).mean():.2f} | "
              + " | ".join(f"{d:.2f}" for d in density) + " |")


if __name__ == "__main__":
    main()
