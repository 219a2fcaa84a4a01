"""`ipi-mts bench`: the learned fast/slow pair against a conventional model and the reference
potential, side by side in one run.

Methods (water, NVT with a global SVR thermostat, which barely perturbs the dynamics, so that
diffusion stays meaningful; and NVE for the drift):
  reference      the reference potential at the inner step (0.5 fs)
  reference@S    the same with another random seed S: how far two runs of the same dynamics
                 are apart by the measures below, i.e. what "within error" can mean
  conventional   the single learned model at 0.5 fs
  pair Δt        the learned pair on i-PI MTS: fast every 0.5 fs, slow every Δt (1, 2, 3, 4 fs)
  vv Δt          velocity Verlet of the reference at Δt (maps: at the long stride, this is also
                 the direct predictor alone, one Verlet step of the anchor per stride)
  midpoint Δt    the implicit midpoint map of the reference (S = τH) as mode='learned_map'
  map NAME       a learned map (file or shipped name) at its stride, anchored to the reference
Reported: wall time per simulated ps (steady state, from `ipi-mts run`) and the speedup over
a baseline method; every species pair's RDF against the reference (chi: the RMS difference in
units of the joint block-average error); per-species kinetic temperature; self-diffusion of the
heaviest species; NVE conserved-energy drift and fluctuation; for maps, solver iterations and
fallbacks. Results: JSON, a markdown table and PNG plots.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .analysis import rdf_difference
from .errors import UserError

TEMPLATE = """<!-- structure sha256 {structure_sha}{weights_sha} (a reused run must have started from the same atoms with the same weights) -->
<simulation verbosity='quiet' safe_stride='{safe_stride}'>
  <output prefix='run'>
    <properties stride='{pstride}' filename='out'> [ step, time{{picosecond}}, conserved{{electronvolt}}, temperature{{kelvin}}, {temps}potential{{electronvolt}} ] </properties>
    <trajectory filename='pos' stride='{tstride}' format='xyz' cell_units='angstrom'> positions{{angstrom}} </trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>{seed}</seed></prng>
{ffs}
  <system>
    <initialize nbeads='{beads}'>
      <file mode='xyz' units='angstrom'>{structure}</file>
      <velocities mode='thermal' units='kelvin'>{temperature}</velocities>
    </initialize>
    <forces>
{forces}
    </forces>
    <motion mode='dynamics'>{fixcom}
      <dynamics mode='{mode}'{attrs}>
        <timestep units='femtosecond'>{dt}</timestep>{nmts}{thermostat}
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>{temperature}</temperature></ensemble>
  </system>
</simulation>
"""


THERMOSTAT_TAU_FS = {"svr": 200.0, "pile_l": 100.0}  # defaults: gentle, so that diffusion means something
ISOKINETIC_TAU_FS = 20.0  # placement 'isokinetic' (SIN(R)): its thermostat masses kT τ² and friction 1/τ


def _ff(name, model, component="full", in_process=False, params=None):
    """A forcefield served by `ipi-mts serve` over a UNIX socket, or in i-PI's process."""
    extra = "".join(f", {k}: {v}" for k, v in (params or {}).items())
    parameters = (f"<parameters>{{model: {model}" + (f", component: {component}" if component != "full" else "")
                  + extra + "}</parameters>")
    if in_process:
        return f"  <ffdirect name='{name}'><pes>ipi_mts</pes>{parameters}</ffdirect>"
    return (f"  <ffsocket name='{name}' mode='unix' pbc='false'><address>b{uuid.uuid4().hex[:10]}</address>"
            f"{parameters}</ffsocket>")


class Method(NamedTuple):
    dt: float  # i-PI time step (fs)
    n_inner: int | None  # inner steps per outer step (MTS), None for one level
    ffs: list  # [(forcefield, model, component, mts weights or None)]
    placement: str | None = None  # thermostat placement of MTS ('inner'), None for i-PI's
    map_model: str | None = None  # mode='learned_map' with this model
    splitting: str | None = None  # mode='mts' splitting ('baoab'), None for i-PI's default (obabo)
    gle: bool = False  # the high-pass GLE (`highpass_gle`) in place of the benchmark's thermostat
    slow_beads: int | None = None  # path integrals: the slow force contracted to this many beads, None: every bead
    slow_params: dict | None = None  # extra <parameters> of the slow forcefield (':molly': MOLLY's averaging)


# MOLLY's rigid water for ':molly' methods: q-TIP4P/F's mean O–H length and HOH angle at 300 K
# (its 0.5 fs reference run of benchmarks/placement_seeds.py, water-64, by benchmarks/molecule_geometry.py)
MOLLY_WATER = "rigid:0.963:104.9"


def map_stride_fs(model: str) -> float:
    """The stride (fs) of a map file or shipped map."""
    from . import units
    from .potentials.model_file import load_map

    return load_map(model).tau / units.FEMTOSECOND


