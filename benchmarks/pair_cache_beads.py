"""The Verlet pair cache with the beads of a ring polymer, which i-PI sends to a driver one
after another: a cache of one search (every bead then searches anew) against one that keeps a
search per bead (`neighbors.PairCache(keep=32)`, the default).

The beads are the structure with every atom displaced by a Gaussian of `--spread` Å per
component (hydrogen's ring polymer at 300 K spans about 0.15 Å), and every round of calls
moves each atom by `--step` Å per component (0.5 fs of thermal motion is about 0.005 Å). The
two caches are timed in alternation, `--rounds` rounds of all beads each, five times; medians.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/pair_cache_beads.py \\
        --structure inputs/water-216/init.xyz --model water-pair --component fast --beads 8
"""

import argparse
import statistics
import time

import numpy as np

from ipi_mts import units
from ipi_mts.evaluation import read_trajectory
from ipi_mts.neighbors import PairCache
from ipi_mts.server.evaluator import WireEvaluator


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structure", default="inputs/water-216/init.xyz")
    parser.add_argument("--model", default="water-pair")
    parser.add_argument("--component", default="fast")
    parser.add_argument("--beads", type=int, default=8)
    parser.add_argument("--spread", type=float, default=0.1, help="bead displacement, Å per component")
    parser.add_argument("--step", type=float, default=0.005, help="motion per round, Å per component")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    atoms = read_trajectory(args.structure)[0]
    rng = np.random.default_rng(0)
    beads = [atoms.positions + rng.normal(0.0, args.spread, atoms.positions.shape) for _ in range(args.beads)]
    cells = units.cell_to_wire(atoms.cell.array)[None]
    caches = {"one search": 1, "a search per bead": 32}
    evaluators = {}
    for name, keep in caches.items():
        evaluators[name] = WireEvaluator.from_name(args.model, args.component, atoms.numbers, "cpu")
        evaluators[name].pairs = PairCache(keep=keep)
    ms = {name: [] for name in caches}
    for _ in range(5):
        for name, evaluate in evaluators.items():
            walk, moving = np.random.default_rng(1), [bead.copy() for bead in beads]
            start = time.perf_counter()
            for _ in range(args.rounds):
                for bead in moving:
                    bead += walk.normal(0.0, args.step, bead.shape)
                    evaluate(cells, units.positions_to_wire(bead)[None])
            ms[name].append((time.perf_counter() - start) / (args.rounds * args.beads) * 1e3)
    print(f"| cache | ms per call, {args.model} {args.component}, {len(atoms)} atoms, {args.beads} beads "
          "(median of 5) | searches per call |\n|---|---|---|")
    for name, evaluate in evaluators.items():
        print(f"| {name} | {statistics.median(ms[name]):.2f} | {evaluate.pairs.searches / evaluate.pairs.calls:.2f} |")


if __name__ == "__main__":
    main()
