"""`<dynamics mode='learned_map'>` through real i-PI: the trajectory is the map's, step for
step; NVE conserves energy and is time-reversible; NVT with i-PI's thermostats reaches the
target temperature; energy rescaling; the refusals (one line each); RESTART.

Eight q-TIP4P/F waters (map_motion_helpers.py), equilibrated once per module; the map is
the implicit midpoint rule of q-TIP4P/F (no learned correction) at a 1 fs stride.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import ipi_mts.motion as motion
from ipi_mts import units
from ipi_mts.errors import UserError
from ipi_mts.maps import System
from ipi_mts.potentials.model_file import load_map

import map_motion_helpers as mh
import mts_helpers as h


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A folder with the equilibrated init.xyz and map files: map.pt (1 fs, tol 1e-10 bohr),
    fast.pt (1 fs, tol 1e-8: the thermostat runs), deuterium.pt (masses of D), oxygen.pt
    (species O only)."""
    motion.register()
    folder = tmp_path_factory.mktemp("water8")
    mh.equilibrate(folder)
    mh.save_pure_map(folder / "map.pt")
    mh.save_pure_map(folder / "fast.pt", tol=1e-8)
    mh.save_pure_map(folder / "deuterium.pt", masses={1: 2.014, 8: 15.9994})
    mh.save_pure_map(folder / "oxygen.pt", species=(8,))
    return folder


def workdir(start: Path, tmp_path: Path, name: str = "run") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for f in start.glob("*.*"):
        if f.is_file():
            shutil.copy(f, folder)
    return folder


def run(xml: str, folder: Path):
    return h.run_inprocess(xml, folder, init=False)


# ----------------------------------------------------------------------------- NVE


def test_nve_is_the_map_step_for_step_and_conserves_energy(start, tmp_path):
    """10 i-PI steps equal 10 calls of MidpointMap.step from i-PI's start, bit for bit
    (without i-PI's centre-of-mass constraint, which removes the map's rounding drift); over
    100 steps (0.1 ps at 300 K) the conserved energy fluctuates less than with i-PI's
    velocity Verlet at the same 1 fs step, and far less than the potential energy."""
    folder = workdir(start, tmp_path)
    with mh.interactive(mh.simulation_xml(steps=1000, fixcom=False), folder) as sim:
        q, p, masses, cell, numbers = mh.ipi_state(sim)
        midpoint = load_map(folder / "map.pt")
        for _ in range(10):
            q, p, info = midpoint.step(q, p, masses, cell, numbers)
            assert info["converged"] and not info["fallback"]
        sim.run(10)
        q_ipi, p_ipi, *_ = mh.ipi_state(sim)
        assert np.array_equal(q_ipi, q) and np.array_equal(p_ipi, p)
        sim.run(90)
        summary = motion.summary(sim)
    out = h.read_out(folder / "sim.out")
    econs, potential = out[:, 2], out[:, 4]
    verlet = workdir(start, tmp_path, "verlet")
    run(mh.simulation_xml(mode="nve", model=None, steps=100), verlet)
    econs_verlet = h.read_out(verlet / "sim.out")[:, 2]
    print(
        f"NVE 1 fs, 100 steps: std(conserved) map {econs.std():.2e} Ha, velocity Verlet "
        f"{econs_verlet.std():.2e} Ha, std(potential) {potential.std():.2e} Ha; {summary['solver']}"
    )
    assert len(econs) == 101
    assert econs.std() < 0.5 * econs_verlet.std()
    assert np.ptp(econs) < 0.1 * np.ptp(potential)
    assert summary["steps"] == 100 and summary["fallbacks"] == 0
    assert 1 < summary["iterations"] / summary["steps"] <= 30
    assert sorted(summary["species_T_K"]) == ["H", "O"]


