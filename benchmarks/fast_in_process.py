"""The learned pair's fast force in i-PI's process (`<ffdirect><pes>ipi_mts</pes>`) against
over a socket, next to the conventional model: the methods interleaved and repeated, since
single runs on a shared machine vary by up to 20 %. Prints ms per step of every run and the
median speedups over the conventional model at 0.5 fs.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/fast_in_process.py \\
        --structure inputs/water-216/init.xyz --outer 1.5,2 --ps 0.2 --repeats 3
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from ipi_mts.benchmarking import method_xml, run_method

MODELS = {"reference": "qtip4pf", "conventional": "water-baseline", "pair": "water-pair"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structure", default="inputs/water-216/init.xyz")
    parser.add_argument("--outer", default="1.5,2", help="outer steps, fs")
    parser.add_argument("--ps", type=float, default=0.2, help="NVT length per run, ps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    cases = [("conventional", "socket")] + [
        (f"pair:{o}", fast) for o in args.outer.split(",") for fast in ("socket", "in-process")
    ]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="ipi-mts-fast-"))
    ms = {case: [] for case in cases}
    for repeat in range(args.repeats):
        for method, fast in cases:
            xml, dt = method_xml(method, MODELS, Path(args.structure), args.ps, "nvt", fast=fast)
            workdir = root / f"{method.replace(':', '-')}-{fast}-{repeat}"
            ms[(method, fast)].append(run_method(workdir, xml)["ms_per_step"])
            print(f"{method} ({fast}): {ms[(method, fast)][-1]:.1f} ms/step", flush=True)
    base = statistics.median(ms[cases[0]]) / 0.5
    print("\n| method | fast force | ms per step | s per ps (median) | speedup |\n|---|---|---|---|---|")
    for method, fast in cases:
        dt = 0.5 if method == "conventional" else float(method.split(":")[1])
        per_fs = statistics.median(ms[(method, fast)]) / dt
        runs = ", ".join(f"{x:.0f}" for x in ms[(method, fast)])
        print(f"| {method} | {fast if method != 'conventional' else '–'} | {runs} | {per_fs:.0f} | {base / per_fs:.2f} |")


if __name__ == "__main__":
    main()