def parse_method(method: str, models: dict, inner_fs: float = 0.5) -> Method:
    """A method's time step, levels, forcefields and dynamics: 'reference' or 'conventional'
    (one model at the inner step), 'pair:Δt[:inner[:baoab]]' / 'split:Δt[:inner[:baoab]]' (the
    learned pair's fast/slow components, or the q-TIP4P/F intra/inter physics split, on MTS with
    outer step Δt fs, or 'pair:Δt/δt…' with inner step δt fs in place of `inner_fs`;
    'inner': mode='mts' with the thermostat inside, 'isokinetic': SIN(R), splitting obabo or
    baoab; then ':gle': the high-pass GLE of `highpass_gle` as the thermostat; last ':rpcK':
    with path integrals, the slow force ring-polymer contracted to K beads; ':molly' anywhere
    after Δt: the slow force mollified, `potentials.mollified` with MOLLY_WATER), 'vv:Δt' (the
    reference at Δt), 'midpoint:Δt' (the implicit midpoint map of the
    reference), 'map:MODEL' (a learned map at its stride; its anchor must be the reference) or
    'direct:MODEL' (that map's direct predictor alone, no solve)."""
    kind, _, rest = method.partition(":")
    if kind in ("reference", "conventional"):
        return Method(inner_fs, None, [("model", models[kind], "full", None)])
    reference = [("model", models["reference"], "full", None)]
    if kind == "vv":  # as mode='mts' with one level (i-PI's nve/nvt bit for bit) for its blow-up guard
        return Method(float(rest), None, reference, placement="outer")
    if kind == "midpoint":
        return Method(float(rest), None, reference, map_model=f"midpoint:{models['reference']}")
    if kind in ("map", "direct"):
        model = resolved_model(rest)
        return Method(map_stride_fs(rest), None, reference, map_model=model if kind == "map" else f"direct:{model}")
    molly = ":molly" in rest
    rest = rest.replace(":molly", "")
    contraction = re.search(r":rpc(\d+)$", rest)
    rest = rest[:contraction.start()] if contraction else rest
    outer_text, _, placement = rest.partition(":")
    gle = placement == "gle" or placement.endswith(":gle")
    placement = placement.removesuffix("gle").removesuffix(":") if gle else placement
    placement, _, splitting = placement.partition(":")
    if splitting not in ("", "obabo", "baoab") or (splitting and placement != "inner"):
        raise UserError(f"unknown benchmark method {method!r} (a splitting follows ':inner': obabo or baoab; ':gle' comes last)")
    outer_text, _, inner_text = outer_text.partition("/")
    outer, inner_fs = float(outer_text), float(inner_text) if inner_text else inner_fs
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
    return Method(outer, int(round(n_inner)), ffs, placement or None, splitting=splitting or None, gle=gle,
                  slow_beads=int(contraction.group(1)) if contraction else None,
                  slow_params={"mollify": MOLLY_WATER} if molly else None)


def resolved_model(model: str) -> str:
    """A model file as an absolute path (each run goes in its own folder); a shipped or
    reference model's name unchanged. A model file that does not exist is a UserError."""
    path = Path(model).expanduser()
    if path.suffix != ".pt" and not path.is_file():
        return model
    if not path.is_file():
        raise UserError(f"model file {model} does not exist")
    return str(path.resolve())


def heaviest_first(symbols) -> list[str]:
    """The distinct chemical symbols, heaviest first (O, H; the order of RDF pairs and columns)."""
    from ase.data import atomic_numbers

    return sorted(set(symbols), key=lambda s: -atomic_numbers[s])


def species_of(structure) -> list[str]:
    """The species of a structure file, heaviest first."""
    import ase.io

    return heaviest_first(ase.io.read(structure).get_chemical_symbols())


def frame_stride(frame_fs: float, dt: float) -> int:
    """Steps between trajectory frames: the multiple of the time step closest to `frame_fs`
    (the analysis uses the interval this gives, `frame_stride * dt`)."""
    return max(1, int(round(frame_fs / dt)))


def highpass_gle(gamma_low_fs: float, gamma_high_fs: float = 0.1, cutoff_cm: float = 1600.0) -> np.ndarray:
    """The drift matrix A (atomic units) of a GLE with one auxiliary momentum and the canonical
    covariance C = kT (i-PI's mode='gle' default) that damps high frequencies harder:

        A = [[γ_h, b], [b, ω_c]],  b² = ω_c (γ_h − γ_0),  γ(ω) = γ_h − b² ω_c / (ω_c² + ω²)

    friction γ_0 = `gamma_low_fs` (1/fs) at ω = 0 (as PILE_L's 1/τ, so that diffusion stays
    comparable), rising to γ_h = `gamma_high_fs` above ω_c = `cutoff_cm` (cm⁻¹): the O–H stretch
    and the bend, whose resonance with the outer step limits MTS (Morrone, Markland, Ceriotti,
    Berne, J. Chem. Phys. 134, 014103 (2011) stabilise MTS with coloured noise too)."""
    from . import units

    omega_c = 2.0 * np.pi * 2.99792458e-5 * cutoff_cm  # rad/fs (c = 2.99792458e-5 cm/fs, exact)
    b = np.sqrt(omega_c * (gamma_high_fs - gamma_low_fs))
    return np.array([[gamma_high_fs, b], [b, omega_c]]) / units.FEMTOSECOND


def highpass_gle_xml(gamma_low_fs: float, gamma_high_fs: float = 0.1, cutoff_cm: float = 1600.0) -> str:
    """i-PI's `<thermostat mode='gle'>` element with the drift matrix of `highpass_gle`."""
    a = ", ".join(f"{x:.10e}" for x in highpass_gle(gamma_low_fs, gamma_high_fs, cutoff_cm).ravel())
    return f"<thermostat mode='gle'><A shape='(2,2)'>[{a}]</A></thermostat>"


