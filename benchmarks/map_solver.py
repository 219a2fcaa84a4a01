"""A learned map's solver settings side by side in MD.

The same NVT input (SVR, 300 K, the same thermostat noise) runs with the map file saved under
each solver setting: the map and its tolerance are the same, only the way its implicit
equations are solved differs. The runs are interleaved and repeated; reported are the wall
time per simulated ps, the evaluations of the map's equations per step, the fallbacks, and how
far each run's last frame is from the first setting's (the same map solved to the same
tolerance: the trajectories agree until the chaos of the liquid amplifies the tolerance).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/map_solver.py --map water-map-2fs \\
        --variant anderson:newton=false,guess_substeps=1 --variant newton:newton=true,guess_substeps=4 \\
        --ps 0.2 --repeats 3 --workdir runs/bench/map-solver --out docs/benchmarks/map-solver
"""

import argparse
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import yaml

from ipi_mts import units
from ipi_mts.benchmarking import MAP_SYSTEMS, method_xml, run_method
from ipi_mts.potentials.model_file import load_map, save_map


def variant(text: str):
    """'NAME:key=value,key=value' -> (NAME, {key: value}), values read as YAML."""
    name, _, settings = text.partition(":")
    pairs = [item.partition("=") for item in settings.split(",") if item]
    return name, {key: yaml.safe_load(value) for key, _, value in pairs}


def map_file(name: str, settings: dict, path: Path) -> Path:
    """The map `name` saved to `path` with its solver `settings` changed (an existing file
    there with these settings is reused, so that finished runs of it are too)."""
    if path.is_file():
        saved = load_map(path)
        if all(getattr(saved, key, None) == value for key, value in settings.items()):
            return path
    m = load_map(name)
    for key, value in settings.items():
        if not hasattr(m, key):
            raise SystemExit(f"map_solver.py: unknown solver setting {key!r}")
        setattr(m, key, value)
    anchor = None if m.anchor == "embedded" else m.anchor
    params = m.metadata.get("config", {}).get("anchor_params", {})
    save_map(path, m, anchor=anchor, anchor_params=params, species=m.species, masses=m.masses, metadata=m.metadata)
    return path


def last_positions(folder: Path) -> np.ndarray:
    """The positions (Å) at the end of a run, at full precision: the RESTART's beads' q."""
    text = (folder / "RESTART").read_text()
    found = re.search(r"<q shape='\(1, (\d+)\)'>\s*\[(.*?)\]", text, flags=re.S)
    return units.positions_from_wire(np.array(found.group(2).replace(",", " ").split(), dtype=float))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", default="water-map-2fs", help="a shipped map or a map file")
    parser.add_argument("--system", default="water", choices=sorted(MAP_SYSTEMS))
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME:key=value,...: solver settings of the map (tol, max_iter, memory, "
                             "fallback_substeps, guess_substeps, newton); repeat; the first is the baseline")
    parser.add_argument("--ps", type=float, default=0.2, help="simulated ps per run (default: 0.2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="runs/bench/map-solver")
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()
    spec = MAP_SYSTEMS[args.system]
    structure = Path(__file__).resolve().parents[1] / "inputs" / spec["structure"]
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    variants = [variant(v) for v in args.variant]
    files = {name: map_file(args.map, settings, root / f"{name}.pt") for name, settings in variants}
    runs = {name: [] for name, _ in variants}
    for repeat in range(args.repeats):
        for name, _ in variants:
            xml, dt = method_xml(f"map:{files[name]}", {"reference": spec["reference"]}, structure, args.ps, "nvt",
                                 inner_fs=spec["fine_fs"], frame_fs=spec["frame_fs"])
            folder = root / f"{name}-{repeat}"
            result = run_method(folder, xml)
            last = last_positions(folder)
            runs[name].append(result | {"last": last, "dt": dt})
            print(f"{name} (repeat {repeat}): {result['ms_per_step']:.0f} ms/step, "
                  f"{result['solver']['iterations']:.1f} evaluations/step, {result['solver']['fallbacks']} fallbacks",
                  flush=True)
    base = variants[0][0]
    rows = []
    for name, settings in variants:
        per_ps = [r["ms_per_step"] / r["dt"] for r in runs[name]]  # ms per fs = s per ps
        apart = max(float(np.abs(r["last"] - b["last"]).max()) for r, b in zip(runs[name], runs[base]))
        rows.append({"variant": name, "settings": settings, "s_per_ps": [round(x, 1) for x in per_ps],
                     "s_per_ps_median": statistics.median(per_ps),
                     "evaluations_per_step": statistics.median(r["solver"]["iterations"] for r in runs[name]),
                     "fallbacks": sum(r["solver"]["fallbacks"] for r in runs[name]),
                     "last_frame_max_apart_angstrom": apart})
    ref = rows[0]["s_per_ps_median"]
    lines = [f"Measured by `python {shlex.join(sys.argv)}` ({args.map}, {args.ps:g} ps NVT per run, "
             f"{args.repeats} interleaved repeats).", "",
             "| solver | settings | s per simulated ps (each run) | median | speed vs first | evaluations / step | "
             "fallbacks | last frame, max distance from the first's (Å) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "as stored"
        lines.append(f"| {r['variant']} | {settings} | {', '.join(f'{x:.0f}' for x in r['s_per_ps'])} | "
                     f"{r['s_per_ps_median']:.0f} | {ref / r['s_per_ps_median']:.2f} | "
                     f"{r['evaluations_per_step']:.1f} | {r['fallbacks']} | {r['last_frame_max_apart_angstrom']:.1e} |")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
