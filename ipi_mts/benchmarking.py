"""`ipi-mts bench`: the learned fast/slow pair against a conventional model and the reference
potential, side by side in one run.

Methods (water, NVT with a global SVR thermostat, which barely perturbs the dynamics, so that
diffusion stays meaningful; and NVE for the drift):
  reference      the reference potential at the inner step (0.5 fs)
  reference@S    the same with another random seed S: how far two runs of the same dynamics
                 are apart by the measures below, i.e. what "within error" can mean
  conventional   the single learned model at 0.5 fs
  pair Δt        the learned pair on i-PI MTS: fast every 0.5 fs, slow every Δt (1, 2, 3, 4 fs)
Reported: wall time per simulated ps (steady state, from `ipi-mts run`) and the speedup over
the conventional model; O–O, O–H, H–H RDFs against the reference (chi: the RMS difference in
units of the joint block-average error); per-species kinetic temperature; self-diffusion of O;
NVE conserved-energy drift. Results: JSON, a markdown table and PNG plots.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np

from .analysis import rdf_difference
from .errors import UserError

TEMPLATE = """<simulation verbosity='quiet'>
  <output prefix='run'>
    <properties stride='{pstride}' filename='out'> [ step, time{{picosecond}}, conserved{{electronvolt}}, temperature{{kelvin}}, temperature{{kelvin}}(O), temperature{{kelvin}}(H), potential{{electronvolt}} ] </properties>
    <trajectory filename='pos' stride='{tstride}' format='xyz' cell_units='angstrom'> positions{{angstrom}} </trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>{seed}</seed></prng>
{ffs}
  <system>
    <initialize nbeads='1'>
      <file mode='xyz' units='angstrom'>{structure}</file>
      <velocities mode='thermal' units='kelvin'>{temperature}</velocities>
    </initialize>
    <forces>
{forces}
    </forces>
    <motion mode='dynamics'>
      <dynamics mode='{mode}'{placement}>
        <timestep units='femtosecond'>{dt}</timestep>{nmts}{thermostat}
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>{temperature}</temperature></ensemble>
  </system>
