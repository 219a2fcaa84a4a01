"""Observables of MD trajectories, with block-average statistical errors: radial distribution
functions, self-diffusion, the configurational temperature, and means of i-PI properties."""

from __future__ import annotations

import numpy as np

from .neighbors import neighbor_pairs


def block_error(samples: np.ndarray, n_blocks: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and its standard error from `n_blocks` contiguous blocks."""
    samples = np.asarray(samples, dtype=float)
    blocks = np.array_split(samples, n_blocks)
    means = np.array([b.mean(axis=0) for b in blocks if len(b)])
    return samples.mean(axis=0), means.std(axis=0, ddof=1) / np.sqrt(len(means))


def rdf_frames(frames, species_a: int, species_b: int, r_max: float = 6.0, n_bins: int = 120):
    """g_ab(r) of each frame: (n_frames, n_bins), and the bin centres (Å).

    `frames` are ASE Atoms (Å). Ordered pairs i ∈ a, j ∈ b, i ≠ j, every periodic image
    within r_max, normalised by the ideal-gas count N_a (N_b − δ_ab) / V · 4πr²dr."""
    import torch

    edges = np.linspace(0.0, r_max, n_bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    out = []
    for atoms in frames:
        pos = torch.as_tensor(atoms.positions)
        i, j, vec = neighbor_pairs(
            pos, torch.as_tensor(atoms.cell.array)[None], torch.as_tensor(atoms.pbc)[None],
            torch.zeros(len(atoms), dtype=torch.long), r_max, full_list=True,
        )
        z = atoms.numbers
        keep = (z[i.numpy()] == species_a) & (z[j.numpy()] == species_b)
        hist, _ = np.histogram(vec.norm(dim=1).numpy()[keep], bins=edges)
        n_a = int((z == species_a).sum())
        n_b = int((z == species_b).sum()) - (species_a == species_b)
        out.append(hist / (n_a * n_b / atoms.get_volume() * shell))
    return np.array(out), centres


def rdf_difference(g_test: np.ndarray, g_ref: np.ndarray, n_blocks: int = 5) -> dict:
    """How far a test RDF is from a reference one, in units of their joint statistical error:
    chi = sqrt(mean over bins of (Δg / σ)²), σ² = σ_test² + σ_ref² from block averages (bins
    with σ = 0, where both are zero, are left out). chi ≲ 1.5 means "within error"."""
    mean_t, se_t = block_error(g_test, n_blocks)
    mean_r, se_r = block_error(g_ref, n_blocks)
    sigma = np.sqrt(se_t**2 + se_r**2)
    ok = sigma > 0
    chi = float(np.sqrt(np.mean(((mean_t - mean_r)[ok] / sigma[ok]) ** 2)))
    return {"chi": chi, "max_abs_diff": float(np.abs(mean_t - mean_r).max()),
            "mean_ref_error": float(se_r[ok].mean())}


def self_diffusion(positions: np.ndarray, dt_fs: float, species_mask=None, fit_from: float = 0.2,
                   max_lag: float = 0.25):
    """Self-diffusion coefficient from the mean squared displacement of unwrapped positions
    (n_frames, n_atoms, 3) Å, frames `dt_fs` apart: D = slope(MSD)/6, fitted over the lag times
    from `fit_from` × the longest lag up to the longest, which is `max_lag` × the run
    (averaged over all time origins).
    Returns (D in 1e-5 cm²/s, lags in ps, MSD in Å²)."""
    x = np.asarray(positions, dtype=float)
    if species_mask is not None:
        x = x[:, species_mask]
    n = len(x)
    lags = np.arange(1, max(2, int(n * max_lag)) + 1)
    msd = np.array([np.mean(np.sum((x[lag:] - x[:-lag]) ** 2, axis=-1)) for lag in lags])
    t_ps = lags * dt_fs * 1e-3
    fit = t_ps >= fit_from * t_ps[-1]
    slope = np.polyfit(t_ps[fit], msd[fit], 1)[0]  # Å²/ps
    return slope / 6.0 * 10.0, t_ps, msd  # 1 Å²/ps = 1e-4 cm²/s = 10 × 1e-5 cm²/s


def read_properties(path) -> dict[str, np.ndarray]:
    """Columns of an i-PI properties file by name (units and arguments kept in the name,
    e.g. 'temperature{kelvin}(O)')."""
    names = []
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if "-->" in line:
                names.append(line.split("-->")[1].split(":")[0].strip())
    data = np.loadtxt(path, ndmin=2)
    return {name: data[:, k] for k, name in enumerate(names)}


def read_monitor(path) -> dict[str, np.ndarray]:
    """Columns of a `.mts_monitor` / `.map_monitor` file (ipi_mts.motion.monitor) by name."""
    with open(path) as f:
        names = f.readline().lstrip("#").split()
    data = np.loadtxt(path, ndmin=2)
    return {name: data[:, k] for k, name in enumerate(names)}


def configurational_sums(model, frames, probes: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Per frame and species s, Σ_{i∈s} |F_i|² (eV²/Å²) and Σ_{i∈s} Δ_i E (eV/Å², Hutchinson
    with `probes` probes, `potentials.forces_and_laplacian`) for ASE `frames`: the two sums of
    the configurational temperature, {s: array (n_frames, 2)}."""
    import torch

    from .potentials import forces_and_laplacian
    from .state import State

    generator = torch.Generator().manual_seed(seed)
    out: dict[str, list] = {}
    for atoms in frames:
        forces, lap = forces_and_laplacian(model, State.from_ase([atoms]), probes, generator)
        f2, lap = (forces.double() ** 2).sum(1).cpu().numpy(), lap.double().cpu().numpy()
        symbols = np.array(atoms.get_chemical_symbols())
        for s in dict.fromkeys(symbols):
            out.setdefault(s, []).append((f2[symbols == s].sum(), lap[symbols == s].sum()))
    return {s: np.array(v) for s, v in out.items()}


def configurational_temperature(sums: np.ndarray) -> float:
    """T_conf = ⟨Σ|F_i|²⟩ / (k_B ⟨Σ Δ_i E⟩) (K) from `configurational_sums` of one species:
    in the canonical ensemble ⟨|F_i|²⟩ = k_B T ⟨Δ_i E⟩ for every atom (integration by parts),
    so T_conf checks the sampled positions, without the momenta."""
    from .units import KB_EV_PER_K

    return float(sums[:, 0].mean() / (KB_EV_PER_K * sums[:, 1].mean()))
