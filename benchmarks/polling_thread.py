"""i-PI's polling thread against the event-driven one of `ipi_mts.ipi_patches`, side by side.

i-PI (3.3.1) gives every forcefield a thread that wakes every `latency` (1e-4 s), even when it
has nothing to poll; ipi-mts makes it sleep until a request is queued. This runs the same MTS
input (the pair's fast force in i-PI's process, `<ffdirect>`, the slow one over a socket)
with each loop in turn, the runs interleaved and repeated, and reports the median time of one
in-process fast evaluation and of one MD step, timed inside i-PI's process:

    OMP_NUM_THREADS=1 python benchmarks/polling_thread.py --structure inputs/water-216/init.xyz \\
        --outer 2 --steps 100 --repeats 3
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOPS = ("i-PI's", "event-driven")


def child(loop: str, workdir: Path) -> None:
    """Run workdir/input.xml through `ipi-mts run` with `loop`; write the timings."""
    from ipi.engine.motion import dynamics

    from ipi_mts import ipi_patches
    from ipi_mts.cli import main
    from ipi_mts.server import evaluator

    if loop == LOOPS[0]:  # apply() then leaves i-PI's queue and loop as they are
        ipi_patches._queue_and_wake = ipi_patches._event_driven_poll_loop = lambda method: method
    times = {"fast": [], "step": []}

    def timed(method, key):
        def wrapped(self, *args, **kwargs):
            start = time.perf_counter()
            out = method(self, *args, **kwargs)
            times[key].append(time.perf_counter() - start)
            return out

        return wrapped

    evaluator.WireEvaluator.__call__ = timed(evaluator.WireEvaluator.__call__, "fast")
    dynamics.Dynamics.step = timed(dynamics.Dynamics.step, "step")
    try:
        sys.argv = ["ipi-mts", "run", "--quiet", str(workdir / "input.xml")]
        main()
    finally:
        (workdir / "timings.json").write_text(json.dumps(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structure", default="inputs/water-216/init.xyz")
    parser.add_argument("--pair", default="water-pair")
    parser.add_argument("--outer", type=float, default=2.0, help="outer step, fs (inner: 0.5 fs)")
    parser.add_argument("--steps", type=int, default=100, help="MD steps per run (the first 10 are not timed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", nargs=2, metavar=("LOOP", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]))

    from ipi_mts.benchmarking import method_xml

    models = {"reference": "qtip4pf", "conventional": "water-baseline", "pair": args.pair}
    xml, _ = method_xml(f"pair:{args.outer:g}", models, Path(args.structure), args.steps * args.outer / 1e3, "nvt")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="ipi-mts-polling-"))
    medians = {loop: {"fast": [], "step": []} for loop in LOOPS}
    for repeat in range(args.repeats):
        for k, loop in enumerate(LOOPS):
            workdir = root / f"run-{repeat}-{k}"
            workdir.mkdir(parents=True, exist_ok=False)
            (workdir / "input.xml").write_text(xml)
            subprocess.run([sys.executable, __file__, "--child", loop, str(workdir)], check=True, cwd=workdir,
                           stdout=subprocess.DEVNULL)
            times = json.loads((workdir / "timings.json").read_text())
            n_inner = round(args.outer / 0.5)
            for key, skip in (("fast", 10 * n_inner), ("step", 10)):
                medians[loop][key].append(1e3 * statistics.median(times[key][skip:]))
            print(f"{loop} polling: fast {medians[loop]['fast'][-1]:.2f} ms, step {medians[loop]['step'][-1]:.1f} ms",
                  flush=True)
    print(f"\n{Path(args.structure).name}, pair at {args.outer:g} fs ({n_inner} fast evaluations in i-PI per step), "
          f"{args.steps} steps per run, medians per run\n")
    print("| polling thread | fast evaluation, ms | MD step, ms | step time / event-driven's |\n|---|---|---|---|")
    base = statistics.median(medians[LOOPS[1]]["step"])
    for loop in LOOPS:
        fast, step = medians[loop]["fast"], medians[loop]["step"]
        print(f"| {loop} | {', '.join(f'{x:.2f}' for x in fast)} | {', '.join(f'{x:.0f}' for x in step)} "
              f"| {statistics.median(step) / base:.2f} |")


if __name__ == "__main__":
    main()
