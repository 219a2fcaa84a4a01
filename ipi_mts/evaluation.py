"""`ipi-mts evaluate`: errors of a trained model, and how fast its fast and slow forces vary.

Errors against labelled frames (by default the test split the model was trained with):
MAE and RMSE of the energy per atom (meV/atom) and of the force components (meV/Å), in
total and per element. For a fast/slow pair the errors are those of the full model; the
components have no reference labels of their own, so for them the RMS and mean norm of
their forces are reported (and the error of the fast model alone, which shows how much the
slow one corrects).

Spectra (a pair only): along a trajectory x(t) sampled every δt (consecutive frames: an
i-PI trajectory run here with the reference potential through `ipi-mts run`, or a given
file), for each part p ∈ {fast, slow, full}

    P_p(ν) = Σ_i,α | Σ_t w(t) (F_p,iα(t) − ⟨F_p,iα⟩) e^{−2πiνt} |²       (w: Hann window)

and the fraction of the power above the outer step's Nyquist frequency

    φ_p = Σ_{ν > ν_c} P_p(ν) / Σ_ν P_p(ν),     ν_c = 1 / (2 Δt_outer),

which the slow force (integrated with the outer step Δt_outer) should keep small: what of it
oscillates faster than ν_c is aliased by the outer step (the first MTS resonance sits at
Δt_outer = half a period). Fractions above a few fixed frequencies (cm⁻¹) show where the
split lies (water: librations < 1000 cm⁻¹ < bend ≈ 1600 < stretch ≈ 3500 cm⁻¹).

Outputs in --out: metrics.json, parity.png and, for a pair, spectrum.png and spectrum.npz.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError

THZ_TO_CM1 = 33.35641  # 1 THz in cm⁻¹ (1e12 / c, c in cm/s)
BANDS_CM1 = (500.0, 1000.0, 2000.0, 3000.0)


# --- spectra -------------------------------------------------------------------------------------
def power_spectrum(series, dt_fs: float):
    """Frequencies (THz) and power of signals sampled every `dt_fs`: `series` (T, ...) with
    time first; the mean of every signal is removed, a Hann window applied, and the power
    summed over all signals."""
    x = np.asarray(series, dtype=np.float64)
    if x.shape[0] < 4:
        raise UserError(f"a spectrum needs at least 4 consecutive frames, got {x.shape[0]}")
    x = x.reshape(x.shape[0], -1)
    x = x - x.mean(axis=0)
    window = np.hanning(x.shape[0])[:, None]
    power = (np.abs(np.fft.rfft(x * window, axis=0)) ** 2).sum(axis=1)
    freq_thz = np.fft.rfftfreq(x.shape[0], d=dt_fs) * 1000.0  # 1/fs -> THz
    return freq_thz, power


def fraction_above(freq, power, cutoff) -> float:
    """Fraction of the total power at frequencies above `cutoff` (same unit as `freq`)."""
    power = np.asarray(power, dtype=np.float64)
    total = power.sum()
    if not total > 0:
        return 0.0
    return float(power[np.asarray(freq) > cutoff].sum() / total)


def outer_nyquist_thz(outer_step_fs: float) -> float:
    """ν_c = 1 / (2 Δt_outer), in THz."""
    return 1000.0 / (2.0 * outer_step_fs)


# --- predictions ---------------------------------------------------------------------------------
def predict(model, frames, batch_size=8, components=None) -> dict:
    """Reference and predicted energies per atom and forces on a `training.batches.FrameSet`
    (numpy, eV/atom and eV/Å), and each component's forces."""
    from .potentials import evaluate

    out = {"e_ref": [], "e_pred": [], "f_ref": [], "f_pred": [], "numbers": []}
    for name in components or {}:
        out[f"f_{name}"] = []
        out[f"e_{name}"] = []
    for indices in frames.all_batches(batch_size):
        batch = frames.collate(indices)
        result = evaluate(model, batch.state)
        n = batch.n_atoms.cpu().numpy()
        out["e_ref"].append(batch.energy.cpu().numpy() / n)
        out["e_pred"].append(result.energy.detach().double().cpu().numpy() / n)
        out["f_ref"].append(batch.forces.cpu().numpy())
        out["f_pred"].append(result.forces.detach().double().cpu().numpy())
        out["numbers"].append(batch.state.numbers.cpu().numpy())
        for name, part in (components or {}).items():
            r = evaluate(part, batch.state)
            out[f"f_{name}"].append(r.forces.detach().double().cpu().numpy())
            out[f"e_{name}"].append(r.energy.detach().double().cpu().numpy() / n)
    return {k: np.concatenate(v) for k, v in out.items()}


def _errors(pred, ref, scale=1000.0):
    d = np.asarray(pred) - np.asarray(ref)
    return float(scale * np.abs(d).mean()), float(scale * np.sqrt((d**2).mean()))