def test_direct_mode_is_the_predictor_alone(start, tmp_path):
    """model='direct:MAP' steps with MAP's direct predictor and no solve (here one Verlet step
    of the anchor per stride: a map without a learned predictor), step for step."""
    folder = workdir(start, tmp_path)
    with mh.interactive(mh.simulation_xml(model="direct:map.pt", steps=1000, fixcom=False), folder) as sim:
        q, p, masses, cell, numbers = mh.ipi_state(sim)
        predictor = load_map(folder / "map.pt").predictor
        system = System.from_ipi(masses, cell, numbers)
        tau = 1.0 * units.FEMTOSECOND
        qt, pt = (torch.as_tensor(x).reshape(-1, 3) for x in (q, p))
        for _ in range(5):
            qt, pt = predictor(qt, pt, system, tau)
        sim.run(5)
        q_ipi, p_ipi, *_ = mh.ipi_state(sim)
        summary = motion.summary(sim)
    assert np.array_equal(q_ipi, qt.numpy().reshape(q_ipi.shape))
    assert np.array_equal(p_ipi, pt.numpy().reshape(p_ipi.shape))
    assert summary["steps"] == 5 and summary["iterations"] == 0 and summary["fallbacks"] == 0


def test_nve_is_time_reversible_through_ipi(start, tmp_path):
    """Forward 15 steps, flip the momenta, forward 15 steps: the start comes back to the
    solver's tolerance."""
    folder = workdir(start, tmp_path)
    with mh.interactive(mh.simulation_xml(steps=1000), folder) as sim:
        beads = sim.syslist[0].beads
        q0, p0 = h.state(beads.q), h.state(beads.p)
        sim.run(15)
        moved = np.abs(h.state(beads.q) - q0).max()
        beads.p[:] = -h.state(beads.p)
        sim.run(15)
        q1, p1 = h.state(beads.q), h.state(beads.p)
    err_q, err_p = np.abs(q1 - q0).max(), np.abs(p1 + p0).max() / np.abs(p0).max()
    print(f"reversibility through i-PI: max |dq| {err_q:.1e} bohr (moved {moved:.2f}), max |dp|/max |p| {err_p:.1e}")
    assert moved > 0.1
    assert err_q < 1e-8 and err_p < 1e-8


def test_energy_rescaling_conserves_the_anchor_hamiltonian(start, tmp_path):
    """With energy_rescaling the conserved energy (K + V of the anchor, NVE) is constant to
    rounding; the scale factors are close to one and reported."""
    folder = workdir(start, tmp_path)
    _, _, _, sim = run(mh.simulation_xml(steps=30, extra_attributes=" energy_rescaling='true'"), folder)
    econs = h.read_out(folder / "sim.out")[:, 2]
    ig = sim.syslist[0].motion.integrator
    s = motion.summary(sim)
    print(f"energy rescaling: ptp(conserved) {np.ptp(econs):.1e} Ha, max |s-1| {ig.rescale_max:.1e}; {s['solver']}")
    assert np.ptp(econs) < 1e-10
    assert 0 < ig.rescale_max < 1e-3 and s["rescale_skipped"] == 0
    assert "energy rescaling |s-1|" in motion.summary_line(sim)


# ----------------------------------------------------------------------------- NVT


@pytest.mark.parametrize("thermostat", ["langevin", "svr", "pile_l", None])
def test_nvt_reaches_the_target_temperature(start, tmp_path, thermostat):
    """From the 300 K state to a 150 K bath (τ = 10 fs), OBABO with the map: the mean
    kinetic temperature of the last 60 of 120 steps is near 150 K. Without a thermostat
    (the control) it stays near 300 K."""
    folder = workdir(start, tmp_path)
    xml = mh.simulation_xml(model="fast.pt", steps=120, thermostat=thermostat, temperature=150.0)
    _, _, _, sim = run(xml, folder)
    temps = mh.temperatures(folder)[61:]
    s = motion.summary(sim)
    print(f"{thermostat}: <T> over the last 60 fs {temps.mean():.1f} K (target 150 K); {s['solver']}")
    if thermostat is None:
        assert temps.mean() > 230
    else:
        assert abs(temps.mean() - 150.0) < 35.0
        assert sim.syslist[0].motion.thermostat.dt == pytest.approx(0.5 * sim.syslist[0].motion.dt)
    assert s["fallbacks"] == 0 and (folder / "sim.map_monitor").exists()


# ----------------------------------------------------------------------------- refusals


