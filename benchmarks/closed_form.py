"""The pair's fast model in closed form (`ipi_mts.potentials.closed_form`) against e3nn's modules
and autograd, side by side in one process.

Each evaluation goes through the `WireEvaluator` that serves i-PI (frozen weights, a pair
cache): energy, forces and virial of the structure with small random displacements (so that
every call differs, as in MD), for the pair's fast component (the one-layer model plus the
bonded terms of a resplit pair) and for the one-layer model alone. The two paths alternate in
`--rounds` rounds of `--calls` calls; the table gives the median ms per call, the ratio, and
the largest force difference between the paths (float32 round-off is expected).

    OMP_NUM_THREADS=1 python benchmarks/closed_form.py --pair water-pair-resplit \\
        --structure inputs/water-64/init.xyz --rounds 8 --calls 200
"""

import argparse
import statistics
import time

import ase.io
import numpy as np
import torch

from ipi_mts import units
from ipi_mts.potentials import closed_form, load_potential
from ipi_mts.server.evaluator import WireEvaluator
from ipi_mts.state import numbers_from_symbols


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", default="water-pair-resplit")
    parser.add_argument("--structure", default="inputs/water-64/init.xyz")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)

    atoms = ase.io.read(args.structure)
    numbers = numbers_from_symbols(atoms.get_chemical_symbols())
    cell = units.cell_to_wire(np.array(atoms.cell))[None]
    rng = np.random.default_rng(0)
    start = units.positions_to_wire(atoms.positions)
    frames = [start + rng.normal(0.0, 0.01, start.shape) for _ in range(args.calls)]
    pair = load_potential(args.pair, "full")
    evaluators = {
        "fast component": WireEvaluator(pair.component("fast"), numbers),
        "one-layer model": WireEvaluator(pair.fast, numbers),
    }
    applies = closed_form.applies
    paths = {"closed form": applies, "e3nn + autograd": lambda model: False}

    print(f"| {args.pair} on {args.structure} | path | ms per call ({args.rounds} rounds, median) | "
          "ratio | max abs force difference (eV/Å) |\n|---|---|---|---|---|")
    for what, evaluator in evaluators.items():
        times, forces = {path: [] for path in paths}, {}
        for _ in range(args.rounds):
            for path, rule in paths.items():
                closed_form.applies = rule
                evaluator(cell, frames[0][None])  # warm: the pair cache, the constants
                begin = time.perf_counter()
                for frame in frames:
                    evaluator(cell, frame[None])
                times[path].append((time.perf_counter() - begin) / len(frames) * 1e3)
                forces[path] = evaluator(cell, frames[-1][None])[1]
        closed_form.applies = applies
        difference = units.forces_from_wire(np.abs(forces["closed form"] - forces["e3nn + autograd"]).max())
        reference = statistics.median(times["e3nn + autograd"])
        for path in paths:
            median = statistics.median(times[path])
            print(f"| {what} | {path} | {median:.2f} | {reference / median:.2f} | "
                  f"{difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
