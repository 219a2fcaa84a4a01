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

With `--trajectory FILE` the calls take the first `--calls` frames of an MD trajectory in order
instead (e.g. runs/map-data/water-64-traj.extxyz, frames 1 fs apart, made by `make maps`), so
that the pair cache searches as it does in MD. A second table counts, for the first path, the
tensor operations dispatched per call (`TorchDispatchMode`) and the pair cache's searches and
validity checks over those calls, each evaluator fresh; run it with `PYTHONPATH=` a worktree of
another commit to compare packages.
"""

import argparse
import statistics
import time

import ase.io
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

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
    parser.add_argument("--trajectory", help="extxyz trajectory whose frames, in order, the calls take")
    args = parser.parse_args()
    torch.set_num_threads(1)

    atoms = ase.io.read(args.structure)
    numbers = numbers_from_symbols(atoms.get_chemical_symbols())
    cell = units.cell_to_wire(np.array(atoms.cell))[None]
    if args.trajectory:
        frames = [units.positions_to_wire(a.positions) for a in ase.io.read(args.trajectory, index=f":{args.calls}")]
    else:
        rng = np.random.default_rng(0)
        start = units.positions_to_wire(atoms.positions)
        frames = [start + rng.normal(0.0, 0.01, start.shape) for _ in range(args.calls)]
    pair = load_potential(args.pair, "full")
    models = {"fast component": pair.component("fast"), "one-layer model": pair.fast}
    evaluators = {what: WireEvaluator(model, numbers) for what, model in models.items()}
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

    print(f"\n| {args.pair}, closed form, {len(frames)} calls | tensor operations per call | pair searches | "
          "pair cache checks per call |\n|---|---|---|---|")
    for what, model in models.items():
        evaluator, count = WireEvaluator(model, numbers), _Count()
        with count:
            for frame in frames:
                evaluator(cell, frame[None])
        pairs = evaluator.pairs
        print(f"| {what} | {count.operations / len(frames):.1f} | {pairs.searches} | "
              f"{pairs.checks / pairs.calls:.2f} |", flush=True)


class _Count(TorchDispatchMode):
    """Counts the tensor operations dispatched while it is active."""

    operations = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.operations += 1
        return func(*args, **(kwargs or {}))


if __name__ == "__main__":
    main()