def error_metrics(p: dict, components=()) -> dict:
    from ase.data import chemical_symbols

    e_mae, e_rmse = _errors(p["e_pred"], p["e_ref"])
    f_mae, f_rmse = _errors(p["f_pred"], p["f_ref"])
    result = {
        "n_structures": int(len(p["e_ref"])),
        "n_atoms": int(len(p["f_ref"])),
        "energy_mae_mev_per_atom": e_mae,
        "energy_rmse_mev_per_atom": e_rmse,
        "forces_mae_mev_per_A": f_mae,
        "forces_rmse_mev_per_A": f_rmse,
        "reference_forces_rms_mev_per_A": float(1000.0 * np.sqrt((p["f_ref"] ** 2).mean())),
        "forces_mae_by_element_mev_per_A": {
            chemical_symbols[int(z)]: _errors(p["f_pred"][p["numbers"] == z], p["f_ref"][p["numbers"] == z])[0]
            for z in np.unique(p["numbers"])
        },
    }
    for name in components:
        f = p[f"f_{name}"]
        result[name] = {
            "forces_rms_mev_per_A": float(1000.0 * np.sqrt((f**2).mean())),
            "forces_mean_norm_mev_per_A": float(1000.0 * np.linalg.norm(f, axis=-1).mean()),
        }
    if "fast" in components:
        mae, rmse = _errors(p["f_fast"], p["f_ref"])
        result["fast"]["alone_forces_mae_mev_per_A"] = mae
        result["fast"]["alone_forces_rmse_mev_per_A"] = rmse
    return result


# --- trajectories --------------------------------------------------------------------------------
def read_trajectory(path):
    """ASE Atoms of consecutive frames: an i-PI xyz trajectory (`# CELL(abcABC): ...`
    comments) or anything ASE reads (extxyz)."""
    import ase.io
    from ase import Atoms

    path = Path(path)
    if not path.is_file():
        raise UserError(f"trajectory file {path} does not exist")
    with open(path) as f:
        f.readline()
        comment = f.readline()
    if "CELL(abcABC)" in comment or "CELL(GENH)" in comment or "CELL{H}" in comment:
        from .data.generate import read_ipi_trajectory

        return [
            Atoms(symbols=[s.strip() for s in symbols], positions=positions, cell=cell, pbc=True)
            for symbols, positions, cell in read_ipi_trajectory(path)
        ]
    try:
        return ase.io.read(path, index=":")
    except Exception as e:  # ASE raises many types for malformed files
        raise UserError(f"cannot read trajectory {path}: {e}") from None


def write_ipi_xyz(atoms, path):
    """One structure as i-PI's xyz (cell in the comment line), Å."""
    a, b, c, alpha, beta, gamma = atoms.cell.cellpar()
    lines = [
        str(len(atoms)),
        f"# CELL(abcABC): {a:.8f} {b:.8f} {c:.8f} {alpha:.5f} {beta:.5f} {gamma:.5f} "
        "cell{angstrom} positions{angstrom}",
    ]
    for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions):
        lines.append(f"{s} {x:.8f} {y:.8f} {z:.8f}")
    Path(path).write_text("\n".join(lines) + "\n")


def reference_trajectory(reference, start, temperature, time_ps, dt_fs, seed=0, quiet=True):
    """Run NVT with `reference` from `start` (ASE Atoms) through `ipi-mts run`, every step
    kept; returns the frames as ASE Atoms."""
    from .data.generate import run_trajectory

    steps = int(round(time_ps * 1000.0 / dt_fs))
    if steps < 8:
        raise UserError(f"--trajectory-ps {time_ps} is too short for a spectrum at {dt_fs} fs")
    with tempfile.TemporaryDirectory(prefix="ipi-mts-eval-") as tmp:
        start_file = Path(tmp) / "start.xyz"
        write_ipi_xyz(start, start_file)
        paths = run_trajectory(reference, start_file, temperature, steps, 1, dt_fs, 1, seed, Path(tmp) / "run", quiet)
        return read_trajectory(paths[0])


def component_forces(pair, atoms_list, batch_size=8, device="cpu"):
    """(T, n, 3) forces (eV/Å) of the fast and slow parts of a pair along frames."""
    from .potentials import evaluate
    from .state import State

    fast, slow = [], []
    for start in range(0, len(atoms_list), batch_size):
        state = State.from_ase(atoms_list[start : start + batch_size], device=device)
        n = len(atoms_list[0])
        for part, out in ((pair.component("fast"), fast), (pair.component("slow"), slow)):
            f = evaluate(part, state).forces.detach().double().cpu().numpy()
            out.append(f.reshape(-1, n, 3))
    return np.concatenate(fast), np.concatenate(slow)