def method_xml(method, models, structure, time_ps, ensemble, temperature=300.0, seed=7,
               inner_fs=0.5, frame_fs=10.0, thermostat="svr", tau_fs=None, fast="in-process",
               beads=1, safe_stride=1):
    """The i-PI input of one method (see `parse_method`) and its time step (fs); NVT with
    `thermostat` of time constant `tau_fs` (default THERMOSTAT_TAU_FS). The fast force of MTS
    runs `fast`: 'in-process' (`<ffdirect>`: no socket round trip per inner step) or 'socket'.
    With `beads` > 1, path integrals with that many beads, and the per-species centroid-virial
    kinetic energy among the properties; a method's ':rpcK' contracts the slow force of MTS
    (the forcefield 'slow') to K beads (`<force nbeads=K>`, 1: the centroid). i-PI stores its
    soft-exit checkpoint every `safe_stride` steps (its default, 1: every step)."""
    m = parse_method(method, models, inner_fs)
    slow_beads = m.slow_beads
    if beads < 1 or slow_beads is not None and not 1 <= slow_beads <= beads:
        raise UserError(f"{method}: beads must be at least 1 and slow beads between 1 and the beads ({beads}), "
                        f"not {beads} and {slow_beads}")
    nmts = f"<nmts>[1, {m.n_inner}]</nmts>" if m.n_inner else ""
    forces = "\n".join(
        f"      <force forcefield='{name}'" + (f" nbeads='{slow_beads}'" if name == "slow" and slow_beads else "")
        + ">" + (f"<mts_weights>{w}</mts_weights>" if w else "") + "</force>"
        for name, _, _, w in m.ffs
    )
    mode, attrs = ensemble, ""
    if m.map_model:
        mode, attrs = "learned_map", f" model='{m.map_model}'"
    elif m.placement:
        mode, attrs = "mts", f" thermostat_placement='{m.placement}'"
        attrs += f" splitting='{m.splitting}'" if m.splitting else ""
    steps = int(round(time_ps * 1000.0 / m.dt))
    thermo = ""
    if ensemble == "nvt" and m.gle:
        thermo = "\n        " + highpass_gle_xml(1.0 / (tau_fs or THERMOSTAT_TAU_FS[thermostat]))
    elif ensemble == "nvt" and m.placement == "isokinetic":  # SIN(R) takes its τ from a langevin <thermostat>
        thermo = f"\n        <thermostat mode='langevin'><tau units='femtosecond'>{tau_fs or ISOKINETIC_TAU_FS:g}</tau></thermostat>"
    elif ensemble == "nvt":
        tau = tau_fs or THERMOSTAT_TAU_FS[thermostat]
        thermo = f"\n        <thermostat mode='{thermostat}'><tau units='femtosecond'>{tau:g}</tau></thermostat>"
    temps = "".join(f"temperature{{kelvin}}({sp}), " for sp in species_of(structure))
    temps += "".join(f"kinetic_cv{{electronvolt}}({sp}), " for sp in species_of(structure)) if beads > 1 else ""
    return TEMPLATE.format(
        pstride=max(1, int(round(5.0 / m.dt))), tstride=frame_stride(frame_fs, m.dt), steps=steps, temps=temps,
        beads=beads, safe_stride=int(safe_stride),
        seed=seed, ffs="\n".join(_ff(name, model, comp, name == "fast" and fast == "in-process",
                                  m.slow_params if name == "slow" else None) for name, model, comp, _ in m.ffs),
        structure=Path(structure).resolve(), temperature=temperature,
        structure_sha=_sha(Path(structure)),
        weights_sha=weights_sha([model for _, model, _, _ in m.ffs]
                                + ([m.map_model.removeprefix("direct:")] if m.map_model else [])),
        forces=forces, mode=mode, attrs=attrs, dt=m.dt, nmts=nmts, thermostat=thermo,
        fixcom="\n      <fixcom>false</fixcom>" if m.placement == "isokinetic" else "",
    ), m.dt


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def weights_sha(models) -> str:
    """', NAME sha256 HASH' for each model among `models` that is a file, shipped ones included
    (a shipped name keeps its name when its file is replaced); nothing for reference potentials."""
    from .potentials import model_path

    out = ""
    for model in dict.fromkeys(models):
        path = model_path(model)
        out += f", {model} sha256 {_sha(path)}" if path is not None and path.is_file() else ""
    return out


def same_input(a: str, b: str) -> bool:
    """Whether two inputs of `method_xml` run the same (socket addresses are unique per run)."""
    return re.sub(r"<address>[^<]*</address>", "", a) == re.sub(r"<address>[^<]*</address>", "", b)


