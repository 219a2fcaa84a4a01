"""Secular drift or transient? The conserved energy of long-stride NVE started from each method's
own NVT-equilibrated state.

`ipi-mts bench maps` starts its NVE runs from the input structure with fresh Maxwell–Boltzmann
velocities. A long-stride symplectic map nearly conserves a shadow Hamiltonian H̃ = H + O(τ²),
not H, so from a state equilibrated under H (or not equilibrated at all) H can move while the
system settles under H̃: a transient, not a drift. Here each method first runs NVT (SVR, 300 K)
with its own dynamics, then NVE from that run's RESTART; the conserved energy's linear drift
is fitted over the whole NVE run and over each half separately (a secular drift has the same
slope in both), with the standard error of the slope from its residuals' block averages.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/map_nve_drift.py \\
        --methods reference,midpoint:2,map:water-map-2fs --nvt-ps 0.5 --nve-ps 4 \\
        --workdir runs/bench/map-nve-drift-4ps --out docs/benchmarks/map-nve-drift

The NVT run also gives each species' mean kinetic temperature after `--equilibration-ps`
(± the standard error of 5 block means): equipartition under each method's own dynamics.

Runs already finished in `--workdir` are reused (`run_method`), so methods may be run in
separate processes (one core each) and the report made by a last call with all of them.
"""

import argparse
import json
import re
from pathlib import Path

import ase.io
import numpy as np

from ipi_mts.analysis import block_error
from ipi_mts.benchmarking import MAP_SYSTEMS, heaviest_first, method_xml, nve_trace, run_folder, run_method, temperature_series


def nve_from_restart(xml: str, restart: Path) -> str:
    """The NVE input `xml` started from a RESTART (positions, momenta, cell) instead of the
    structure with thermal velocities."""
    start = f"<initialize nbeads='1'>\n      <file mode='chk'>{restart.resolve()}</file>\n    </initialize>"
    xml, n = re.subn(r"<initialize nbeads='1'>.*?</initialize>", start, xml, flags=re.S)
    if n != 1:
        raise ValueError("no single-bead <initialize> block in the NVE input")
    return xml


def slope(t, e, blocks=8):
    """Least-squares slope of e(t) and its standard error, the residuals' correlation taken
    into account by averaging them in `blocks` consecutive blocks."""
    a, b = np.polyfit(t, e, 1)
    residual = e - (a * t + b)
    edges = np.linspace(0, len(t), blocks + 1).astype(int)
    tb = np.array([t[i:j].mean() for i, j in zip(edges, edges[1:])])
    rb = np.array([residual[i:j].mean() for i, j in zip(edges, edges[1:])])
    err = np.sqrt(np.sum(rb**2) / (blocks - 2) / np.sum((tb - tb.mean()) ** 2))
    return a, err


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", default="water", choices=sorted(MAP_SYSTEMS))
    parser.add_argument("--methods", default="reference,midpoint:2,map:water-map-2fs")
    parser.add_argument("--nvt-ps", type=float, default=0.5)
    parser.add_argument("--nve-ps", type=float, default=2.0)
    parser.add_argument("--workdir", default="runs/bench/map-nve-drift")
    parser.add_argument("--equilibration-ps", type=float, default=0.0,
                        help="NVT time left out of the temperature means (default: 0)")
    parser.add_argument("--out", default=None, help="write OUT.md, OUT.json and OUT.png")
    args = parser.parse_args()
    spec = MAP_SYSTEMS[args.system]
    structure = Path(__file__).resolve().parents[1] / "inputs" / spec["structure"]
    models = {"reference": spec["reference"]}
    rows = []
    traces = {}
    atoms = ase.io.read(structure)
    n_atoms, species = len(atoms), heaviest_first(atoms.get_chemical_symbols())
    for method in args.methods.split(","):
        case = Path(args.workdir) / run_folder(method)
        common = dict(inner_fs=spec["fine_fs"], frame_fs=spec["frame_fs"])
        nvt_xml, dt = method_xml(method, models, structure, args.nvt_ps, "nvt", **common)
        nvt = run_method(case / "nvt", nvt_xml)
        ends, _ = temperature_series(case / "nvt", args.equilibration_ps, species)
        temperatures = {sp: [float(v) for v in block_error(ends[sp])] for sp in species}
        nve_xml = nve_from_restart(method_xml(method, models, structure, args.nve_ps, "nve", **common)[0],
                                   case / "nvt" / "RESTART")
        nve = run_method(case / "nve", nve_xml)
        t, e = nve_trace(case / "nve", n_atoms)
        t = t - t[0]
        half = len(t) // 2
        whole, first, second = slope(t, e), slope(t[:half], e[:half]), slope(t[half:], e[half:])
        rows.append({"method": method, "dt_fs": dt, "nvt_ms_per_step": nvt["ms_per_step"],
                     "drift": whole, "first_half": first, "second_half": second,
                     "std": float(e.std()), "solver": nve.get("solver"), "nvt_temperature_K": temperatures})
        traces[method] = (t, e)
        print(f"{method}: drift {whole[0]:+.3f} ± {whole[1]:.3f}, first half {first[0]:+.3f} ± {first[1]:.3f}, "
              f"second half {second[0]:+.3f} ± {second[1]:.3f} meV/atom/ps; σ {e.std():.3f} meV/atom; NVT "
              + ", ".join(f"T({sp}) {m:.1f} ± {err:.1f} K" for sp, (m, err) in temperatures.items()), flush=True)
    if args.out:
        write(Path(args.out), rows, traces, args)


def write(out: Path, rows, traces, args):
    import shlex
    import sys

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    fmt = lambda v: f"{v[0]:+.3f} ± {v[1]:.3f}"  # noqa: E731
    species = list(rows[0]["nvt_temperature_K"])
    lines = [f"Measured by `python {shlex.join(sys.argv)}`: {args.nvt_ps:g} ps NVT (SVR, 300 K) with each "
             f"method's own dynamics, then {args.nve_ps:g} ps NVE from its RESTART. Drifts in meV/atom/ps "
             "± the standard error of the slope (block averages of the residuals); σ: the conserved "
             "energy's standard deviation over the NVE run; NVT temperatures after "
             f"{args.equilibration_ps:g} ps ± the standard error of 5 block means.", "",
             "| method | Δt (fs) | drift, whole run | first half | second half | σ meV/atom | solver iterations / fallbacks | "
             + " | ".join(f"NVT T({sp}) K" for sp in species) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(species)]
    for r in rows:
        solver = f"{r['solver']['iterations']:.1f} / {r['solver']['fallbacks']}" if r["solver"] else "–"
        temps = " | ".join(f"{m:.1f} ± {err:.1f}" for m, err in r["nvt_temperature_K"].values())
        lines.append(f"| {r['method']} | {r['dt_fs']:g} | {fmt(r['drift'])} | {fmt(r['first_half'])} | "
                     f"{fmt(r['second_half'])} | {r['std']:.3f} | {solver} | {temps} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, (t, e) in traces.items():
        ax.plot(t, e, label=method, lw=1)
    ax.set_xlabel("time in NVE (ps)")
    ax.set_ylabel("conserved energy − its first value (meV/atom)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