</simulation>
"""


def _ff(name, model, component="full"):
    comp = f", component: {component}" if component != "full" else ""
    return (f"  <ffsocket name='{name}' mode='unix' pbc='false'><address>b{uuid.uuid4().hex[:10]}</address>"
            f"<parameters>{{model: {model}{comp}}}</parameters></ffsocket>")


def parse_method(method: str, models: dict, inner_fs: float = 0.5):
    """(time step fs, nmts, [(forcefield, model, component, mts weights)], placement) of a
    method: 'reference' or 'conventional' (one model at the inner step), or
    'pair:Δt[:inner]' / 'split:Δt[:inner]' (the learned pair's fast/slow components, or the
    q-TIP4P/F intra/inter physics split, on MTS with outer step Δt fs)."""
    kind, _, rest = method.partition(":")
    if kind in ("reference", "conventional"):
        return inner_fs, None, [("model", models[kind], "full", None)], None
    outer_text, _, placement = rest.partition(":")
    outer = float(outer_text)
    n_inner = outer / inner_fs
    if abs(n_inner - round(n_inner)) > 1e-9 or n_inner < 1:
        raise UserError(f"outer step {outer} fs is not a multiple of the inner step {inner_fs} fs")
    if kind == "pair":
        slow, fast = (models["pair"], "slow"), (models["pair"], "fast")
    elif kind == "split":
        slow, fast = ("qtip4pf-inter", "full"), ("qtip4pf-intra", "full")
    else:
        raise UserError(f"unknown benchmark method {method!r}")
    ffs = [("slow", *slow, "[1, 0]"), ("fast", *fast, "[0, 1]")]
    return outer, int(round(n_inner)), ffs, placement or None


def method_xml(method, models, structure, time_ps, ensemble, temperature=300.0, seed=7,
               inner_fs=0.5, frame_fs=10.0, thermostat="svr"):
    """The i-PI input of one method (see `parse_method`) and its time step (fs)."""
    dt, n_inner, ffs, placement = parse_method(method, models, inner_fs)
    nmts = f"<nmts>[1, {n_inner}]</nmts>" if n_inner else ""
    forces = "\n".join(
        f"      <force forcefield='{name}'>" + (f"<mts_weights>{w}</mts_weights>" if w else "") + "</force>"
        for name, _, _, w in ffs
    )
    mode, placed = ensemble, ""
    if placement and ensemble == "nvt":
        mode, placed = "mts", f" thermostat_placement='{placement}'"
    steps = int(round(time_ps * 1000.0 / dt))
    thermo = ""
    if ensemble == "nvt":
        tau = 200 if thermostat == "svr" else 100
        thermo = f"\n        <thermostat mode='{thermostat}'><tau units='femtosecond'>{tau}</tau></thermostat>"
    return TEMPLATE.format(
        pstride=max(1, int(round(5.0 / dt))), tstride=max(1, int(round(frame_fs / dt))), steps=steps,
        seed=seed, ffs="\n".join(_ff(name, model, comp) for name, model, comp, _ in ffs),
        structure=Path(structure).resolve(), temperature=temperature,
        forces=forces, mode=mode, placement=placed, dt=dt, nmts=nmts, thermostat=thermo,
    ), dt


def run_method(workdir: Path, xml: str) -> dict:
    """Run one input through `ipi-mts run` in `workdir`: its ms/step and conserved-energy
    drift. A finished run of the same input there is reused (summary.json), so an
    interrupted benchmark goes on where it stopped and a changed analysis needs no new MD."""
    summary, done = workdir / "summary.json", workdir / "input.xml"

    def same(a, b):  # socket addresses are made unique per run
        return re.sub(r"<address>[^<]*</address>", "", a) == re.sub(r"<address>[^<]*</address>", "", b)

    if summary.is_file() and done.is_file() and same(done.read_text(), xml):
        return json.loads(summary.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    summary.unlink(missing_ok=True)
    (workdir / "input.xml").write_text(xml)
    result = subprocess.run([sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", "input.xml"],
                            cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"benchmark run in {workdir} failed: {result.stderr.strip().splitlines()[-1:]}")
    line = [l for l in result.stdout.splitlines() if l.startswith("ipi-mts run: done")][-1]
    out = {
        "ms_per_step": float(re.search(r"([0-9.e+-]+) ms/step", line).group(1)),
        "drift_meV_per_atom_ps": float(re.search(r"drift ([0-9.e+-]+) meV", line).group(1)),
    }
    summary.write_text(json.dumps(out))
    return out


def read_frames_xyz(path):
    from .data.generate import read_ipi_trajectory
    from ase import Atoms

    for symbols, positions, cell in read_ipi_trajectory(path):
        yield Atoms([s.strip() for s in symbols], positions=positions, cell=cell, pbc=True)


def analyse(workdir: Path, equilibration_ps: float, frame_fs: float) -> dict:
    from .analysis import block_error, rdf_frames, read_properties, self_diffusion

    props = read_properties(workdir / "run.out")
    keep = props["time{picosecond}"] >= equilibration_ps
    out = {}
    for sp in ("O", "H"):
        mean, err = block_error(props[f"temperature{{kelvin}}({sp})"][keep])
        out[f"T_{sp}"] = (float(mean), float(err))
    frames = list(read_frames_xyz(workdir / "run.pos_0.xyz"))
    skip = int(round(equilibration_ps * 1000.0 / frame_fs))
    frames = frames[skip:]
    for a, b, name in ((8, 8, "OO"), (8, 1, "OH"), (1, 1, "HH")):
        g, r = rdf_frames(frames, a, b)
        out[f"rdf_{name}"] = g
        out["r"] = r
    positions = np.array([f.positions for f in frames])
    out["D_O"] = float(self_diffusion(positions, frame_fs, frames[0].numbers == 8)[0])
    return out


def compare(methods, models, baseline, structure=None, nvt_ps=3.0, nve_ps=1.0, equilibration_ps=0.5,
            thermostat="svr", workdir=None, quiet=False):
    """Run every method (NVT for observables, NVE for the drift) and compare each with the
    'reference' method; speedups are relative to the method named `baseline`."""
    import tempfile

    from tqdm import tqdm

    structure = structure or Path(__file__).resolve().parents[1] / "inputs" / "water-64" / "init.xyz"
    frame_fs = 10.0
    results = {}
    root = Path(workdir or tempfile.mkdtemp(prefix="ipi-mts-bench-"))
    for method in tqdm(methods, desc="methods", disable=quiet, file=sys.stderr):
        case = root / method.replace(":", "-").replace("@", "-seed-")
        name, _, seed = method.partition("@")
        seed = int(seed) if seed else 7
        xml, dt = method_xml(name, models, structure, nvt_ps + equilibration_ps, "nvt", seed=seed,
                             frame_fs=frame_fs, thermostat=thermostat)
        nvt = run_method(case / "nvt", xml)
        nve = {"drift_meV_per_atom_ps": float("nan")}
        if nve_ps > 0 and not method.endswith(":inner"):  # NVE does not depend on the placement
            nve = run_method(case / "nve", method_xml(name, models, structure, nve_ps, "nve", seed=seed,
                                                      frame_fs=frame_fs)[0])
        results[method] = {"dt_fs": dt, "s_per_ps": nvt["ms_per_step"] / dt,
                           "nve_drift": nve["drift_meV_per_atom_ps"],
                           **analyse(case / "nvt", equilibration_ps, frame_fs)}
    return judge(results, baseline), results


def judge(results: dict, baseline: str) -> list[dict]:
    """Rows of the report: speed relative to `baseline`, and observables against 'reference'.

    RDFs: χ (the RMS over bins of Δg in units of the block-average errors, see
    `analysis.rdf_difference`). Block errors of 0.6 ps blocks underestimate the error of
    3-ps runs (correlations outlast a block), so where a control run `reference@SEED` (the
    reference with another seed) exists, the reference's error is measured by it instead:
    a method is within error if for each RDF its RMS |Δg| to the reference is at most 1.5x
    the control's, and each species' mean kinetic temperature is within 2 σ_ΔT of the
    reference's, σ_ΔT the larger of the block estimate and the control's RMS deviation over
    the two species. Without a control: χ ≤ 1.5 and the 2σ block criterion."""
    ref = results["reference"]
    names = ("OO", "OH", "HH")

    def rms_diff(r, name):
        g, g0 = r[f"rdf_{name}"].mean(axis=0), ref[f"rdf_{name}"].mean(axis=0)
        return float(np.sqrt(np.mean((g - g0) ** 2)))

    controls = [m for m in results if m.startswith("reference@")]
    control = results[controls[0]] if controls else None
    rows = []
    for method, r in results.items():
        row = {"method": method, "outer_fs": r["dt_fs"], "s_per_ps": r["s_per_ps"],
               "speedup": results[baseline]["s_per_ps"] / r["s_per_ps"],
               "T_O": r["T_O"], "T_H": r["T_H"], "D_O": r["D_O"], "nve_drift": r["nve_drift"]}
        for name in names:
            row[f"rdf_{name}_chi"] = (rdf_difference(r[f"rdf_{name}"], ref[f"rdf_{name}"])["chi"]
                                      if method != "reference" else 0.0)
        dT = {sp: abs(r[f"T_{sp}"][0] - ref[f"T_{sp}"][0]) for sp in ("O", "H")}
        sigma = {sp: float(np.hypot(r[f"T_{sp}"][1], ref[f"T_{sp}"][1])) for sp in ("O", "H")}
        if control is None:
            row["within_error"] = bool(max(row[f"rdf_{n}_chi"] for n in names) <= 1.5
                                       and all(dT[sp] <= 2 * sigma[sp] for sp in dT))
        else:
            floor = float(np.sqrt(np.mean([(control[f"T_{sp}"][0] - ref[f"T_{sp}"][0]) ** 2 for sp in dT])))
            for name in names:
                row[f"rdf_{name}_vs_control"] = (rms_diff(r, name) / rms_diff(control, name)
                                                 if method != "reference" else 0.0)
            row["sigma_dT"] = {sp: max(sigma[sp], floor) for sp in dT}
            row["within_error"] = bool(max(row[f"rdf_{n}_vs_control"] for n in names) <= 1.5
                                       and all(dT[sp] <= 2 * row["sigma_dT"][sp] for sp in dT))
        rows.append(row)
    return rows


def bench_learned(pair="water-pair", baseline="water-baseline", reference="qtip4pf",
                  outer_fs=(1.0, 2.0, 3.0, 4.0), out="docs/benchmarks/learned-mts", **kw):
    """The learned pair on MTS against the conventional model at 0.5 fs (issue: ≥3x)."""
    models = {"pair": pair, "conventional": baseline, "reference": reference}
    methods = ["reference", "reference@8", "conventional"] + [f"pair:{o:g}" for o in outer_fs]
    rows, results = compare(methods, models, "conventional", **kw)
    write_report(rows, results, Path(out), "speedup vs the conventional model at 0.5 fs")
    return rows


def bench_placement(outer_fs=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), out=None, family="split", pair="water-pair",
                    baseline="water-baseline", **kw):
    """MTS with the thermostat outside the step (i-PI's built-in MTS) and inside the innermost
    loop (mode='mts'), PILE_L, against the reference at 0.5 fs: for the q-TIP4P/F physics split
    (`family='split'`, speedups vs q-TIP4P/F at 0.5 fs) or the learned pair (`'pair'`,
    speedups vs the conventional model at 0.5 fs)."""
    if family not in ("split", "pair"):
        raise UserError(f"unknown MTS family {family!r}: split or pair")
    models = {"reference": "qtip4pf", "pair": pair, "conventional": baseline}
    methods = ["reference", "reference@8"] + (["conventional"] if family == "pair" else [])
    methods += [f"{family}:{o:g}" for o in outer_fs] + [f"{family}:{o:g}:inner" for o in outer_fs]
    speed_base = "conventional" if family == "pair" else "reference"
    rows, results = compare(methods, models, speed_base, thermostat="pile_l", **kw)
    out = out or f"docs/benchmarks/thermostat-placement{'-pair' if family == 'pair' else ''}"
    label = "speedup vs the conventional model at 0.5 fs" if family == "pair" else "speedup vs q-TIP4P/F at 0.5 fs"
    write_report(rows, results, Path(out), label)
    return rows


def write_report(rows, results, out: Path, speedup_label: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import os
    import shlex

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    head = [f"Measured by `{shlex.join(['ipi-mts'] + sys.argv[1:]) if sys.argv[0].endswith('ipi-mts') else shlex.join(sys.argv)}` "
            f"on {len(cores) or os.cpu_count()} of the machine's {os.cpu_count()} CPU cores.", ""]
    calibrated = "rdf_OO_vs_control" in rows[0]
    extra = " RMS Δg / control's O–O / O–H / H–H |" if calibrated else ""
    lines = head + [f"| method | Δt outer (fs) | s / simulated ps | {speedup_label} | RDF χ O–O / O–H / H–H |{extra} T(O) K | T(H) K | D(O) 1e-5 cm²/s | NVE drift meV/atom/ps | within error |",
                    "|---|---|---|---|---|" + ("---|" if calibrated else "") + "---|---|---|---|---|"]
    for r in rows:
        ratios = (f" {r['rdf_OO_vs_control']:.2f} / {r['rdf_OH_vs_control']:.2f} / {r['rdf_HH_vs_control']:.2f} |"
                  if calibrated else "")
        lines.append(
            f"| {r['method']} | {r['outer_fs']:g} | {r['s_per_ps']:.1f} | {r['speedup']:.2f} | "
            f"{r['rdf_OO_chi']:.2f} / {r['rdf_OH_chi']:.2f} / {r['rdf_HH_chi']:.2f} |{ratios} "
            f"{r['T_O'][0]:.1f} ± {r['T_O'][1]:.1f} | {r['T_H'][0]:.1f} ± {r['T_H'][1]:.1f} | "
            f"{r['D_O']:.2f} | {r['nve_drift']:+.3g} | {'yes' if r['within_error'] else 'no'} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, name in zip(axes[:3], ("OO", "OH", "HH")):
        for method, r in results.items():
            ax.plot(r["r"], r[f"rdf_{name}"].mean(axis=0), label=method, lw=1.2 if method != "reference" else 2.5)
        ax.set_xlabel("r (Å)"), ax.set_title(f"g_{name}(r)")
    axes[0].legend(fontsize=7)
    for family in sorted({r["method"].split(":")[0] + (":inner" if r["method"].endswith(":inner") else "")
                          for r in rows if ":" in r["method"]}):
        sel = [r for r in rows if ":" in r["method"] and
               (r["method"].split(":")[0] + (":inner" if r["method"].endswith(":inner") else "")) == family]
        axes[3].plot([r["outer_fs"] for r in sel], [r["speedup"] for r in sel], "o-", label=family)
        for r in sel:
            if not r["within_error"]:
                axes[3].plot(r["outer_fs"], r["speedup"], "x", color="red", ms=10)
    axes[3].axhline(1.0, color="gray", lw=0.8)
    axes[3].legend(fontsize=7)
    axes[3].set_xlabel("outer step (fs)  (x: outside the error)"), axes[3].set_ylabel(speedup_label)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print("\n".join(lines))
    print("\n".join(verdict(rows, speedup_label)))


def verdict(rows, speedup_label: str) -> list[str]:
    """One line per MTS method: its speedup and how far its observables are from the
    reference's, next to how far a second reference run is (the noise floor)."""
    def far(r):
        if "rdf_OO_vs_control" in r:
            rdf = (f"RDF RMS deviation / the control's O–O/O–H/H–H {r['rdf_OO_vs_control']:.2f}/"
                   f"{r['rdf_OH_vs_control']:.2f}/{r['rdf_HH_vs_control']:.2f}")
        else:
            rdf = f"RDF χ O–O/O–H/H–H {r['rdf_OO_chi']:.2f}/{r['rdf_OH_chi']:.2f}/{r['rdf_HH_chi']:.2f}"
        return f"{rdf}, T(O) {r['T_O'][0]:.0f} K, T(H) {r['T_H'][0]:.0f} K"

    ref = next(r for r in rows if r["method"] == "reference")
    out = [f"reference: T(O) {ref['T_O'][0]:.0f} ± {ref['T_O'][1]:.0f} K, T(H) {ref['T_H'][0]:.0f} ± {ref['T_H'][1]:.0f} K"]
    out += [f"{r['method']} (another seed, the noise floor): {far(r)}" for r in rows if r["method"].startswith("reference@")]
    for r in rows:
        if ":" in r["method"] or r["method"] == "conventional":
            out.append(f"{r['method']}: {r['speedup']:.2f}x ({speedup_label}); {far(r)}; "
                       f"{'within' if r['within_error'] else 'outside'} the reference's error")
    return out
