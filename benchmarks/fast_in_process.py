"""The learned pair's fast force in i-PI's process (`<ffdirect><pes>ipi_mts</pes>`) against
over a socket, next to the conventional model, and what each model costs alone.

1. MD: the methods interleaved and repeated, since single runs on a shared machine vary by up
   to 1.5x; ms per step of every run, the speedup over the conventional model at 0.5 fs from
   the medians and in each repeat (the runs of one repeat are neighbours in time; `--repeats
   0` skips this part).
2. Alone: one evaluation (energy, forces, virial through the `WireEvaluator` that serves i-PI)
   of the structure by each component of each pair in `--alone` and by the conventional model,
   medians of five interleaved loops of `--calls` calls.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/fast_in_process.py \\
        --structure inputs/water-216/init.xyz --outer 1.5,2 --ps 0.2 --repeats 3 \\
        --alone water-pair,runs/water-pair-fast26.pt

With `--beads P`, every run is a path-integral run with P beads; an outer step 'STEP:inner:rpcK'
contracts the pair's slow force to K beads (1: the centroid); the conventional model runs on
every bead. With `--code DIR`, every MD case also runs with another checkout's package
(a `git worktree` of an earlier commit, say), interleaved with this one's: a change's effect
measured side by side. With several pairs in `--pair` (comma-separated), every outer step runs
with each, interleaved, against the same conventional runs.
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from ipi_mts import units
from ipi_mts.benchmarking import method_xml, resolved_model, run_folder, run_method, time_alone
from ipi_mts.evaluation import read_trajectory
from ipi_mts.server.evaluator import WireEvaluator


def md_table(args, models):
    pairs = [resolved_model(p) for p in args.pair.split(",")]
    methods = [("conventional", "", "socket")] + [
        (f"pair:{o}", pair, fast) for pair in pairs for o in args.outer.split(",") for fast in args.fast.split(",")
    ]
    codes = [""] + [str(Path(c).resolve()) for c in args.code.split(",") if c]  # "": this checkout
    cases = [(code, method, pair, fast) for code in codes for method, pair, fast in methods]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="ipi-mts-fast-"))
    ms, dts = {case: [] for case in cases}, {}
    for repeat in range(args.repeats):
        for case in cases:
            code, method, pair, fast = case
            xml, dts[method] = method_xml(method, {**models, "pair": pair or pairs[0]}, Path(args.structure),
                                          args.ps, "nvt", fast=fast, thermostat=args.thermostat, beads=args.beads,
                                          safe_stride=args.safe_stride)
            label = (f"-pair{pairs.index(pair)}" if len(pairs) > 1 and pair else "") + (f"-{Path(code).name}" if code else "")
            workdir = root / f"{run_folder(method)}-{fast}{label}-{repeat}"
            env = dict(os.environ, PYTHONPATH=code) if code else None
            ms[case].append(run_method(workdir, xml, env=env)["ms_per_step"])
            where = ", ".join(x for x in (fast, pair if len(pairs) > 1 else "", code) if x)
            print(f"{method} ({where}): {ms[case][-1]:.1f} ms/step", flush=True)
    conventional = [x / dts["conventional"] for x in ms[cases[0]]]
    base = statistics.median(conventional)
    print("\n| code | pair | method | fast force | ms per step | s per ps (median) | speedup (medians) "
          "| speedup in each repeat |\n|---|---|---|---|---|---|---|---|")
    for case in cases:
        code, method, pair, fast = case
        per_fs = [x / dts[method] for x in ms[case]]
        runs = ", ".join(f"{x:.0f}" for x in ms[case])
        each = ", ".join(f"{c / x:.2f}" for c, x in zip(conventional, per_fs))  # runs side by side in time
        print(f"| {code or 'this checkout'} | {pair or '–'} | {method} | {fast if method != 'conventional' else '–'} "
              f"| {runs} | {statistics.median(per_fs):.0f} | {base / statistics.median(per_fs):.2f} | {each} |")


def alone_table(args, models):
    atoms = read_trajectory(args.structure)[0]  # with the cell of an i-PI xyz
    cells = units.cell_to_wire(atoms.cell.array)[None]
    positions = units.positions_to_wire(atoms.positions)[None]
    evaluators = {(models["conventional"], "full"): None}
    for pair in args.alone.split(","):
        evaluators.update({(pair, "fast"): None, (pair, "slow"): None})
    for model, component in evaluators:
        evaluators[(model, component)] = WireEvaluator.from_name(model, component, atoms.numbers, "cpu")
    ms = time_alone(evaluators, cells, positions, args.calls)
    print(f"\n| model | component | ms per evaluation of {len(atoms)} atoms (median of 5 loops) |\n|---|---|---|")
    for (model, component), median in ms.items():
        print(f"| {model} | {component} | {median:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structure", default="inputs/water-216/init.xyz")
    parser.add_argument("--pair", default="water-pair",
                        help="the pair run on MTS; several, comma-separated, run side by side")
    parser.add_argument("--baseline", default="water-baseline", help="the conventional model")
    parser.add_argument("--outer", default="1.5,2",
                        help="outer steps in fs, comma-separated; STEP:inner for mode='mts' with the thermostat inside, "
                             "STEP:isokinetic for SIN(R), STEP/INNER for an inner step other than 0.5 fs")
    parser.add_argument("--thermostat", default="svr", choices=["svr", "pile_l"])
    parser.add_argument("--safe-stride", type=int, default=1,
                        help="i-PI's soft-exit checkpoint every N steps (its default: 1, every step)")
    parser.add_argument("--fast", default="socket,in-process",
                        help="where the pair's fast force runs, comma-separated: socket, in-process")
    parser.add_argument("--ps", type=float, default=0.2, help="NVT length per run, ps")
    parser.add_argument("--beads", type=int, default=1, help="path-integral beads (default: 1, classical)")
    parser.add_argument("--repeats", type=int, default=3, help="MD repeats (0: time the models alone only)")
    parser.add_argument("--alone", default=None, help="pairs timed alone, comma-separated (default: --pair)")
    parser.add_argument("--calls", type=int, default=10, help="calls per timing loop (alone)")
    parser.add_argument("--code", default="",
                        help="other checkouts of ipi-mts, comma-separated: every MD case runs with each one's package "
                             "too (PYTHONPATH), interleaved with this one's; speedups against this checkout's "
                             "conventional run")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    args.alone = args.alone or args.pair
    models = {"reference": "qtip4pf", "conventional": args.baseline, "pair": args.pair}
    if args.repeats > 0:
        md_table(args, models)
    alone_table(args, models)


if __name__ == "__main__":
    main()