def run_method(workdir: Path, xml: str, env: dict | None = None) -> dict:
    """Run one input through `ipi-mts run` in `workdir`: its ms/step and conserved-energy
    drift. A finished run of the same input (which holds the hashes of the start structure and
    the model files) there is reused (summary.json), so an interrupted benchmark goes on where
    it stopped and a changed analysis needs no new MD; so is a run of it that blew up
    (blew_up.txt: its guard's message, raised again as a UserError); a finished run of another
    input is never overwritten (UserError). `env`: the run's environment (default: this
    process's)."""
    summary, done, blew_up = workdir / "summary.json", workdir / "input.xml", workdir / "blew_up.txt"

    if (summary.is_file() or blew_up.is_file()) and done.is_file():
        if not same_input(done.read_text(), xml):
            raise UserError(f"{workdir} holds a finished run of another input (other models, structure or "
                            "settings): give another --workdir, or remove that folder to redo it")
        if blew_up.is_file():
            raise UserError(f"benchmark run in {workdir} failed: {blew_up.read_text().strip()}")
        return json.loads(summary.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    summary.unlink(missing_ok=True)
    blew_up.unlink(missing_ok=True)
    (workdir / "input.xml").write_text(xml)
    result = subprocess.run([sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", "input.xml"],
                            cwd=workdir, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        if " blew up at step " in last:  # a result of this input, not an accident of the run
            blew_up.write_text(last + "\n")
        raise UserError(f"benchmark run in {workdir} failed: {last}")
    line = [l for l in result.stdout.splitlines() if l.startswith("ipi-mts run: done")][-1]
    drift = re.search(r"drift ([0-9.e+-]+|n/a)", line).group(1)  # n/a: no conserved energy (isokinetic)
    out = {
        "ms_per_step": float(re.search(r"([0-9.e+-]+) ms/step", line).group(1)),
        "drift_meV_per_atom_ps": float("nan") if drift == "n/a" else float(drift),
    }
    solver = re.search(r"([0-9.]+) solver iterations per step \(max (\d+)\), (\d+) fallbacks", result.stdout)
    if solver:  # mode='learned_map'
        out["solver"] = {"iterations": float(solver.group(1)), "max_iterations": int(solver.group(2)),
                         "fallbacks": int(solver.group(3))}
    summary.write_text(json.dumps(out))
    return out


def time_alone(evaluators: dict, cells, positions, calls: int = 10, loops: int = 5) -> dict:
    """ms per call of each `WireEvaluator` in `evaluators` on one structure (wire units):
    medians of `loops` interleaved loops of `calls` calls, each after a warm-up call."""
    ms = {key: [] for key in evaluators}
    for _ in range(loops):
        for key, evaluate in evaluators.items():
            evaluate(cells, positions)  # warm-up
            start = time.perf_counter()
            for _ in range(calls):
                evaluate(cells, positions)
            ms[key].append((time.perf_counter() - start) / calls * 1e3)
    return {key: float(np.median(times)) for key, times in ms.items()}


def read_frames_xyz(path):
    from .data.generate import read_ipi_trajectory
    from ase import Atoms

    for symbols, positions, cell in read_ipi_trajectory(path):
        yield Atoms([s.strip() for s in symbols], positions=positions, cell=cell, pbc=True)


def rdf_pairs(species: list[str]) -> list[tuple[str, str]]:
    """Every species pair once, heaviest first: O, H -> OO, OH, HH."""
    return [(a, b) for i, a in enumerate(species) for b in species[i:]]


def temperature_series(workdir: Path, equilibration_ps: float, species) -> tuple[dict, dict | None]:
    """A run's per-species kinetic temperatures (K) after `equilibration_ps`: i-PI's at the
    step ends, and, with the thermostat in the innermost loop, the mts monitor's averages over
    the inner O steps (None otherwise). {species: array} each."""
    from .analysis import read_monitor, read_properties

    props = read_properties(workdir / "run.out")
    keep = props["time{picosecond}"] >= equilibration_ps
    ends = {sp: props[f"temperature{{kelvin}}({sp})"][keep] for sp in species}
    monitor = workdir / "run.mts_monitor"
    if monitor.is_file():
        mon = read_monitor(monitor)
        if all(f"T({sp})_inner_K" in mon for sp in species):
            kept = mon["time_ps"] >= equilibration_ps
            return ends, {sp: mon[f"T({sp})_inner_K"][kept] for sp in species}
    return ends, None


def analyse(workdir: Path, equilibration_ps: float, frame_fs: float) -> dict:
    """Per-species temperature (mean, block error), the potential energy per atom V (meV, the
    same), every pair's RDF per frame, the self-diffusion coefficient of the heaviest species,
    from a run's outputs. The temperature
    is read where the thermostat leaves the momenta: i-PI's at the step ends (after the last
    O of OBABO), or, with the thermostat in the innermost loop, the monitor's average over
    the inner O steps (the step ends lie between two slow half-kicks). With path integrals
    (one trajectory file per bead): the RDFs of each frame averaged over the beads, the
    diffusion of the centroids, and the per-species centroid-virial kinetic energy, meV per
    atom (K_X)."""
    from ase.data import atomic_numbers

    from .analysis import block_error, rdf_frames, read_properties, self_diffusion

    files = sorted(workdir.glob("run.pos_*.xyz"), key=lambda f: int(f.stem.rpartition("_")[2]))
    skip = int(round(equilibration_ps * 1000.0 / frame_fs))
    beads = [list(read_frames_xyz(f))[skip:] for f in files]
    frames = beads[0]
    species = heaviest_first(frames[0].get_chemical_symbols())
    out = {"species": species}
    ends, inner = temperature_series(workdir, equilibration_ps, species)
    temps = inner or ends  # thermostat inside: where the O steps leave the momenta
    for sp in species:
        mean, err = block_error(temps[sp])
        out[f"T_{sp}"] = (float(mean), float(err))
    props = read_properties(workdir / "run.out")
    keep = props["time{picosecond}"] >= equilibration_ps
    if "potential{electronvolt}" in props:
        mean, err = block_error(props["potential{electronvolt}"][keep] / len(frames[0]) * 1000.0)
        out["V"] = (float(mean), float(err))
    if len(beads) > 1:
        for sp in species:
            n = int((np.array(frames[0].get_chemical_symbols()) == sp).sum())
            mean, err = block_error(props[f"kinetic_cv{{electronvolt}}({sp})"][keep] / n * 1000.0)
            out[f"K_{sp}"] = (float(mean), float(err))
    for a, b in rdf_pairs(species):
        g = [rdf_frames(bead, atomic_numbers[a], atomic_numbers[b]) for bead in beads]
        out[f"rdf_{a}{b}"] = np.mean([gb for gb, _ in g], axis=0)
        out["r"] = g[0][1]
    positions = np.mean([[f.positions for f in bead] for bead in beads], axis=0)  # the centroids
    out["D"] = float(self_diffusion(positions, frame_fs, frames[0].numbers == atomic_numbers[species[0]])[0])
    return out


def nve_trace(workdir: Path, n_atoms: int):
    """Time (ps) and conserved energy (meV/atom, from its first value) of an NVE run."""
    from .analysis import read_properties

    props = read_properties(workdir / "run.out")
    conserved = props["conserved{electronvolt}"] / n_atoms * 1000.0
    return props["time{picosecond}"], conserved - conserved[0]


def compare(methods, models, baseline, structure=None, nvt_ps=3.0, nve_ps=1.0, equilibration_ps=0.5,
            thermostat="svr", tau_fs=None, workdir=None, quiet=False, inner_fs=0.5, frame_fs=10.0,
            temperature=300.0, fast="in-process", beads=1):
    """Run every method (NVT for observables, NVE for the drift) and compare each with the
    'reference' method; speedups are relative to the method named `baseline`. With `beads` > 1
    every method runs path integrals (see `method_xml`). Every input is made before the first
    run, so that a bad method stops the benchmark before it starts. Returns the
    rows of `judge`, the results per run, and {run: error} of the runs that failed (a blow-up
    stopped by the guard of mode='mts' or 'learned_map'); a method with a failed run (of any
    seed) has no row."""
    import tempfile

    import ase.io
    from tqdm import tqdm

    models = {kind: resolved_model(model) for kind, model in models.items()}
    structure = Path(structure or Path(__file__).resolve().parents[1] / "inputs" / "water-64" / "init.xyz")
    if not structure.is_file():
        raise UserError(f"benchmark structure {structure} does not exist")
    n_atoms = len(ase.io.read(structure))
    inputs = {}  # run: (NVT input, time step, NVE input or None)
    for method in methods:
        name, _, seed = method.partition("@")
        common = dict(seed=int(seed) if seed else 7, frame_fs=frame_fs, inner_fs=inner_fs, temperature=temperature,
                      fast=fast, beads=beads)
        nvt_xml, dt = method_xml(name, models, structure, nvt_ps + equilibration_ps, "nvt", thermostat=thermostat,
                                 tau_fs=tau_fs, **common)
        placement_free = nve_ps > 0 and parse_method(name, models, inner_fs).placement not in ("inner", "isokinetic")
        inputs[method] = nvt_xml, dt, method_xml(name, models, structure, nve_ps, "nve", **common)[0] if placement_free else None
    results, failures = {}, {}
    root = Path(workdir or tempfile.mkdtemp(prefix="ipi-mts-bench-"))
    for method in tqdm(methods, desc="methods", disable=quiet, file=sys.stderr):
        case = root / run_folder(method)
        name = method.partition("@")[0]
        xml, dt, nve_xml = inputs[method]
        try:
            nvt = run_method(case / "nvt", xml)
            nve = {"drift_meV_per_atom_ps": float("nan")}
            trace = None
            if nve_xml:  # NVE: placement-free
                nve = run_method(case / "nve", nve_xml)
                trace = nve_trace(case / "nve", n_atoms)
        except UserError as error:  # a method that blows up is a result, not the end of the benchmark
            if name in ("reference", baseline):
                raise
            failures[method] = str(error)
            continue
        results[method] = {"dt_fs": dt, "s_per_ps": nvt["ms_per_step"] / dt, "target_K": temperature,
                           "nve_drift": nve["drift_meV_per_atom_ps"], "nve_trace": trace,
                           "solver": nvt.get("solver"),
                           **analyse(case / "nvt", equilibration_ps, frame_stride(frame_fs, dt) * dt)}
    failed = {run.partition("@")[0] for run in failures}  # a method that blew up with any seed
    results = {run: r for run, r in results.items() if run.partition("@")[0] not in failed}
    return judge(results, baseline), results, failures


def method_family(method: str) -> str:
    """The line a method's speedup is drawn on: its name without the outer step for the MTS
    kinds, with an inner step of its own kept ('pair:2.5:inner:rpc4' -> 'pair:inner:rpc4',
    'pair:2' -> 'pair', 'pair:4/1:isokinetic' -> 'pair/1:isokinetic'), its kind for the others
    ('map:al-map-16fs' -> 'map')."""
    kind, _, rest = method.partition(":")
    steps, _, options = rest.partition(":") if kind in ("pair", "split") else ("", "", "")
    inner = steps.partition("/")[2]
    return kind + (f"/{inner}" if inner else "") + (":" + options if options else "")


def run_folder(method: str) -> str:
    """The folder of a run in a benchmark's workdir: 'pair:2.5:inner@8' -> 'pair-2.5-inner-seed-8',
    'pair:4/1:isokinetic' -> 'pair-4-by-1-isokinetic'."""
    return method.replace(":", "-").replace("/", "-by-").replace("@", "-seed-")


def with_seeds(methods: list[str], seeds: int = 1) -> list[str]:
    """The runs of a benchmark: with one seed, every method once (seed 7) and a control run
    'reference@8'; with `seeds` > 1, every method with seeds 7, 8, ... ('pair:2@8' is seed 8 of
    'pair:2'), seed by seed so that the first seeds finish first."""
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, not {seeds}")
    if seeds == 1:
        return methods[:1] + ["reference@8"] + methods[1:]
    return [m + (f"@{7 + i}" if i else "") for i in range(seeds) for m in methods]


def seed_groups(results: dict) -> dict[str, list[str]]:
    """{method: its runs}, 'pair:2@8' being a run of 'pair:2'."""
    groups = {}
    for run in results:
        groups.setdefault(run.partition("@")[0], []).append(run)
    return groups


def _t_dev_pct(row: dict, species, target) -> float:
    """The largest deviation of a species' mean temperature from the thermostat's target, %."""
    return max(abs(row[f"T_{sp}"][0] / target - 1.0) for sp in species) * 100.0 if target else float("nan")


def kinetic_keys(run: dict) -> list[str]:
    """The per-species centroid-virial kinetic energies a run has (path integrals: 'K_O', …)."""
    return [f"K_{sp}" for sp in run["species"] if f"K_{sp}" in run]


def judge(results: dict, baseline: str) -> list[dict]:
    """Rows of the report: speed relative to `baseline`, and observables against 'reference'.
    Runs of several seeds per method are judged by `judge_seeds`.

    RDFs: χ (the RMS over bins of Δg in units of the block-average errors, see
    `analysis.rdf_difference`). Block errors of 0.6 ps blocks underestimate the error of
    3-ps runs (correlations outlast a block), so where a control run `reference@SEED` (the
    reference with another seed) exists, the reference's error is measured by it instead:
    a method is within error if for each RDF its RMS |Δg| to the reference is at most 1.5x
    the control's, and each species' mean kinetic temperature is within 2 σ_ΔT of the
    reference's, σ_ΔT the larger of the block estimate and the control's RMS deviation over
    the species. Without a control: χ ≤ 1.5 and the 2σ block criterion. Also reported: the
    largest deviation of a species' temperature from the thermostat's target, in %."""
    groups = seed_groups(results)
    if any(len(runs) > 1 for method, runs in groups.items() if method != "reference"):
        return judge_seeds(results, baseline)
    ref = results["reference"]
    species = ref["species"]
    names = [a + b for a, b in rdf_pairs(species)]

    def rms_diff(r, name):
        g, g0 = r[f"rdf_{name}"].mean(axis=0), ref[f"rdf_{name}"].mean(axis=0)
        return float(np.sqrt(np.mean((g - g0) ** 2)))

    controls = [m for m in results if m.startswith("reference@")]
    control = results[controls[0]] if controls else None
    kinetic = kinetic_keys(ref)
    rows = []
    for method, r in results.items():
        row = {"method": method, "outer_fs": r["dt_fs"], "s_per_ps": r["s_per_ps"],
               "speedup": results[baseline]["s_per_ps"] / r["s_per_ps"], "species": species, "rdfs": names,
               "D": r["D"], "nve_drift": r["nve_drift"],
               "nve_std": float(r["nve_trace"][1].std()) if r.get("nve_trace") else float("nan"),
               "solver": r.get("solver"), **{key: r[key] for key in [f"T_{sp}" for sp in species] + kinetic}}
        row["T_dev_pct"] = _t_dev_pct(row, species, r.get("target_K"))
        kinetic_ok = all(abs(r[k][0] - ref[k][0]) <= 2 * np.hypot(r[k][1], ref[k][1]) for k in kinetic)
        for name in names:
            row[f"rdf_{name}_chi"] = (rdf_difference(r[f"rdf_{name}"], ref[f"rdf_{name}"])["chi"]
                                      if method != "reference" else 0.0)
        dT = {sp: abs(r[f"T_{sp}"][0] - ref[f"T_{sp}"][0]) for sp in species}
        sigma = {sp: float(np.hypot(r[f"T_{sp}"][1], ref[f"T_{sp}"][1])) for sp in species}
        if control is None:
            row["within_error"] = bool(max(row[f"rdf_{n}_chi"] for n in names) <= 1.5
                                       and all(dT[sp] <= 2 * sigma[sp] for sp in dT) and kinetic_ok)
        else:
            floor = float(np.sqrt(np.mean([(control[f"T_{sp}"][0] - ref[f"T_{sp}"][0]) ** 2 for sp in dT])))
            for name in names:
                row[f"rdf_{name}_vs_control"] = (rms_diff(r, name) / rms_diff(control, name)
                                                 if method != "reference" else 0.0)
            row["sigma_dT"] = {sp: max(sigma[sp], floor) for sp in dT}
            row["within_error"] = bool(max(row[f"rdf_{n}_vs_control"] for n in names) <= 1.5
                                       and all(dT[sp] <= 2 * row["sigma_dT"][sp] for sp in dT) and kinetic_ok)
        rows.append(row)
    return rows


def judge_seeds(results: dict, baseline: str) -> list[dict]:
    """Rows of the report, one per method, from independent runs of each method with several
    seeds (`with_seeds`). Each run gives its time-averaged RDFs and mean temperatures; over a
    method's N runs, their mean x̄ and its variance s²/N (s² the sample variance across seeds).
    A method differs from the reference by

        z_RDF = RMS_r(ḡ − ḡ_ref) / sqrt(mean_r(s²/N + s_ref²/N_ref)),
        z_T   = |T̄ − T̄_ref| / sqrt(s²/N + s_ref²/N_ref)   per species,

    (z_V the same for the potential energy per atom, z_K for the per-species centroid-virial
    kinetic energy of path integrals), and is within error if every z_RDF ≤ 1.5 and every z_T,
    z_V, z_K ≤ 2 (z_RDF² is about 1 for runs of the reference's own statistics); for the
    isokinetic placement, whose kinetic temperature is T L/(L+1) by construction, without z_T.
    A method run with one seed borrows the reference's s².
    Seeds average out what single runs cannot tell apart: the error shrinks as 1/√N."""
    groups = seed_groups(results)
    ref_runs = [results[run] for run in groups["reference"]]
    if len(ref_runs) < 2:
        raise UserError("judging by seeds needs at least two runs of the reference")
    species = ref_runs[0]["species"]
    names = [a + b for a, b in rdf_pairs(species)]
    scalars = [f"T_{sp}" for sp in species] + ["V"] * ("V" in ref_runs[0]) + kinetic_keys(ref_runs[0])

    def stats(runs):
        """{observable: (mean over seeds, its variance s²/N or None for one run)}."""
        out = {}
        for key in [f"rdf_{n}" for n in names] + scalars:
            x = np.array([r[key].mean(axis=0) if key.startswith("rdf_") else r[key][0] for r in runs])
            out[key] = (x.mean(axis=0), x.var(axis=0, ddof=1) / len(x) if len(x) > 1 else None)
        return out

    def z(diff, err):  # identical runs (no scatter, no difference) are 0 apart
        return float(diff / err) if err > 0 else (0.0 if diff == 0 else float("inf"))

    ref = stats(ref_runs)
    base = float(np.median([results[run]["s_per_ps"] for run in groups[baseline]]))
    rows = []
    for method, members in groups.items():
        runs = [results[run] for run in members]
        mine = stats(runs)
        s_per_ps = float(np.median([r["s_per_ps"] for r in runs]))
        row = {"method": method, "seeds": len(runs), "outer_fs": runs[0]["dt_fs"], "s_per_ps": s_per_ps,
               "speedup": base / s_per_ps, "species": species, "rdfs": names,
               "D": float(np.mean([r["D"] for r in runs])),
               "nve_drift": float(np.mean([r["nve_drift"] for r in runs])),
               "nve_std": float(np.mean([r["nve_trace"][1].std() if r.get("nve_trace") else np.nan for r in runs])),
               "solver": runs[0].get("solver")}
        for key, (mean, var) in mine.items():
            var = ref[key][1] * len(ref_runs) / len(runs) if var is None else var  # one run: the reference's s²
            err = np.sqrt(var + ref[key][1])
            if key.startswith("rdf_"):
                row[f"{key}_z"] = z(np.sqrt(np.mean((mean - ref[key][0]) ** 2)), np.sqrt(np.mean(err**2)))
            else:
                row[key] = (float(mean), float(np.sqrt(var)))
                row[f"{key}_z"] = z(abs(mean - ref[key][0]), err)
        row["T_dev_pct"] = _t_dev_pct(row, species, runs[0].get("target_K"))
        judged = [key for key in scalars if not (key.startswith("T_") and "isokinetic" in method.split(":"))]
        row["within_error"] = bool(max(row[f"rdf_{n}_z"] for n in names) <= 1.5
                                   and max(row[f"{key}_z"] for key in judged) <= 2.0)
        rows.append(row)
    return rows


def bench_learned(pair="water-pair", baseline="water-baseline", reference="qtip4pf",
                  outer_fs=(1.0, 2.0, 3.0, 4.0), out="docs/benchmarks/learned-mts", seeds=1, slow_beads=None, **kw):
    """The learned pair on MTS against the conventional model at 0.5 fs (issue: ≥3x); with
    path integrals (`beads` in `kw`) the slow force contracted to `slow_beads` beads."""
    models = {"pair": pair, "conventional": baseline, "reference": reference}
    rpc = f":rpc{slow_beads}" if slow_beads else ""
    methods = with_seeds(["reference", "conventional"] + [f"pair:{o:g}{rpc}" for o in outer_fs], seeds)
    rows, results, failures = compare(methods, models, "conventional", **kw)
    write_report(rows, results, Path(out), "speedup vs the conventional model at 0.5 fs", failures)
    return rows


def bench_placement(outer_fs=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), out=None, family="split", pair="water-pair",
                    baseline="water-baseline", seeds=1, slow_beads=None, **kw):
    """MTS with the thermostat outside the step (i-PI's built-in MTS) and inside the innermost
    loop (mode='mts'), PILE_L, against the reference at 0.5 fs: for the q-TIP4P/F physics split
    (`family='split'`, speedups vs q-TIP4P/F at 0.5 fs) or the learned pair (`'pair'`,
    speedups vs the conventional model at 0.5 fs); with path integrals (`beads` in `kw`) the
    slow force contracted to `slow_beads` beads."""
    if family not in ("split", "pair"):
        raise UserError(f"unknown MTS family {family!r}: split or pair")
    models = {"reference": "qtip4pf", "pair": pair, "conventional": baseline}
    methods = ["reference"] + (["conventional"] if family == "pair" else [])
    rpc = f":rpc{slow_beads}" if slow_beads else ""
    methods += [f"{family}:{o:g}{rpc}" for o in outer_fs] + [f"{family}:{o:g}:inner{rpc}" for o in outer_fs]
    methods = with_seeds(methods, seeds)
    speed_base = "conventional" if family == "pair" else "reference"
    rows, results, failures = compare(methods, models, speed_base, thermostat="pile_l", **kw)
    out = out or f"docs/benchmarks/thermostat-placement{'-pair' if family == 'pair' else ''}"
    label = "speedup vs the conventional model at 0.5 fs" if family == "pair" else "speedup vs q-TIP4P/F at 0.5 fs"
    write_report(rows, results, Path(out), label, failures)
    return rows


MAP_SYSTEMS = {
    # the reference potential (the maps' anchor) and its fine time step, the target strides, the
    # shipped maps, frames every frame_fs, and the equilibration (a perfect fcc lattice with
    # thermal velocities needs ~1 ps of SVR)
    "water": dict(structure="water-64/init.xyz", reference="qtip4pf", fine_fs=0.5, strides=(2.0, 4.0),
                  maps=("water-map-2fs",), frame_fs=8.0, equilibration_ps=0.5),
    "aluminium": dict(structure="aluminium/init.xyz", reference="ase:EMT", fine_fs=2.0, strides=(16.0, 32.0),
                      maps=("al-map-16fs", "al-map-32fs"), frame_fs=32.0, equilibration_ps=1.0),
}


def _has_learned_predictor(model: str) -> bool:
    from .maps import LearnedPredictor
    from .potentials.model_file import load_map

    return isinstance(load_map(model).predictor, LearnedPredictor)


def bench_maps(system="aluminium", maps=None, out=None, seeds=1, **kw):
    """Learned maps (mode='learned_map') against velocity Verlet of their anchor at the fine
    step (the reference, also the speed baseline) and at each map's stride (the direct
    predictor of a map without a learned one), against the learned direct predictor alone
    (model='direct:MAP', for maps that have one), and against the implicit midpoint map
    S = τH (the map without its learned correction), at the system's target strides and the
    maps'. NVT with SVR at 300 K."""
    if system not in MAP_SYSTEMS:
        raise UserError(f"unknown map benchmark system {system!r}: {', '.join(MAP_SYSTEMS)}")
    spec = MAP_SYSTEMS[system]
    maps = list(spec["maps"] if maps is None else maps)
    strides = sorted(set(spec["strides"]) | {map_stride_fs(m) for m in maps})
    methods = with_seeds(["reference"] + [f"vv:{t:g}" for t in strides] + [f"midpoint:{t:g}" for t in strides]
                         + [f"direct:{m}" for m in maps if _has_learned_predictor(m)] + [f"map:{m}" for m in maps],
                         seeds)
    structure = Path(__file__).resolve().parents[1] / "inputs" / spec["structure"]
    rows, results, failures = compare(methods, {"reference": spec["reference"]}, "reference", structure=structure,
                                      inner_fs=spec["fine_fs"], frame_fs=spec["frame_fs"],
                                      equilibration_ps=spec["equilibration_ps"], **kw)
    label = f"speedup vs Verlet at {spec['fine_fs']:g} fs"
    write_report(rows, results, Path(out or f"docs/benchmarks/learned-maps-{system}"), label, failures)
    return rows


def _pretty(name: str) -> str:
    """'OH' -> 'O–H', 'AlAl' -> 'Al–Al'."""
    return re.sub(r"([a-z]?)([A-Z])", lambda m: m.group(1) + ("–" if m.start() else "") + m.group(2), name)


def write_report(rows, results, out: Path, speedup_label: str, failures=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import os
    import shlex

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "failures": failures or {}}, indent=1))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cli = sys.argv[0].endswith(("ipi-mts", os.path.join("ipi_mts", "cli.py")))  # the script, or python -m ipi_mts.cli
    head = [f"Measured by `{shlex.join(['ipi-mts'] + sys.argv[1:]) if cli else shlex.join(sys.argv)}` "
            f"on {len(cores) or os.cpu_count()} of the machine's {os.cpu_count()} CPU cores.", ""]
    species, names = rows[0]["species"], rows[0]["rdfs"]
    pairs = " / ".join(_pretty(n) for n in names)
    calibrated = "rdf_" + names[0] + "_vs_control" in rows[0]
    seeded = "seeds" in rows[0]
    maps = any(r["solver"] for r in rows)
    if seeded:
        head += [f"Each method run with {', '.join(sorted({str(r['seeds']) for r in rows}))} seeds; means over "
                 "seeds ± their standard error; z: distance to the reference in units of the joint "
                 "seed-to-seed standard error (`judge_seeds`); within error: every RDF z ≤ 1.5 and T z, V z ≤ 2"
                 + (" and K z ≤ 2 (K_cv: the centroid-virial kinetic energy)" if kinetic_keys(rows[0]) else "")
                 + " (V: the potential energy per atom; ':isokinetic' methods are not judged by T, which they"
                 " keep at T L/(L+1) by construction).", ""]
    kinetic = kinetic_keys(rows[0])  # path integrals
    rdf_columns = ([f"RDF z {pairs}", "T z " + " / ".join(species), "V z"] + (["K z " + " / ".join(species)] if kinetic else [])
                   if seeded else [f"RDF χ {pairs}"] + ([f"RMS Δg / control's {pairs}"] if calibrated else []))
    columns = (["method", "Δt outer (fs)", "s / simulated ps", speedup_label] + rdf_columns
               + [f"T({sp}) K" for sp in species] + [f"K_cv({k[2:]}) meV/atom" for k in kinetic]
               + ["max \\|T − target\\| %", f"D({species[0]}) 1e-5 cm²/s",
                  "NVE drift meV/atom/ps", "NVE σ(conserved) meV/atom"]
               + (["solver iterations / step (max), fallbacks"] if maps else []) + ["within error"])
    lines = head + ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r["method"], f"{r['outer_fs']:g}", f"{r['s_per_ps']:.1f}", f"{r['speedup']:.2f}"]
        if seeded:
            cells += [" / ".join(f"{r[f'rdf_{n}_z']:.2f}" for n in names),
                      " / ".join(f"{r[f'T_{sp}_z']:.2f}" for sp in species), f"{r['V_z']:.2f}" if "V_z" in r else "–"]
            cells += [" / ".join(f"{r[f'{k}_z']:.2f}" for k in kinetic)] if kinetic else []
        else:
            cells.append(" / ".join(f"{r[f'rdf_{n}_chi']:.2f}" for n in names))
        if calibrated:
            cells.append(" / ".join(f"{r[f'rdf_{n}_vs_control']:.2f}" for n in names))
        cells += [f"{r[f'T_{sp}'][0]:.1f} ± {r[f'T_{sp}'][1]:.1f}" for sp in species]
        cells += [f"{r[k][0]:.2f} ± {r[k][1]:.2f}" for k in kinetic]
        cells += [f"{r['T_dev_pct']:.1f}", f"{r['D']:.2f}", f"{r['nve_drift']:+.3g}", f"{r['nve_std']:.3g}"]
        if maps:
            sv = r["solver"]
            cells.append(f"{sv['iterations']:.1f} ({sv['max_iterations']}), {sv['fallbacks']}" if sv else "–")
        cells.append("yes" if r["within_error"] else "no")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"| {method} | stopped: {why} |" for method, why in (failures or {}).items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    groups = seed_groups(results)
    traces = {runs[0]: results[runs[0]]["nve_trace"] for runs in groups.values()
              if results[runs[0]].get("nve_trace")}  # each method's first seed
    panels = len(names) + 1 + bool(traces)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.6))
    if traces:
        for method, (t, e) in traces.items():
            axes[-1].plot(t, e, label=method, lw=1.0)
        axes[-1].set_xlabel("t (ps)"), axes[-1].set_ylabel("conserved − initial (meV/atom)")
        axes[-1].set_title("NVE"), axes[-1].legend(fontsize=7)
        axes = axes[:-1]
    for ax, name in zip(axes[:-1], names):
        for method, runs in groups.items():
            g = np.mean([results[run][f"rdf_{name}"].mean(axis=0) for run in runs], axis=0)
            ax.plot(results[runs[0]]["r"], g, label=method, lw=1.2 if method != "reference" else 2.5)
        ax.set_xlabel("r (Å)"), ax.set_title(f"g {_pretty(name)} (r)")
    axes[0].legend(fontsize=7)

    for fam in sorted({method_family(r["method"]) for r in rows if ":" in r["method"]}):
        sel = [r for r in rows if ":" in r["method"] and method_family(r["method"]) == fam]
        axes[-1].plot([r["outer_fs"] for r in sel], [r["speedup"] for r in sel], "o-", label=fam)
        for r in sel:
            if not r["within_error"]:
                axes[-1].plot(r["outer_fs"], r["speedup"], "x", color="red", ms=10)
    axes[-1].axhline(1.0, color="gray", lw=0.8)
    axes[-1].set_yscale("log")
    axes[-1].legend(fontsize=7)
    axes[-1].set_xlabel("time step (fs)  (x: outside the error)"), axes[-1].set_ylabel(speedup_label)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print("\n".join(lines))
    print("\n".join(verdict(rows, speedup_label)))


