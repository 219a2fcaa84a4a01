"""`ipi-mts bench`: the learned fast/slow pair against a conventional model and the reference
potential, side by side in one run.

Methods (water, NVT with a global SVR thermostat, which barely perturbs the dynamics, so that
diffusion stays meaningful; and NVE for the drift):
  reference      the reference potential at the inner step (0.5 fs)
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
      <dynamics mode='{mode}'>
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


def method_xml(method, models, structure, time_ps, ensemble, temperature=300.0, seed=7,
               inner_fs=0.5, frame_fs=10.0):
    """The i-PI input of one method ('reference', 'conventional' or 'pair:Δt')."""
    if method.startswith("pair:"):
        outer = float(method.split(":")[1])
        n_inner = outer / inner_fs
        if abs(n_inner - round(n_inner)) > 1e-9:
            raise UserError(f"outer step {outer} fs is not a multiple of the inner step {inner_fs} fs")
        dt, nmts = outer, f"<nmts>[1, {int(round(n_inner))}]</nmts>"
        ffs = _ff("slow", models["pair"], "slow") + "\n" + _ff("fast", models["pair"], "fast")
        forces = ("      <force forcefield='slow'><mts_weights>[1, 0]</mts_weights></force>\n"
                  "      <force forcefield='fast'><mts_weights>[0, 1]</mts_weights></force>")
    else:
        dt, nmts = inner_fs, ""
        ffs = _ff("model", models[method])
        forces = "      <force forcefield='model'/>"
    steps = int(round(time_ps * 1000.0 / dt))
    thermostat = ("\n        <thermostat mode='svr'><tau units='femtosecond'>200</tau></thermostat>"
                  if ensemble == "nvt" else "")
    return TEMPLATE.format(
        pstride=max(1, int(round(5.0 / dt))), tstride=max(1, int(round(frame_fs / dt))), steps=steps,
        seed=seed, ffs=ffs, structure=Path(structure).resolve(), temperature=temperature,
        forces=forces, mode=ensemble, dt=dt, nmts=nmts, thermostat=thermostat,
    ), dt


def run_method(workdir: Path, xml: str) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.xml").write_text(xml)
    result = subprocess.run([sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", "input.xml"],
                            cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"benchmark run in {workdir} failed: {result.stderr.strip().splitlines()[-1:]}")
    line = [l for l in result.stdout.splitlines() if l.startswith("ipi-mts run: done")][-1]
    return {
        "ms_per_step": float(re.search(r"([0-9.e+-]+) ms/step", line).group(1)),
        "drift_meV_per_atom_ps": float(re.search(r"drift ([0-9.e+-]+) meV", line).group(1)),
    }


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


def bench(pair, baseline, reference="qtip4pf", structure=None, outer_fs=(1.0, 2.0, 3.0, 4.0),
          nvt_ps=3.0, nve_ps=1.0, equilibration_ps=0.5, out="docs/benchmarks/learned-mts",
          workdir=None, quiet=False):
    import tempfile

    from tqdm import tqdm

    from .analysis import rdf_difference

    structure = structure or Path(__file__).resolve().parents[1] / "inputs" / "water-64" / "init.xyz"
    models = {"pair": pair, "conventional": baseline, "reference": reference}
    methods = ["reference", "conventional"] + [f"pair:{o:g}" for o in outer_fs]
    frame_fs = 10.0
    results = {}
    root = Path(workdir or tempfile.mkdtemp(prefix="ipi-mts-bench-"))
    for method in tqdm(methods, desc="methods", disable=quiet, file=sys.stderr):
        case = root / method.replace(":", "-")
        xml, dt = method_xml(method, models, structure, nvt_ps + equilibration_ps, "nvt", frame_fs=frame_fs)
        nvt = run_method(case / "nvt", xml)
        xml, _ = method_xml(method, models, structure, nve_ps, "nve", frame_fs=frame_fs)
        nve = run_method(case / "nve", xml)
        obs = analyse(case / "nvt", equilibration_ps, frame_fs)
        results[method] = {"dt_fs": dt, "s_per_ps": nvt["ms_per_step"] / dt, "nve_drift": nve["drift_meV_per_atom_ps"],
                           **obs}
    ref, conv = results["reference"], results["conventional"]
    rows = []
    for method, r in results.items():
        row = {"method": method, "outer_fs": r["dt_fs"], "s_per_ps": r["s_per_ps"],
               "speedup_vs_conventional": conv["s_per_ps"] / r["s_per_ps"],
               "T_O": r["T_O"], "T_H": r["T_H"], "D_O": r["D_O"], "nve_drift": r["nve_drift"]}
        for name in ("OO", "OH", "HH"):
            row[f"rdf_{name}_chi"] = (rdf_difference(r[f"rdf_{name}"], ref[f"rdf_{name}"])["chi"]
                                      if method != "reference" else 0.0)
        rows.append(row)
    write_report(rows, results, Path(out))
    return rows


def write_report(rows, results, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = ["| method | Δt outer (fs) | s / simulated ps | speedup vs conventional | RDF χ O–O / O–H / H–H | T(O) K | T(H) K | D(O) 1e-5 cm²/s | NVE drift meV/atom/ps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['outer_fs']:g} | {r['s_per_ps']:.1f} | {r['speedup_vs_conventional']:.2f} | "
            f"{r['rdf_OO_chi']:.2f} / {r['rdf_OH_chi']:.2f} / {r['rdf_HH_chi']:.2f} | "
            f"{r['T_O'][0]:.1f} ± {r['T_O'][1]:.1f} | {r['T_H'][0]:.1f} ± {r['T_H'][1]:.1f} | "
            f"{r['D_O']:.2f} | {r['nve_drift']:+.3g} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, name in zip(axes[:3], ("OO", "OH", "HH")):
        for method, r in results.items():
            ax.plot(r["r"], r[f"rdf_{name}"].mean(axis=0), label=method, lw=1.2 if method != "reference" else 2.5)
        ax.set_xlabel("r (Å)"), ax.set_title(f"g_{name}(r)")
    axes[0].legend(fontsize=7)
    pairs = [r for r in rows if r["method"].startswith("pair")]
    axes[3].plot([r["outer_fs"] for r in pairs], [r["speedup_vs_conventional"] for r in pairs], "o-")
    axes[3].axhline(1.0, color="gray", lw=0.8)
    axes[3].set_xlabel("outer step (fs)"), axes[3].set_ylabel("speedup vs conventional at 0.5 fs")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print("\n".join(lines))
