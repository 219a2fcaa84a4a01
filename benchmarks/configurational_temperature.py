"""Per-species temperature three ways, for finished NVT runs of a benchmark (several seeds):
kinetic at the step ends (i-PI's `temperature(atom=X)`), kinetic after the inner O steps
(the mts monitor, thermostat inside only), and configurational,

    T_conf = ⟨Σ_{i∈X} |F_i|²⟩ / (k_B ⟨Σ_{i∈X} Δ_i E⟩),

which reads the sampled positions alone (`analysis.configurational_sums`; each method's
own Hamiltonian: q-TIP4P/F for the reference and the physics split, the pair's
E_fast + E_slow for 'pair:*'). With MTS the momenta differ from point to point of the step;
the positions are what the run samples. Each run's result is kept in its folder
(temperatures.json) and reused with the same settings.

    OMP_NUM_THREADS=1 python benchmarks/configurational_temperature.py \\
        --workdir runs/bench/placement-inner-T --seeds 8 \\
        --methods reference,pair:1.5,pair:2:inner,pair:2.5:inner \\
        --out docs/benchmarks/configurational-temperature
"""

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ipi_mts.analysis import configurational_sums, configurational_temperature
from ipi_mts.benchmarking import heaviest_first, read_frames_xyz, run_folder, temperature_series, with_seeds
from ipi_mts.potentials import load_potential

KINDS = ("ends", "inner", "conf")
LABELS = {"ends": "kinetic, step ends", "inner": "kinetic, after inner O", "conf": "configurational"}


def hamiltonian(method: str, reference: str) -> str:
    """The potential whose Boltzmann distribution a method's run samples."""
    kind = method.partition(":")[0]
    models = {"reference": reference, "conventional": "water-baseline", "pair": "water-pair",
              "split": "qtip4pf", "vv": reference, "map": reference, "direct": reference, "midpoint": reference}
    if kind not in models:
        raise SystemExit(f"configurational_temperature: unknown method {method!r}")
    return models[kind]


def run_temperatures(folder: Path, model, equilibration_ps, frame_fs, every, probes, seed, key) -> dict:
    """{kind: {species: K}} of one finished run; kept in the run's folder as temperatures.json
    and reused while `key` (the model and these settings) is the same."""
    cache = folder / "temperatures.json"
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("key") == key:
            return kept["result"]
    frames = list(read_frames_xyz(folder / "run.pos_0.xyz"))[int(round(equilibration_ps * 1000 / frame_fs))::every]
    species = heaviest_first(frames[0].get_chemical_symbols())
    ends, inner = temperature_series(folder, equilibration_ps, species)
    out = {"ends": {s: float(ends[s].mean()) for s in species}}
    if inner is not None:
        out["inner"] = {s: float(inner[s].mean()) for s in species}
    sums = configurational_sums(model, frames, probes=probes, seed=seed)
    out["conf"] = {s: configurational_temperature(sums[s]) for s in species}
    out["frames"] = len(frames)
    cache.write_text(json.dumps({"key": key, "result": out}))
    return out


def summarise(runs: list[dict]) -> dict:
    """{kind: {species: (mean over seeds, standard error)}}."""
    out = {}
    for kind in KINDS:
        have = [r[kind] for r in runs if kind in r]
        if have:
            out[kind] = {s: (float(np.mean([h[s] for h in have])),
                             float(np.std([h[s] for h in have], ddof=1) / np.sqrt(len(have))) if len(have) > 1 else float("nan"))
                         for s in have[0]}
    return out


def plot(summary: dict, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    species = list(next(iter(summary.values()))["ends"])
    fig, axes = plt.subplots(1, len(species), figsize=(5 * len(species), 4), sharey=True)
    for ax, s in zip(np.atleast_1d(axes), species):
        for k, kind in enumerate(KINDS):
            x = np.arange(len(methods)) + (k - 1) * 0.25
            y = [summary[m].get(kind, {}).get(s, (np.nan, np.nan)) for m in methods]
            ax.errorbar(x, [v[0] for v in y], yerr=[v[1] for v in y], fmt="o", capsize=3, label=LABELS[kind])
        ax.axhline(target, color="k", lw=0.8)
        ax.set_xticks(range(len(methods)), methods, rotation=20)
        ax.set_title(f"T({s})")
    np.atleast_1d(axes)[0].set_ylabel("K (mean over seeds ± standard error)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a benchmark's workdir with finished NVT runs")
    parser.add_argument("--methods", required=True, help="comma-separated, as named in the benchmark")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--reference", default="qtip4pf", help="the model of the 'reference' runs")
    parser.add_argument("--equilibration-ps", type=float, default=0.5)
    parser.add_argument("--frame-fs", type=float, default=10.0, help="the runs' frame interval")
    parser.add_argument("--every", type=int, default=2, help="use every n-th frame")
    parser.add_argument("--probes", type=int, default=4, help="Hutchinson probes per frame")
    parser.add_argument("--target", type=float, default=300.0)
    parser.add_argument("--out", required=True, help="output path without suffix")
    args = parser.parse_args()
    methods = args.methods.split(",")
    models = {m: load_potential(hamiltonian(m, args.reference)) for m in methods}
    per_run = {}
    runs = with_seeds(methods, args.seeds) if args.seeds > 1 else methods  # (one seed: no control run)
    for run in tqdm(runs, desc="runs"):
        method = run.partition("@")[0]
        folder = Path(args.workdir) / run_folder(run) / "nvt"
        if not (folder / "RESTART").is_file():
            raise SystemExit(f"configurational_temperature: {folder} holds no finished run")
        key = {"model": hamiltonian(method, args.reference), "equilibration_ps": args.equilibration_ps,
               "frame_fs": args.frame_fs, "every": args.every, "probes": args.probes}
        per_run[run] = run_temperatures(folder, models[method], args.equilibration_ps, args.frame_fs,
                                        args.every, args.probes, seed=len(per_run), key=key)
    summary = {m: summarise([r for k, r in per_run.items() if k.partition("@")[0] == m]) for m in methods}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "runs": per_run, "args": vars(args)}, indent=1))
    plot(summary, args.target, out.with_suffix(".png"))
    species = list(next(iter(summary.values()))["ends"])
    lines = [f"Measured by `python benchmarks/configurational_temperature.py --workdir {args.workdir} "
             f"--seeds {args.seeds} --methods {args.methods} --reference {args.reference} --out {args.out}`.", "",
             f"Means over {args.seeds} seeds ± their standard errors, after {args.equilibration_ps} ps; "
             f"T_conf from every {args.every}-th frame ({args.frame_fs * args.every:g} fs apart), "
             f"{args.probes} Hutchinson probes per frame. Target {args.target:g} K.", "",
             "| method | " + " | ".join(f"T({s}) {LABELS[k]} K" for s in species for k in KINDS) + " |",
             "|---|" + "---|" * (len(species) * len(KINDS))]
    for m, kinds in summary.items():
        cells = [f"{kinds[k][s][0]:.1f} ± {kinds[k][s][1]:.1f}" if k in kinds else "–" for s in species for k in KINDS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
