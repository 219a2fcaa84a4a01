"""Why a map that is closer to the exact flow can heat more: its energy error per step.

The maps are trained on the state error Σ m|δq|² + (τ²/m)|δp|² of a step; what moves H in NVE
is the error's component along ∇H. This script measures both for each method on the held-out
segments of map data (the maps' split): from a reference state x = (q, p), one step Φ_τ(x)
against the reference's x' one stride later, δH = H(Φ_τ(x)) − H(x'); and H along short
rollouts from reference states, whose mean slope is the drift an NVE run would start with:

    OMP_NUM_THREADS=1 python benchmarks/map_step_energy.py --stride-fs 3 \\
        --methods midpoint,map:runs/train-map/water-3fs/map.pt --out docs/benchmarks/map-step-energy-3fs

Energies in meV per atom with the reference potential (the maps' anchor); ± standard errors
over the pairs (their correlation along a segment is not taken out, so they are lower bounds).
The last column is the mean energy gain per step that a volume-preserving map must have from
canonical states at `--temperature`: ⟨e^{−βΔH}⟩ = 1 gives ⟨ΔH⟩ ≈ β Var(ΔH)/2 for the box, per
atom N β Var/2 with ΔH = H(x₁) − H(x₀) per atom (Jarzynski).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ipi_mts import units
from ipi_mts.data.trajectories import read_trajectories
from ipi_mts.maps import GeneratingFunction, MidpointMap, System
from ipi_mts.potentials import load_potential
from ipi_mts.potentials.model_file import load_map
from ipi_mts.training.batches import spread
from ipi_mts.training.maps import energy_pairs, make_pairs, split_segments

MEV = 1e3 * units.EV_PER_HARTREE  # Hartree -> meV


def make_map(method, stride_fs, potential):
    if method == "midpoint":  # S = τH, solved as the maps' configs solve theirs
        return MidpointMap(GeneratingFunction(potential, stride_fs), newton=True, guess_substeps=6,
                           fallback_substeps=8)
    kind, _, name = method.partition(":")
    if kind != "map":
        raise SystemExit(f"method {method!r}: give midpoint or map:NAME-OR-FILE")
    mapping = load_map(name)
    if abs(mapping.generating.timestep_fs - stride_fs) > 1e-9:
        raise SystemExit(f"{name}: stride {mapping.generating.timestep_fs} fs, not {stride_fs}")
    return mapping


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/map-data/water-64-traj.extxyz")
    parser.add_argument("--reference", default="qtip4pf", help="the potential of the data (and the anchor)")
    parser.add_argument("--stride-fs", type=float, help="the maps' stride τ (required but with --from-json)")
    parser.add_argument("--methods", default="midpoint")
    parser.add_argument("--split", default="0.8,0.1,0.1", help="the maps' train/validation/test split; held out: the last two")
    parser.add_argument("--pairs", type=int, default=48, help="single steps, spread over the held-out pairs")
    parser.add_argument("--rollouts", type=int, default=6, help="starts of the rollouts (0: none)")
    parser.add_argument("--rollout-steps", type=int, default=20)
    parser.add_argument("--estimate", action="store_true",
                        help="also the training's energy term δH̃ of each single step (P from the method's S and "
                             "from τH's) and its correlation with δH")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="K, of the Jarzynski column's β (the data's mean temperature)")
    parser.add_argument("--out", default=None, help="write OUT.md, OUT.json and OUT.png")
    parser.add_argument("--from-json", default=None, help="only redo the table and plot of a saved OUT.json")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        report(saved["rows"], argparse.Namespace(**{"temperature": args.temperature} | saved["args"]
                                                 | {"out": args.out or saved["args"]["out"]}),
               saved["singles"], saved["starts"])
        return
    if args.stride_fs is None:
        parser.error("--stride-fs is required")
    torch.set_num_threads(1)

    segments = read_trajectories(args.data)
    _, validation, test = split_segments(segments, [float(x) for x in args.split.split(",")])
    potential = load_potential(args.reference)
    pairs = make_pairs(validation + test, args.stride_fs, potential)
    n_atoms = pairs.q.shape[1]
    tau = args.stride_fs * units.FEMTOSECOND
    singles = spread(list(range(len(pairs))), args.pairs)
    # rollout starts: the first frames of each held-out segment, as many as asked, spread
    k = int(round(args.stride_fs / segments[0].frame_dt_fs))
    held = validation + test
    starts = spread([(s, i) for s in held for i in range(0, s.q.shape[0] - k * args.rollout_steps, 10)], args.rollouts)

    rows = []
    for method in args.methods.split(","):
        mapping = make_map(method, args.stride_fs, potential)
        state_error, energy_error, step_change, reference_change, estimates = [], [], [], [], []
        for j in tqdm(singles, desc=f"{method}: steps", leave=False):
            system, q, p = pairs.system[j], pairs.q[j], pairs.p[j]
            q1, p1, _ = mapping.step_system(q, p, system)
            m = system.masses[:, None]
            state_error.append(float((m * (q1 - pairs.q_next[j]) ** 2 + tau**2 / m * (p1 - pairs.p_next[j]) ** 2).sum()))
            h0, h1 = float(system.hamiltonian(potential, q, p)), float(system.hamiltonian(potential, q1, p1))
            hr = float(system.hamiltonian(potential, pairs.q_next[j], pairs.p_next[j]))
            energy_error.append((h1 - hr) * MEV / n_atoms)
            step_change.append((h1 - h0) * MEV / n_atoms)
            reference_change.append((hr - h0) * MEV / n_atoms)
            if args.estimate:  # δH̃ with P from this S, and from τH's with this S's residual
                own = energy_pairs(pairs, [j], mapping.generating, potential).start[0]
                other = energy_pairs(pairs, [j], mapping.generating, potential,
                                     jacobian=GeneratingFunction(potential, args.stride_fs)).start[0]
                estimates.append([float(own) * MEV / n_atoms, float(other) * MEV / n_atoms])
        changes = []
        for s, i in tqdm(starts, desc=f"{method}: rollouts", leave=False):
            system = System.from_ipi(s.masses, s.cell, s.numbers)
            q, p = (torch.as_tensor(x, dtype=torch.float64) for x in (s.q[i], s.p[i]))
            h0 = float(system.hamiltonian(potential, q, p))
            trace = []
            for n in range(1, args.rollout_steps + 1):
                q, p, _ = mapping.step_system(q, p, system)
                trace.append((float(system.hamiltonian(potential, q, p)) - h0) * MEV / n_atoms)
            changes.append(trace)
        changes = np.array(changes).reshape(len(starts), args.rollout_steps)
        e = np.array(energy_error)
        rows.append({
            "method": method,
            "state_error": float(np.mean(state_error)),
            "energy_error_rms": float(np.sqrt(np.mean(e**2))),
            "energy_error_mean": float(e.mean()),
            "energy_error_sem": float(e.std(ddof=1) / np.sqrt(len(e))),
            "step_change_rms": float(np.sqrt(np.mean(np.square(step_change)))),
            "step_change_mean": float(np.mean(step_change)),
            "atoms": n_atoms,
            "reference_change_rms": float(np.sqrt(np.mean(np.square(reference_change)))),
            "rollout_change_mean": changes.mean(axis=0).tolist(),
            "rollout_change_rms": np.sqrt((changes**2).mean(axis=0)).tolist(),
            "fallbacks": mapping.fallbacks,
            "steps": mapping.steps,
        })
        if estimates:
            own, other = np.array(estimates).T
            rows[-1]["estimate"] = {"p_from_own_s": float(np.corrcoef(own, e)[0, 1]),
                                    "p_from_anchor": float(np.corrcoef(other, e)[0, 1]),
                                    "rms_own": float(np.sqrt(np.mean(own**2)))}
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.startswith("rollout")}), flush=True)

    report(rows, args, len(singles), len(starts))


def report(rows, args, singles, starts):
    """The table (printed, and OUT.md, OUT.json) and the rollouts' plot (OUT.png)."""
    base = rows[0]["state_error"]
    t_roll = args.rollout_steps * args.stride_fs
    lines = [
        f"| water-64, τ = {args.stride_fs:g} fs | state error / {rows[0]['method']}'s | δH per step: rms | mean ± s.e. "
        f"| H(x₁) − H(x₀): rms (reference: {rows[0]['reference_change_rms']:.3f}) "
        f"| after {args.rollout_steps} steps ({t_roll:g} fs): mean | rms | fallbacks / steps "
        f"| N β Var(ΔH)/2 at {args.temperature:g} K |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['state_error'] / base:.3f} | {r['energy_error_rms']:.3f} | "
            f"{r['energy_error_mean']:+.3f} ± {r['energy_error_sem']:.3f} | {r['step_change_rms']:.3f} | "
            + (f"{r['rollout_change_mean'][-1]:+.3f} | {r['rollout_change_rms'][-1]:.3f} | " if starts else "– | – | ")
            + f"{r['fallbacks']} / {r['steps']} | {jarzynski_gain(r, args.temperature):.3f} |"
        )
    for r in rows:
        if "estimate" in r:
            x = r["estimate"]
            lines.append(f"\n{r['method']}: the energy term's δH̃ against δH over the single steps, correlation "
                         f"{x['p_from_own_s']:.3f} with P from its own S (rms {x['rms_own']:.3f}), "
                         f"{x['p_from_anchor']:.3f} with P from τH's")
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                           if v is not None and k != "from_json")
        out.with_suffix(".json").write_text(json.dumps(
            {"args": vars(args) | {"from_json": None}, "singles": singles, "starts": starts, "rows": rows}, indent=1))
        out.with_suffix(".md").write_text(
            f"Measured by `python benchmarks/map_step_energy.py {options}`"
            f" ({singles} single steps from held-out pairs, {starts} rollouts; meV/atom):\n\n{table}\n")
        if starts:
            plot(rows, args.stride_fs, out.with_suffix(".png"))


