"""Path-integral MD served by MPI ranks: 32-bead PIMD of water-64 (q-TIP4P/F, NVT, PILE_L,
0.25 fs) with i-PI in `ipi-mts run` and `mpirun -n R ipi-mts serve --mpi --beads 32` over
loopback TCP, for R = 1, 2, 4, side by side in one run.

Reported: wall time per MD step (steady state, from `ipi-mts run`'s summary), speedup over
one rank and parallel efficiency (speedup / R). Every rank gets (cores − 1) / (ranks on the
node) CPU threads, at least 1, as `ipi-mts serve --mpi` sets itself; on a GPU machine each
rank takes the GPU of its node-local rank. Results: docs/benchmarks/mpi-pimd.{md,json,png}.

    python benchmarks/mpi_pimd.py [--ranks 1,2,4] [--steps 30] [--model qtip4pf]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ipi_mts.testing_ipi import free_tcp_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def xml(port: int, model: str, steps: int, nbeads: int) -> str:
    init = REPO / "inputs" / "water-64" / "init.xyz"
    return f"""<simulation verbosity='quiet'>
  <output prefix='bench'><properties stride='10' filename='out'> [ step, conserved, temperature{{kelvin}} ] </properties></output>
  <total_steps>{steps}</total_steps>
  <prng><seed>1</seed></prng>
  <ffsocket name='water' mode='inet'><address>127.0.0.1</address><port>{port}</port>
    <parameters>{{model: {model}}}</parameters></ffsocket>
  <system>
    <initialize nbeads='{nbeads}'>
      <file mode='xyz' units='angstrom'>{init}</file>
      <velocities mode='thermal' units='kelvin'>300</velocities>
    </initialize>
    <forces><force forcefield='water'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'>0.25</timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'>100</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>300</temperature></ensemble>
  </system>
</simulation>
"""


def one(ranks: int, model: str, steps: int, nbeads: int, workdir: Path) -> float:
    """ms per MD step with `ranks` MPI ranks serving every bead."""
    case = workdir / f"ranks-{ranks}"
    case.mkdir()
    port = free_tcp_port()
    (case / "input.xml").write_text(xml(port, model, steps, nbeads))
    mpiexec = shutil.which("mpiexec", path=str(BIN)) or "mpiexec"
    ipi = subprocess.Popen([str(BIN / "ipi-mts"), "run", "--quiet", "input.xml"], cwd=case,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    serve = subprocess.Popen(
        [mpiexec, "-n", str(ranks), str(BIN / "ipi-mts"), "serve", "--mpi", "--host", "127.0.0.1",
         "--beads", str(nbeads), "--template", str(REPO / "inputs" / "water-64" / "init.xyz"),
         "--forcefield", f"{port}={model}"],
        cwd=case, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = ipi.communicate()
    serve_out, serve_err = serve.communicate(timeout=120)
    if ipi.returncode != 0 or serve.returncode != 0:
        sys.exit(f"mpi_pimd: {ranks} ranks failed:\n{err[-2000:]}\n{serve_err[-2000:]}")
    line = [l for l in out.splitlines() if l.startswith("ipi-mts run: done")][-1]
    return float(re.search(r"([0-9.e+-]+) ms/step", line).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--beads", type=int, default=32)
    ap.add_argument("--model", default="qtip4pf")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "mpi-pimd"))
    args = ap.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="ipi-mts-mpi-bench-"))
    ms = {r: one(r, args.model, args.steps, args.beads, workdir) for r in ranks}
    rows = [{"ranks": r, "ms_per_step": ms[r], "speedup": ms[ranks[0]] / ms[r],
             "efficiency": ms[ranks[0]] / ms[r] / (r / ranks[0])} for r in ranks]
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"device": device, "model": args.model, "beads": args.beads,
                                                    "steps": args.steps, "rows": rows}, indent=1))
    lines = [f"{args.beads}-bead PIMD of water-64, {args.model}, {args.steps} steps, {device}", "",
             "| MPI ranks | ms / step | speedup | efficiency |", "|---|---|---|---|"]
    lines += [f"| {r['ranks']} | {r['ms_per_step']:.0f} | {r['speedup']:.2f} | {r['efficiency']:.2f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(ranks, [r["speedup"] for r in rows], "o-", label="measured")
    ax.plot(ranks, [r / ranks[0] for r in ranks], "--", color="gray", label="ideal")
    ax.set_xlabel("MPI ranks"), ax.set_ylabel("speedup"), ax.set_title(f"{args.beads}-bead PIMD, {device}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