def verdict(rows, speedup_label: str) -> list[str]:
    """One line per method: its speedup and how far its observables are from the
    reference's, next to how far a second reference run is (the noise floor)."""
    species, names = rows[0]["species"], rows[0]["rdfs"]
    pairs = "/".join(_pretty(n) for n in names)

    def far(r):
        if f"rdf_{names[0]}_z" in r:
            rdf = (f"RDF z {pairs} " + "/".join(f"{r[f'rdf_{n}_z']:.2f}" for n in names) + f" ({r['seeds']} seeds)"
                   + "".join(f", T({sp}) z {r[f'T_{sp}_z']:.1f}" for sp in species) + (f", V z {r['V_z']:.1f}" if "V_z" in r else "")
                   + "".join(f", K({k[2:]}) z {r[f'{k}_z']:.1f}" for k in kinetic_keys(r)))
        elif f"rdf_{names[0]}_vs_control" in r:
            rdf = f"RDF RMS deviation / the control's {pairs} " + "/".join(f"{r[f'rdf_{n}_vs_control']:.2f}" for n in names)
        else:
            rdf = f"RDF χ {pairs} " + "/".join(f"{r[f'rdf_{n}_chi']:.2f}" for n in names)
        return rdf + "".join(f", T({sp}) {r[f'T_{sp}'][0]:.0f} K" for sp in species)

    ref = next(r for r in rows if r["method"] == "reference")
    out = ["reference: " + ", ".join(f"T({sp}) {ref[f'T_{sp}'][0]:.0f} ± {ref[f'T_{sp}'][1]:.0f} K" for sp in species)]
    out += [f"{r['method']} (another seed, the noise floor): {far(r)}" for r in rows if r["method"].startswith("reference@")]
    for r in rows:
        if ":" in r["method"] or r["method"] == "conventional":
            out.append(f"{r['method']}: {r['speedup']:.2f}x ({speedup_label}); {far(r)}; "
                       f"{'within' if r['within_error'] else 'outside'} the reference's error")
    return out