def jarzynski_gain(row, temperature, atoms=192):
    """N β Var(ΔH)/2 (meV/atom) of a row, ΔH per atom; rows saved before `step_change_mean` and
    `atoms` were recorded (water-64) use δH's mean, which differs by the reference's mean change."""
    mean = row.get("step_change_mean", row["energy_error_mean"])
    variance = row["step_change_rms"] ** 2 - mean**2
    kt = units.KB_EV_PER_K * temperature * 1e3  # meV
    return row.get("atoms", atoms) * variance / (2.0 * kt)


def plot(rows, stride_fs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        mean, rms = np.array(r["rollout_change_mean"]), np.array(r["rollout_change_rms"])
        t = stride_fs * np.arange(1, len(mean) + 1)
        line, = ax.plot(t, mean, label=r["method"].split("/")[-2] if "/" in r["method"] else r["method"])
        ax.fill_between(t, mean - np.sqrt(np.maximum(rms**2 - mean**2, 0)),
                        mean + np.sqrt(np.maximum(rms**2 - mean**2, 0)), color=line.get_color(), alpha=0.15)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("time along the rollout (fs)")
    ax.set_ylabel("H(t) − H(0), meV/atom (mean ± s.d. over starts)")
    ax.set_title(f"water-64, map rollouts from reference states, τ = {stride_fs:g} fs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
