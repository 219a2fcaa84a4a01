"""What serving a potential over i-PI's socket costs, side by side in one run.

For water-64 and water-216 (q-TIP4P/F, NVT with PILE_L, 0.5 fs) with 1 and 8 beads, the
wall time per MD step (steady state, from `ipi-mts run`'s summary) when the same potential
is evaluated
  - in-process: `<ffdirect>` with the PES plugin drivers/ipi_mts_pes.py,
  - by `ipi-mts serve` over a UNIX socket, 1 connection, and one per bead,
  - by i-PI's own `i-pi-py_driver` with the same plugin, 1 process, and one per bead.
Ratios are to the in-process time. Every driver process gets (cores − 1) / (number of
driver processes) CPU threads and passive OpenMP waiting, as `ipi-mts serve` sets itself: with
as many threads as cores a driver fights i-PI for them and steps are ~10x slower on 2 cores. Results go to docs/benchmarks/serving.md (and .json).

    python benchmarks/serving.py [--steps-per-bead-216 N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ipi_mts.server.serve import default_threads

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "drivers" / "ipi_mts_pes.py"
BIN = Path(sys.executable).parent


def xml(system: str, nbeads: int, steps: int, forcefield: str) -> str:
    init = REPO / "inputs" / system / "init.xyz"
    return f"""<simulation verbosity='quiet'>
  <output prefix='bench'><properties stride='10' filename='out'> [ step, conserved, temperature{{kelvin}} ] </properties></output>
  <total_steps>{steps}</total_steps>
  <prng><seed>1</seed></prng>
  {forcefield}
  <system>
    <initialize nbeads='{nbeads}'>
      <file mode='xyz' units='angstrom'>{init}</file>
      <velocities mode='thermal' units='kelvin'>300</velocities>
    </initialize>
    <forces><force forcefield='water'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'>0.5</timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'>100</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>300</temperature></ensemble>
  </system>
</simulation>
"""


def run_case(system, nbeads, steps, method, workdir: Path) -> float:
    """ms per step of one configuration."""
    address = "bench" + uuid.uuid4().hex[:8]
    drivers = []
    if method == "ffdirect":
        ff = (f"<ffdirect name='water'><pes>custom</pes><pes_path>{PLUGIN}</pes_path>"
              f"<parameters>{{model: qtip4pf}}</parameters></ffdirect>")
    else:
        ff = f"<ffsocket name='water' mode='unix' pbc='false'><address>{address}</address></ffsocket>"
        kind, count = method.split(":")
        count = nbeads if count == "per-bead" else 1
        if kind == "serve":
            drivers.append([str(BIN / "ipi-mts"), "serve", "--model", "qtip4pf", "--unix", address,
                            "--connections", str(count), "--timeout", "120"])
        else:
            drivers += [[str(BIN / "i-pi-py_driver"), "-m", "custom", "-P", str(PLUGIN),
                         "-o", "model=qtip4pf", "-u", "-a", address]] * count
    case = workdir / f"{system}-{nbeads}-{method.replace(':', '-')}"
    case.mkdir()
    (case / "input.xml").write_text(xml(system, nbeads, steps, ff))
    launcher = subprocess.Popen([str(BIN / "ipi-mts"), "run", "--quiet", "input.xml"], cwd=case,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = []
    if drivers:
        sock = Path("/tmp/ipi_" + address)
        deadline = time.time() + 60
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.05)
        # i-pi-py_driver gets the thread policy that `ipi-mts serve` applies to itself
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE",
                   OMP_NUM_THREADS=str(default_threads(len(drivers))))
        procs = [subprocess.Popen(d, cwd=case, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for d in drivers]
    out, err = launcher.communicate(timeout=1800)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    if launcher.returncode != 0:
        raise RuntimeError(f"{system} {nbeads} {method} failed: {err.strip().splitlines()[-1:]}")
    return float(re.search(r"([0-9.e+]+) ms/step", out).group(1))


METHODS = {
    "ffdirect": "in-process `<ffdirect>` + plugin",
    "serve:1": "`ipi-mts serve`, 1 connection",
    "serve:per-bead": "`ipi-mts serve`, 1 connection per bead",
    "py_driver:1": "`i-pi-py_driver` + plugin, 1 process",
    "py_driver:per-bead": "`i-pi-py_driver` + plugin, 1 process per bead",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, water-64 only (a smoke run)")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "serving"))
    args = parser.parse_args()
    cases = [("water-64", 1, 200), ("water-64", 8, 40), ("water-216", 1, 60), ("water-216", 8, 16)]
    if args.quick:
        cases = [("water-64", 1, 20), ("water-64", 8, 6)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for system, nbeads, steps in cases:
            for method in METHODS:
                if nbeads == 1 and method.endswith("per-bead"):
                    continue
                ms = run_case(system, nbeads, steps, method, Path(tmp))
                results.append({"system": system, "nbeads": nbeads, "method": method, "ms_per_step": ms})
                print(f"{system:10s} {nbeads:2d} beads  {METHODS[method]:50s} {ms:9.2f} ms/step", flush=True)
    base = {(r["system"], r["nbeads"]): r["ms_per_step"] for r in results if r["method"] == "ffdirect"}
    lines = ["| system | beads | evaluation | ms/step | vs in-process |", "|---|---|---|---|---|"]
    for r in results:
        ratio = r["ms_per_step"] / base[(r["system"], r["nbeads"])]
        r["ratio_to_ffdirect"] = ratio
        lines.append(f"| {r['system']} | {r['nbeads']} | {METHODS[r['method']]} | {r['ms_per_step']:.1f} | {ratio:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    table = "\n".join(lines)
    out.with_suffix(".md").write_text(
        "# Serving cost: socket drivers against in-process evaluation\n\n"
        "Measured by `python benchmarks/serving.py` (NVT PILE_L, 0.5 fs, q-TIP4P/F; steady-state "
        "wall time per MD step from `ipi-mts run`).\n\n" + table + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