def spectrum_metrics(f_fast, f_slow, dt_fs, outer_step_fs) -> tuple[dict, dict]:
    """Fractions of power above the outer step's Nyquist frequency and above fixed bands,
    for the fast, slow and full forces; and the spectra themselves."""
    cutoff = outer_nyquist_thz(outer_step_fs)
    spectra, result = {}, {
        "trajectory_frames": int(f_fast.shape[0]),
        "trajectory_dt_fs": float(dt_fs),
        "outer_step_fs": float(outer_step_fs),
        "outer_nyquist_thz": cutoff,
        "outer_nyquist_cm1": cutoff * THZ_TO_CM1,
        "sampling_nyquist_cm1": 1000.0 / (2.0 * dt_fs) * THZ_TO_CM1,
    }
    for name, f in (("fast", f_fast), ("slow", f_slow), ("full", f_fast + f_slow)):
        freq, power = power_spectrum(f, dt_fs)
        spectra[name] = power
        result[name] = {
            "fraction_above_outer_nyquist": fraction_above(freq, power, cutoff),
            "fraction_above_cm1": {
                f"{band:g}": fraction_above(freq * THZ_TO_CM1, power, band) for band in BANDS_CM1
            },
            "mean_frequency_cm1": float((freq * power).sum() / max(power.sum(), 1e-300) * THZ_TO_CM1),
        }
    spectra["freq_thz"] = freq
    if cutoff * 2.0 > 1000.0 / dt_fs:
        result["note"] = "the outer step's Nyquist frequency is above the sampling one"
    return result, spectra


