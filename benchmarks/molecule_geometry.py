"""Mean bond length and angle of the molecules X–Y₂ (central atom first, consecutive triples)
over trajectory frames: the rigid geometry that MOLLY's averaging (`mollify: rigid:R0:THETA0`,
ipi_mts/potentials/mollified.py) takes. Bonds to the nearest image.

    python benchmarks/molecule_geometry.py runs/bench/qtip/reference/nvt/run.pos_0.xyz --skip 0.17
"""

import argparse

import numpy as np

from ipi_mts.evaluation import read_trajectory


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trajectories", nargs="+", help="i-PI xyz or extxyz files")
    parser.add_argument("--skip", type=float, default=0.0, help="fraction of each file's frames left out first")
    args = parser.parse_args()
    lengths, angles = [], []
    for path in args.trajectories:
        frames = read_trajectory(path)
        for atoms in frames[int(args.skip * len(frames)):]:
            pos, cell = atoms.positions.reshape(-1, 3, 3), atoms.cell.array
            d = pos[:, 1:] - pos[:, :1]
            d -= np.round(d @ np.linalg.inv(cell)) @ cell
            r = np.linalg.norm(d, axis=-1)
            lengths.append(r.ravel())
            angles.append(np.degrees(np.arccos((d[:, 0] * d[:, 1]).sum(-1) / (r[:, 0] * r[:, 1]))))
    lengths, angles = np.concatenate(lengths), np.concatenate(angles)
    print(f"bond {lengths.mean():.3f} ± {lengths.std():.3f} Å, angle {angles.mean():.1f} ± {angles.std():.1f}° "
          f"({len(angles)} molecules): mollify: rigid:{lengths.mean():.3f}:{angles.mean():.1f}")


if __name__ == "__main__":
    main()