def _bind_error(xml: str, folder: Path) -> str:
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    softexit.reset()
    try:
        with h.chdir(folder), pytest.raises((ValueError, UserError)) as info:
            Simulation.load_from_xml(xml, custom_verbosity="quiet", read_only=True)
    finally:
        softexit.reset()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dt_fs=0.5), "i-PI's <timestep> is 0.5 fs but the map 'map.pt' was made for a stride of 1 fs"),
        (dict(nbeads=2), "refuses path integrals (nbeads=2): the map propagates one replica's physical Hamiltonian"),
        (dict(thermostat="langevin", splitting="baoab"), "needs splitting='obabo' with a thermostat"),
        (dict(model="deuterium.pt"), "(H) has mass 1.00794 amu in i-PI, but the map 'deuterium.pt' was made for 2.014 amu (16 atoms differ)"),
        (dict(model="oxygen.pt"), "knows the species O, the system also has H"),
        (dict(model=""), "needs the map: model='FILE'"),
        (dict(model="absent.pt"), "absent.pt: no such model file"),
        (dict(mode="nve"), "model= needs <dynamics mode='learned_map'>, not mode='nve'"),
    ],
)
def test_refusals(start, kwargs, message):
    assert message in _bind_error(mh.simulation_xml(**kwargs), start)


def test_forces_must_serve_the_anchor(start, tmp_path):
    """i-PI's <forces> give the potential and the conserved energy: serving another
    potential than the map's anchor stops the run at the first step, with one line."""
    folder = workdir(start, tmp_path)
    with mh.interactive(mh.simulation_xml(anchor="qtip4pf-intra"), folder) as sim:
        with pytest.raises(UserError, match="serve the anchor in <forces>") as info:
            sim.run(1)
    assert "\n" not in str(info.value) and "'qtip4pf'" in str(info.value)


def test_ipi_mts_run_refuses_with_one_line(start, tmp_path):
    """`ipi-mts run` on a stride mismatch and on path integrals: exit 2, one line."""
    folder = workdir(start, tmp_path)
    for name, kwargs, message in (
        ("stride", dict(dt_fs=2.0), "was made for a stride of 1 fs"),
        ("pimd", dict(nbeads=4), "refuses path integrals (nbeads=4)"),
    ):
        (folder / f"{name}.xml").write_text(mh.simulation_xml(**kwargs))
        r = subprocess.run(
            [str(Path(h.PYTHON).parent / "ipi-mts"), "run", f"{name}.xml"],
            cwd=folder, capture_output=True, text=True, timeout=120,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
        assert lines[0].startswith("ipi-mts run: error: ") and message in lines[0], lines[0]


# ----------------------------------------------------------------------------- RESTART


def test_restart_continues_the_map_run(start, tmp_path):
    """Langevin NVT with energy rescaling: a checkpoint written at step 10 of 15 keeps mode,
    model and energy_rescaling (and says to use ipi-mts); resumed, it ends where the
    uninterrupted run ends (thermostat and PRNG state included)."""
    folder = workdir(start, tmp_path)
    xml = mh.simulation_xml(
        steps=15, thermostat="langevin", extra_attributes=" energy_rescaling='true'",
        output="<checkpoint filename='chk' stride='10' overwrite='false'/>",
    )
    q_full, p_full, _, _ = run(xml, folder)
    chk = (folder / "sim.chk_1").read_text()  # chk_0 is the start
    assert re.search(r"<dynamics[^>]*mode='learned_map'", chk) and re.search(r"<step>\s*10\s*</step>", chk)
    assert "model='map.pt'" in chk and re.search(r"energy_rescaling='\s*True'", chk)
    assert f"{motion.RUN_HINT_ATTR}='{motion.RUN_HINT}'" in chk  # what plain i-pi stops on
    resumed = workdir(start, tmp_path, "resumed")
    q_res, p_res, _, sim = run(chk, resumed)
    assert sim.step == 14
    assert np.abs(q_res - q_full).max() < 1e-9
    assert np.abs(p_res - p_full).max() < 1e-9 * np.abs(p_full).max()


# ----------------------------------------------------------------------------- the shipped input


def test_water64_map_input_runs(tmp_path):
    """inputs/water-64/map-nve-1fs.xml through `ipi-mts run` (3 steps): exit 0, the map's
    summary line, no fallback."""
    r = subprocess.run(
        [str(Path(h.PYTHON).parent / "ipi-mts"), "run", str(h.REPO / "inputs/water-64/map-nve-1fs.xml"),
         "--steps", "3", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=200,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if "learned_map monitor" in x]
    assert line and "3 map steps" in line[0] and "0 fallbacks" in line[0], r.stdout