# --- plots ---------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_parity(p: dict, metrics: dict, path, components=()):
    plt = _pyplot()
    n = 2 + (1 if components else 0)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.6))
    ax = axes[0]
    ref, pred = p["f_ref"].ravel(), p["f_pred"].ravel()
    ax.hexbin(ref, pred, gridsize=80, bins="log", mincnt=1, cmap="viridis")
    lim = [min(ref.min(), pred.min()), max(ref.max(), pred.max())]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xlabel("reference force component (eV/Å)")
    ax.set_ylabel("predicted (eV/Å)")
    ax.set_title(
        f"forces: MAE {metrics['forces_mae_mev_per_A']:.1f}, RMSE {metrics['forces_rmse_mev_per_A']:.1f} meV/Å"
    )
    ax = axes[1]
    e_ref, e_pred = 1000.0 * p["e_ref"], 1000.0 * p["e_pred"]
    mean = e_ref.mean()
    ax.plot(e_ref - mean, e_pred - mean, "o", ms=3, alpha=0.7)
    lim = [min((e_ref - mean).min(), (e_pred - mean).min()), max((e_ref - mean).max(), (e_pred - mean).max())]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xlabel("reference energy per atom − its mean (meV/atom)")
    ax.set_ylabel("predicted − the same mean (meV/atom)")
    ax.set_title(
        f"energy per atom (mean {mean / 1000:.4f} eV): MAE {metrics['energy_mae_mev_per_atom']:.3f} meV/atom",
        fontsize=10,
    )
    if components:
        ax = axes[2]
        for k, name in enumerate(components):
            ax.plot(ref[::7], p[f"f_{name}"].ravel()[::7], ".", ms=1.5, alpha=0.5, color=f"C{k}", label=name)
        ax.plot([ref.min(), ref.max()], [ref.min(), ref.max()], "k--", lw=0.8)
        ax.set_xlabel("reference force component (eV/Å)")
        ax.set_ylabel("component force (eV/Å)")
        ax.set_title("fast and slow parts vs the total reference")
        ax.legend(markerscale=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spectrum(spectra: dict, result: dict, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    freq = spectra["freq_thz"] * THZ_TO_CM1
    for k, name in enumerate(("full", "fast", "slow")):
        power = spectra[name]
        ax.semilogy(freq[1:], power[1:] / power.sum(), lw=1.0, color=f"C{k}",
                    label=f"{name} (above ν_c: {result[name]['fraction_above_outer_nyquist']:.2e})")
    ax.axvline(result["outer_nyquist_cm1"], color="k", ls="--", lw=0.8)
    ax.text(result["outer_nyquist_cm1"], 0.98, f" ν_c = 1/(2·{result['outer_step_fs']:g} fs)",
            transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xlim(0, min(freq.max(), 1.3 * result["outer_nyquist_cm1"]))
    ax.set_xlabel("frequency (cm⁻¹)")
    ax.set_ylabel("force power (normalised)")
    ax.set_title("power spectrum of the forces along the trajectory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the command ---------------------------------------------------------------------------------
def _select(frames, split_name, fractions):
    from .data.dataset import split

    if split_name == "all":
        return frames
    parts = dict(zip(("train", "validation", "test"), split(frames, tuple(fractions))))
    chosen = parts[split_name]
    if not chosen:
        raise UserError(f"the {split_name} split of {len(frames)} frames is empty: use --split all")
    return chosen


def evaluate_model(
    model_path,
    data=None,
    out=None,
    split="test",
    trajectory=None,
    trajectory_dt_fs=None,
    reference="qtip4pf",
    structure=None,
    temperature=None,
    trajectory_ps=1.0,
    outer_step_fs=None,
    spectrum=True,
    device="auto",
    batch_size=8,
    seed=0,
    quiet=False,
) -> dict:
    """Everything `ipi-mts evaluate` does; returns the metrics (also metrics.json)."""
    from .data.dataset import read_frames
    from .potentials.model_file import load_model
    from .potentials.pair import LearnedPair
    from .training.batches import FrameSet
    from .potentials.base import pick_device

    device = pick_device(device)
    model_path = Path(model_path)
    model = load_model(model_path, device=device)
    metadata = getattr(model, "metadata", {}) or {}
    is_pair = isinstance(model, LearnedPair)
    out = Path(out) if out else model_path.with_name(f"{model_path.stem}-evaluation")
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr))

    if data is None:
        data = metadata.get("data", {}).get("files")
        if not data:
            raise UserError("give --data: the model file does not name its data files")
    fractions = metadata.get("data", {}).get("split") or (0.8, 0.1, 0.1)
    frames = _select(read_frames(data), split, fractions)
    model.check(frames[0].numbers)
    components = {name: model.component(name) for name in ("fast", "slow")} if is_pair else {}
    p = predict(model, FrameSet(frames, device), batch_size, components)
    metrics = error_metrics(p, tuple(components))
    result = {
        "model_file": str(model_path),
        "kind": "pair" if is_pair else "single",
        "data": {"files": [str(f) for f in ([data] if isinstance(data, str | Path) else data)],
                 "split": split, "fractions": list(fractions)},
        "errors": metrics,
    }
    plot_parity(p, metrics, out / "parity.png", tuple(components))
    say(
        f"{split} ({metrics['n_structures']} structures): energy MAE {metrics['energy_mae_mev_per_atom']:.3f} "
        f"meV/atom (RMSE {metrics['energy_rmse_mev_per_atom']:.3f}), force MAE "
        f"{metrics['forces_mae_mev_per_A']:.1f} meV/Å (RMSE {metrics['forces_rmse_mev_per_A']:.1f})"
    )

    if is_pair and spectrum:
        outer = outer_step_fs or metadata.get("outer_step_fs") or 2.0
        if trajectory is not None:
            traj = read_trajectory(trajectory)
            dt = trajectory_dt_fs
            if dt is None:
                times = [a.info.get("time_fs") for a in traj[:2]]
                if None in times or len(times) < 2:
                    raise UserError("give --trajectory-dt-fs: the trajectory's frames carry no time_fs")
                dt = float(times[1] - times[0])
            source = str(trajectory)
        else:
            dt = trajectory_dt_fs or 0.5
            start = read_trajectory(structure)[0] if structure else frames[0]
            temp = temperature or float(start.info.get("temperature", 300.0))
            say(f"running {trajectory_ps} ps of NVT at {temp:g} K with {reference} (every {dt} fs) for the spectra")
            traj = reference_trajectory(reference, start, temp, trajectory_ps, dt, seed=seed, quiet=quiet)
            source = f"NVT with {reference}, {trajectory_ps} ps at {temp:g} K"
        if not dt > 0:
            raise UserError(f"the trajectory time step must be positive, not {dt}")
        f_fast, f_slow = component_forces(model, traj, batch_size, device)
        spec, spectra = spectrum_metrics(f_fast, f_slow, dt, outer)
        spec["trajectory"] = source
        result["spectrum"] = spec
        plot_spectrum(spectra, spec, out / "spectrum.png")
        np.savez(out / "spectrum.npz", **spectra)
        say(
            f"slow-force power above 1/(2·{outer:g} fs) = {spec['outer_nyquist_cm1']:.0f} cm⁻¹: "
            f"{spec['slow']['fraction_above_outer_nyquist']:.2e} (fast: "
            f"{spec['fast']['fraction_above_outer_nyquist']:.2e}); above 1000 cm⁻¹: slow "
            f"{spec['slow']['fraction_above_cm1']['1000']:.3f}, fast {spec['fast']['fraction_above_cm1']['1000']:.3f}"
        )
    (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    say(f"wrote {out}/metrics.json, parity.png" + (", spectrum.png" if "spectrum" in result else ""))
    return result


__all__ = [
    "component_forces",
    "error_metrics",
    "evaluate_model",
    "fraction_above",
    "outer_nyquist_thz",
    "power_spectrum",
    "predict",
    "read_trajectory",
    "reference_trajectory",
    "spectrum_metrics",
]
