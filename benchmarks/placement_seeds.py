"""Chosen MTS methods against the reference, each run with several seeds and judged by their
seed means (`benchmarking.judge_seeds`): for a closer look at the outer steps where
`ipi-mts bench placement --seeds` finds the limits, without repeating every method.

Methods are named as in the benchmark: 'pair:2' (the learned pair, i-PI's built-in MTS with
the thermostat outside, 2 fs outer step), 'pair:2.5:inner' (mode='mts', the thermostat in the
innermost loop), 'split:1' (the q-TIP4P/F physics split), 'conventional', 'reference'. NVT
with PILE_L (τ = 100 fs) at 300 K on water-64; finished runs in --workdir are reused.
The reference is q-TIP4P/F at 0.5 fs, or with `--reference water-pair` the pair's own
E_fast + E_slow at 0.5 fs: the same Hamiltonian, so that only the integrator's error is judged.
With `--beads P`, path integrals (RDFs over the beads, per-species centroid-virial kinetic
energy); a method's ':rpcK' contracts its slow force to K beads (1: the centroid).

    OMP_NUM_THREADS=1 python benchmarks/placement_seeds.py \\
        --methods pair:1.5,pair:2,pair:2:inner,pair:2.5:inner --seeds 8 \\
        --workdir runs/bench/placement-pair --out docs/benchmarks/thermostat-placement-8seeds-pair

    OMP_NUM_THREADS=1 python benchmarks/placement_seeds.py --reference water-pair --beads 8 \\
        --fast socket --methods pair:1:inner,pair:1.5,pair:1.5:inner,pair:2:inner,pair:2:inner:rpc1,pair:2.5:inner,pair:2.5:inner:rpc4 \\
        --seeds 4 --nvt-ps 1 --equilibration-ps 0.25 --workdir runs/bench/pimd-pair --out docs/benchmarks/pimd-pair-8beads
"""

import argparse
from pathlib import Path

from ipi_mts.benchmarking import compare, with_seeds, write_report

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", required=True, help="comma-separated; the reference is always run ('reference': only it)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--structure", default=str(ROOT / "inputs" / "water-64" / "init.xyz"))
    parser.add_argument("--pair", default="water-pair")
    parser.add_argument("--reference", default="qtip4pf",
                        help="the model run at 0.5 fs as the reference (default: qtip4pf; e.g. water-pair)")
    parser.add_argument("--nvt-ps", type=float, default=3.0)
    parser.add_argument("--equilibration-ps", type=float, default=0.5)
    parser.add_argument("--beads", type=int, default=1, help="path-integral beads (default: 1, classical)")
    parser.add_argument("--fast", choices=["in-process", "socket"], default="in-process",
                        help="where MTS evaluates the fast force (socket: one batched call for all beads)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True, help="output path without suffix")
    args = parser.parse_args()
    models = {"reference": args.reference, "pair": args.pair, "conventional": "water-baseline"}
    methods = with_seeds(["reference"] + [m for m in args.methods.split(",") if m and m != "reference"], args.seeds)
    rows, results, failures = compare(methods, models, "reference", structure=args.structure, nvt_ps=args.nvt_ps,
                                      nve_ps=0.0, thermostat="pile_l", workdir=args.workdir,
                                      equilibration_ps=args.equilibration_ps, beads=args.beads,
                                      fast=args.fast)
    name = "q-TIP4P/F" if args.reference == "qtip4pf" else args.reference
    write_report(rows, results, Path(args.out), f"speedup vs {name} at 0.5 fs", failures)


if __name__ == "__main__":
    main()
