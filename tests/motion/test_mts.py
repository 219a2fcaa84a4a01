"""`<dynamics mode='mts'>`: registration, exactness against i-PI, geometric properties of the
integrator, thermostat placement, restarts and the blow-up guard.

Every simulation uses i-PI's own forcefields (see mts_helpers.py). In-process runs reset
i-PI's soft-exit singleton around themselves; runs that must not see the registration
(plain i-PI) go to a subprocess with a timeout.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ipi_mts.motion as mts_motion
from ipi_mts.motion import SimulationBlewUp

import mts_helpers as h

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True, scope="module")
def _registered():
    mts_motion.register()


def _same(a, b):
    return a.shape == b.shape and np.array_equal(a, b)


# ----------------------------------------------------------------------------- registration


def test_register_is_idempotent_and_extends_the_input():
    from ipi.engine.motion.dynamics import Dynamics
    from ipi.inputs.motion.dynamics import InputDynamics

    init, store = Dynamics.__init__, InputDynamics.store
    mts_motion.register()
    mts_motion.register()
    options = InputDynamics.attribs["mode"][1]["options"]
    assert options.count("mts") == 1
    assert InputDynamics.attribs["thermostat_placement"][1]["options"] == ["outer", "inner", "isokinetic"]
    assert "mts_guard" in InputDynamics.fields and "isokinetic" in InputDynamics.fields
    assert Dynamics.__init__ is init and InputDynamics.store is store  # not wrapped twice
    assert mts_motion.is_registered()


def _plain_ipi(workdir: Path, xml_file: str) -> subprocess.CompletedProcess:
    i_pi = Path(h.PYTHON).parent / "i-pi"
    return subprocess.run(
        [h.PYTHON, str(i_pi), xml_file], cwd=workdir, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "placement,message",
    [
        (None, "ValueError: mts is not a valid option (['nve', 'nvt', 'npt', 'nst', 'sc', 'scnpt', 'nvt-cc'])"),
        ("inner", "NameError: Attribute name 'thermostat_placement' is not a recognized property of 'dynamics' objects"),
    ],
)
def test_plain_ipi_refuses_mts_inputs(tmp_path, placement, message):
    """Plain `i-pi` (never registered) stops while reading the input, with these last lines
    (documented in ipi_mts/motion/registration.py), and exit status 1."""
    h.write_xyz(tmp_path / "init.xyz")
    (tmp_path / "input.xml").write_text(h.simulation_xml(steps=2, placement=placement, thermostat="svr"))
    r = _plain_ipi(tmp_path, "input.xml")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == message
    assert not (tmp_path / "sim.out").exists()


@pytest.mark.parametrize("placement", [None, "inner"])
def test_plain_ipi_refuses_mts_restarts_naming_the_launcher(tmp_path, placement):
    """A RESTART of an mts run makes plain `i-pi` stop with an error naming `ipi-mts run`
    (whatever else the file holds), and the same file still loads with the registration."""
    xml = h.simulation_xml(steps=2, placement=placement, thermostat="svr")
    q, p, e, sim = h.run_inprocess(xml, tmp_path)
    sim.chk.store()
    restart = sim.chk.status.write(name="simulation")
    assert f"{mts_motion.RUN_HINT_ATTR}='{mts_motion.RUN_HINT}'" in restart
    (tmp_path / "RESTART").write_text(restart)
    r = _plain_ipi(tmp_path, "RESTART")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "NameError: Attribute name 'needs_ipi-mts_run' is not a recognized property of 'dynamics' objects"
    )
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    softexit.reset()
    with h.chdir(tmp_path):
        again = Simulation.load_from_xml(restart, custom_verbosity="quiet", read_only=True)
    softexit.reset()
    assert type(again.syslist[0].motion.integrator).__name__ == "MTSIntegrator"


def test_ipi_modes_unchanged_by_registration(tmp_path):
    """An nvt run (PILE_L, 4 beads, nmts) gives the same trajectory, outputs and RESTART
    text in a process that never registered and in this one."""
    kw = dict(mode="nvt", thermostat="pile_l", nbeads=4, nmts=(1, 3), steps=12)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from pathlib import Path
        import numpy as np
        import mts_helpers as h
        q, p, e, sim = h.run_inprocess(h.simulation_xml(**{kw!r}), Path('.'), register=False)
        assert 'ipi_mts.motion' not in sys.modules
        np.save('q.npy', q); np.save('p.npy', p)
        sim.chk.store()
        open('restart.txt', 'w').write(sim.chk.status.write(name='simulation'))
        """
    )
    r = h.run_subprocess(code, tmp_path / "plain", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    q, p, e, sim = h.run_inprocess(h.simulation_xml(**kw), tmp_path / "registered")
    sim.chk.store()
    restart = sim.chk.status.write(name="simulation")
    assert _same(q, np.load(tmp_path / "plain" / "q.npy"))
    assert _same(p, np.load(tmp_path / "plain" / "p.npy"))
    assert (tmp_path / "plain" / "sim.out").read_text() == (tmp_path / "registered" / "sim.out").read_text()
    assert restart == (tmp_path / "plain" / "restart.txt").read_text()
    assert "thermostat_placement" not in restart and "mts_guard" not in restart
    assert mts_motion.RUN_HINT_ATTR not in restart


def test_placement_and_guard_are_written_back_to_restart(tmp_path):
    guard = "<mts_guard><stride>5</stride><min_distance units='angstrom'>0.5</min_distance></mts_guard>"
    xml = h.simulation_xml(placement="inner", thermostat="svr", steps=3, guard=guard)
    q, p, e, sim = h.run_inprocess(xml, tmp_path / "a")
    sim.chk.store()
    text = sim.chk.status.write(name="simulation")
    assert re.search(r"<dynamics[^>]*mode='mts'", text)
    assert "thermostat_placement='inner'" in text
    assert mts_motion.RUN_HINT_ATTR in text  # what plain i-pi stops on
    stride = re.search(r"<stride>\s*(\d+)\s*</stride>", text)
    assert stride is not None and stride.group(1) == "5"
    # and it loads back with the same settings
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    softexit.reset()
    with h.chdir(tmp_path / "a"):
        again = Simulation.load_from_xml(text, custom_verbosity="quiet", read_only=True)
    softexit.reset()
    ig = again.syslist[0].motion.integrator
    assert type(ig).__name__ == "MTSIntegrator" and ig.thermostat_placement == "inner"
    assert ig.guard_settings.stride == 5
    assert ig.guard_settings.min_distance == pytest.approx(0.5 / 0.529177210903, rel=1e-6)


def test_refusals(tmp_path):
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    h.write_xyz(tmp_path / "init.xyz")
    baro = (
        "<barostat mode='isotropic'><tau units='femtosecond'>200</tau>"
        "<thermostat mode='langevin'><tau units='femtosecond'>100</tau></thermostat></barostat>"
    )
    cases = [
        (h.simulation_xml(thermostat="langevin", extra_dynamics=baro), "does not support barostats"),
        (h.simulation_xml(mode="nvt", thermostat="langevin", placement="inner"), "needs <dynamics mode='mts'>"),
        (h.simulation_xml(nmts=(1, 2, 2), weights=([1, 0], [0, 1])), "number of mts levels"),
    ]
    for xml, message in cases:
        softexit.reset()
        with h.chdir(tmp_path), pytest.raises(ValueError, match=re.escape(message)):
            Simulation.load_from_xml(xml, custom_verbosity="quiet", read_only=True)
    softexit.reset()


# ----------------------------------------------------------------------------- exactness


OUTER_CASES = [
    # (splitting, thermostat, nbeads, nmts, contracted, fixcom)
    ("obabo", None, 1, (1, 4), False, False),
    ("baoab", None, 1, (2, 3), False, True),
    ("obabo", "langevin", 1, (1, 2, 3), False, True),
    ("baoab", "langevin", 1, (1, 4), False, False),
    ("obabo", "pile_l", 4, (1, 3), False, True),
    ("baoab", "pile_l", 4, (1, 3), False, False),
    ("obabo", "svr", 4, (1, 2, 2), False, False),
    ("baoab", "pile_g", 4, (1, 3), True, True),
]


@pytest.mark.parametrize("splitting,thermostat,nbeads,nmts,contracted,fixcom", OUTER_CASES)
def test_outer_placement_is_ipi_bit_for_bit(tmp_path, splitting, thermostat, nbeads, nmts, contracted, fixcom):
    kw = dict(
        splitting=splitting, thermostat=thermostat, nbeads=nbeads, nmts=nmts,
        contracted=contracted, fixcom=fixcom, steps=8,
    )
    ref_mode = "nve" if thermostat is None else "nvt"
    q0, p0, e0, _ = h.run_inprocess(h.simulation_xml(mode=ref_mode, **kw), tmp_path / "ipi")
    q1, p1, e1, sim = h.run_inprocess(h.simulation_xml(mode="mts", placement="outer", **kw), tmp_path / "mts")
    assert type(sim.syslist[0].motion.integrator).__name__ == "MTSIntegrator"
    assert _same(q0, q1) and _same(p0, p1) and e0 == e1
    assert (tmp_path / "ipi" / "sim.out").read_text() == (tmp_path / "mts" / "sim.out").read_text()
    assert not np.allclose(q1, h.CLUSTER.ravel() / 0.529177210903)  # it moved


@pytest.mark.parametrize("splitting", ["obabo", "baoab"])
def test_inner_placement_with_one_level_is_ipi_nvt(tmp_path, splitting):
    """With a single level the two placements are the same splitting: bit for bit."""
    kw = dict(splitting=splitting, thermostat="pile_l", nbeads=4, nmts=(1,), steps=6)
    q0, p0, e0, _ = h.run_inprocess(h.simulation_xml(mode="nvt", **kw), tmp_path / "ipi")
    q1, p1, e1, _ = h.run_inprocess(h.simulation_xml(mode="mts", placement="inner", **kw), tmp_path / "mts")
    assert _same(q0, q1) and _same(p0, p1) and e0 == e1


@pytest.mark.parametrize("splitting,factor", [("obabo", 0.5), ("baoab", 1.0)])
def test_inner_placement_gives_the_thermostat_the_innermost_step(tmp_path, splitting, factor):
    xml = h.simulation_xml(splitting=splitting, thermostat="pile_l", nbeads=4, nmts=(2, 3), placement="inner", steps=2)
    q, p, e, sim = h.run_inprocess(xml, tmp_path)
    motion = sim.syslist[0].motion
    inner = factor * motion.dt / 6
    assert motion.thermostat.dt == pytest.approx(inner, rel=1e-14)
    for t in motion.thermostat._thermos:  # the per-normal-mode Langevin thermostats
        assert t.dt == pytest.approx(inner, rel=1e-14)
    # the outer placement keeps i-PI's
    xml = h.simulation_xml(splitting=splitting, thermostat="pile_l", nbeads=4, nmts=(2, 3), placement="outer", steps=2)
    q, p, e, sim = h.run_inprocess(xml, tmp_path / "outer")
    assert sim.syslist[0].motion.thermostat.dt == pytest.approx(factor * sim.syslist[0].motion.dt, rel=1e-14)


def test_inner_placement_differs_from_outer(tmp_path):
    kw = dict(thermostat="langevin", nmts=(1, 4), steps=5, seed=7)
    q0, p0, _, _ = h.run_inprocess(h.simulation_xml(placement="outer", **kw), tmp_path / "o")
    q1, p1, _, _ = h.run_inprocess(h.simulation_xml(placement="inner", **kw), tmp_path / "i")
    assert not np.allclose(p0, p1)


# ----------------------------------------------------------------------------- geometry


def test_nve_mts_is_time_reversible(tmp_path):
    """Forward, flip the momenta, forward again: the start comes back (3 levels, 4 beads)."""
    h.write_xyz(tmp_path / "init.xyz")
    from ipi.utils.softexit import softexit

    softexit.reset()
    with h.chdir(tmp_path):
        sim = mts_motion.interactive_simulation(
            h.simulation_xml(nmts=(1, 2, 3), nbeads=4, dt_fs=12.0, steps=1000)
        )
        try:
            beads = sim.syslist[0].beads
            q0, p0 = h.state(beads.q), h.state(beads.p)
            sim.run(25)
            moved = np.abs(h.state(beads.q) - q0).max()
            beads.p[:] = -h.state(beads.p)
            sim.run(25)
            q1, p1 = h.state(beads.q), h.state(beads.p)
        finally:
            sim.stop()
            softexit.reset()
    err_q = np.abs(q1 - q0).max()
    err_p = np.abs(p1 + p0).max() / np.abs(p0).max()
    print(f"reversibility: max |dq| = {err_q:.2e} bohr (moved {moved:.2e}), max |dp|/max|p| = {err_p:.2e}")
    assert moved > 0.05
    assert err_q < 1e-8 and err_p < 1e-8


def test_nve_energy_error_scales_as_dt_squared(tmp_path):
    """RMS fluctuation of the conserved energy over 1 ps at three outer time steps
    (fixed ratio nmts=[1,4]): log-log slope 2."""
    dts = np.array([10.0, 20.0, 40.0])
    errors = []
    for dt in dts:
        steps = int(round(1000.0 / dt))
        xml = h.simulation_xml(nmts=(1, 4), dt_fs=dt, steps=steps, temperature=80.0)
        h.run_inprocess(xml, tmp_path / f"dt{dt:g}")
        out = h.read_out(tmp_path / f"dt{dt:g}" / "sim.out")
        econs = out[:, 2]
        errors.append(np.sqrt(np.mean((econs - econs[0]) ** 2)))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    print(f"NVE MTS energy error vs dt: {dict(zip(dts.tolist(), errors))}, slope {slope:.3f}")
    assert 1.85 < slope < 2.15


# ----------------------------------------------------------------------------- thermostats


@pytest.mark.parametrize("thermostat", ["pile_l", "svr"])
def test_inner_thermostat_keeps_temperature_and_conserved_energy(tmp_path, thermostat):
    """4 beads, nmts=[1,4], inner placement, through i-PI's scripting API: the mean kinetic
    temperature (total and per species) is near the target, and the conserved energy
    (which adds the thermostat's heat `ethermo`) is far steadier than the Hamiltonian."""
    target = 60.0
    xml = h.simulation_xml(
        placement="inner", thermostat=thermostat, tau_fs=40.0, nbeads=4, nmts=(1, 4),
        dt_fs=16.0, steps=1, temperature=target,
        guard="<mts_guard><stride>2</stride></mts_guard>",
        properties="step, conserved, temperature{kelvin}, ethermo",
    )
    h.write_xyz(tmp_path / "init.xyz")
    from ipi.utils.softexit import softexit

    softexit.reset()
    with h.chdir(tmp_path):
        sim = mts_motion.interactive_simulation(
            xml, custom_properties={"ethermo": lambda self: self.motion.thermostat.ethermo}
        )
        try:
            sim.run(300)
        finally:
            sim.stop()
            for o in sim.outputs:
                o.close_stream()
            softexit.reset()
    out = h.read_out(tmp_path / "sim.out")[1:]
    econs, temps, ethermo = out[:, 1], out[:, 2], out[:, 3]
    hamiltonian = econs - ethermo
    s = mts_motion.summary(sim)
    print(f"{thermostat}: <T> = {temps.mean():.2f} K, per species {s['species_T_K']}, "
          f"ptp(econs) = {np.ptp(econs):.2e}, ptp(H) = {np.ptp(hamiltonian):.2e}")
    assert abs(temps.mean() / target - 1) < 0.12
    assert np.ptp(econs) < 0.1 * np.ptp(hamiltonian)
    assert s["samples"] == 150 and s["placement"] == "inner"
    for species, t in s["species_T_K"].items():
        assert abs(t / target - 1) < 0.2, (species, t)
    line = mts_motion.summary_line(sim)
    assert "T(Ar)" in line and "T(Ne)" in line and "(target 60.0 K)" in line


@pytest.mark.parametrize("thermostat", ["langevin", "pile_g", "gle"])
@pytest.mark.parametrize("placement", ["outer", "inner"])
def test_other_thermostats_run_in_both_placements(tmp_path, thermostat, placement):
    """Three levels; Langevin classical, PILE_G and GLE with 4 beads."""
    nbeads = 1 if thermostat == "langevin" else 4
    xml = h.simulation_xml(
        placement=placement, thermostat=thermostat, nbeads=nbeads, nmts=(1, 2, 2), steps=20, dt_fs=12.0
    )
    if thermostat == "gle":  # a 1x1 GLE is a Langevin thermostat of friction A (1/tau)
        xml = xml.replace("<tau units='femtosecond'>50.0</tau>", "<A shape='(1,1)'>[4.8e-4]</A>")
    q, p, e, sim = h.run_inprocess(xml, tmp_path)
    motion = sim.syslist[0].motion
    expected = {"langevin": "ThermoLangevin", "pile_g": "ThermoPILE_G", "gle": "ThermoGLE"}[thermostat]
    assert type(motion.thermostat).__name__ == expected
    tdt = motion.dt / 2 / (4 if placement == "inner" else 1)  # obabo
    assert motion.thermostat.dt == pytest.approx(tdt, rel=1e-14)
    out = h.read_out(tmp_path / "sim.out")
    assert np.isfinite(out).all()
    assert np.ptp(out[:, 2]) < 0.05 * np.ptp(out[:, 4])  # conserved vs potential energy


@pytest.mark.parametrize("splitting", ["obabo", "baoab"])
def test_inner_splitting_is_the_documented_sequence(tmp_path, splitting):
    """The sub-steps of one step with nmts=[1,2] and thermostat_placement='inner', as the
    class docstring states them: B0 [B1 A O A B1]^2 B0 (baoab), B0 [O B1 A B1 O]^2 B0 (obabo),
    with B_k the kick of level k, A = qcstep + free_qstep (half the innermost step each);
    the monitor samples the temperature (T) right after each inner O that ends a sub-step
    (obabo) or sits in its middle (baoab)."""
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    h.write_xyz(tmp_path / "init.xyz")
    xml = h.simulation_xml(placement="inner", thermostat="pile_l", nbeads=4, nmts=(1, 2), splitting=splitting)
    softexit.reset()
    with h.chdir(tmp_path):
        sim = Simulation.load_from_xml(xml, custom_verbosity="quiet", read_only=True)
    softexit.reset()
    ig = sim.syslist[0].motion.integrator
    trace = []
    ig.pstep = lambda level=0: trace.append(f"B{level}")
    ig.qcstep = lambda: trace.append("qc")
    ig.nm.free_qstep = lambda: trace.append("free")
    ig.tstep = lambda: trace.append("O")
    ig.pconstraints = lambda: None
    ig.monitor.s.stride = 0
    ig.monitor.after_thermostat = lambda: trace.append("T")  # the inner temperature sample
    ig.step(0)
    trace = " ".join(trace).replace("qc free", "A/2").split()
    if splitting == "baoab":
        inner = ["B1", "A/2", "O", "T", "A/2", "B1"]
    else:
        inner = ["O", "B1", "A/2", "A/2", "B1", "O", "T"]
    assert trace == ["B0"] + inner * 2 + ["B0"]
    assert ig.tdt == pytest.approx(ig.dt / 2 * (0.5 if splitting == "obabo" else 1.0), rel=1e-14)
    assert ig.qdt == pytest.approx(ig.dt / 4, rel=1e-14)  # A/2 = half of the innermost step


def _linear_respa_kinetic(m, k_fast, k_slow, dt, n, tau):
    """Exact stationary <p²>/(m kT) of one harmonic degree of freedom under
    B_s(Δt/2) [O(δ/2) B_f(δ/2) A(δ) B_f(δ/2) O(δ/2)]^n B_s(Δt/2) (Langevin O, friction 1/τ,
    all in a.u.): at the step ends, and averaged over the n points after each second O.
    The step is linear in (q, p) plus Gaussian noise, so Σ = M Σ Mᵀ + Q (discrete Lyapunov)."""
    from scipy.linalg import solve_discrete_lyapunov

    d = dt / n
    c = np.exp(-d / (2 * tau))
    none = np.zeros((2, 2))

    def kick(k, t):
        return np.array([[1.0, 0.0], [-k * t, 1.0]]), none

    drift = np.array([[1.0, d / m], [0.0, 1.0]]), none
    o_step = np.diag([1.0, c]), np.diag([0.0, (1 - c * c) * m])
    inner_step = [o_step, kick(k_fast, d / 2), drift, kick(k_fast, d / 2), o_step, "sample"]
    M, Q, marks = np.eye(2), np.zeros((2, 2)), []
    for op in [kick(k_slow, dt / 2)] + inner_step * n + [kick(k_slow, dt / 2)]:
        if isinstance(op, str):
            marks.append((M.copy(), Q.copy()))
        else:
            M, Q = op[0] @ M, op[0] @ Q @ op[0].T + op[1]
    sigma = solve_discrete_lyapunov(M, Q)
    inner = np.mean([(Mk @ sigma @ Mk.T + Qk)[1, 1] for Mk, Qk in marks])
    return sigma[1, 1] / m, inner / m


def test_inner_placement_kinetic_temperature_is_read_after_the_o_steps(tmp_path):
    """Inner Langevin placement on two harmonic traps (fast k, slow k/11), Δt = 100 fs,
    nmts=[1,5]: each Cartesian degree of freedom is a linear stochastic map, whose exact
    stationary kinetic temperature is known. At the outer-step ends (between two slow
    half-kicks) it is cold (Ne: 0.90 T), after the inner O steps it is right (1.01 T); the
    monitor reports both, per species, as the exact calculation predicts."""
    from ipi.utils.units import unit_to_internal

    target, k_fast, tau_fs, dt_fs, n = 60.0, 0.01, 200.0, 100.0, 5
    xml = h.simulation_xml(
        placement="inner", thermostat="langevin", tau_fs=tau_fs, nmts=(1, n), dt_fs=dt_fs, steps=1500,
        temperature=target, k_fast=k_fast, k_slow=k_fast / 11, guard="<mts_guard><stride>1</stride></mts_guard>",
        properties="step",
    )
    q, p, e, sim = h.run_inprocess(xml, tmp_path)
    s = mts_motion.summary(sim)
    fs = unit_to_internal("time", "femtosecond", 1.0)
    amu = unit_to_internal("mass", "dalton", 1.0)
    for species, mass in (("Ar", 39.948), ("Ne", 20.1797)):
        ends, inner = _linear_respa_kinetic(mass * amu, k_fast, k_fast / 11, dt_fs * fs, n, tau_fs * fs)
        got_ends, got_inner = s["species_T_K"][species] / target, s["species_T_inner_K"][species] / target
        print(f"{species}: ends {got_ends:.4f} (exact {ends:.4f}), inner {got_inner:.4f} (exact {inner:.4f})")
        assert got_ends == pytest.approx(ends, abs=0.04)
        assert got_inner == pytest.approx(inner, abs=0.04)
        assert got_inner - got_ends == pytest.approx(inner - ends, abs=0.015)
    assert s["species_T_inner_K"]["Ne"] / target - 1 < 0.03 < 1 - s["species_T_K"]["Ne"] / target
    header = (tmp_path / "sim.mts_monitor").read_text().splitlines()[0]
    assert header.endswith("T(Ar)_inner_K T(Ne)_inner_K")
    assert "after the inner O steps; at the outer-step ends" in mts_motion.summary_line(sim)


@pytest.mark.parametrize("placement,thermostat,splitting,nmts", [
    ("outer", None, "obabo", (1, 2, 3)),
    ("outer", "svr", "baoab", (1, 3)),
    ("inner", "pile_l", "obabo", (1, 2, 3)),
    ("inner", "langevin", "baoab", (2, 3)),
    ("isokinetic", "langevin", "obabo", (1, 2, 3)),
])
def test_outer_forces_are_queued_before_the_innermost_force(tmp_path, placement, thermostat, splitting, nmts):
    """`_prefetch`: wherever an outer level's kick follows the innermost kick at the same
    positions (the ends of its sub-steps), its force is queued first, so that a driver of its
    own computes it meanwhile; each position is still asked of each force field once."""
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    h.write_xyz(tmp_path / "init.xyz")
    xml = h.simulation_xml(placement=placement, thermostat=thermostat, splitting=splitting, nmts=nmts,
                           steps=3, fixcom=False)
    softexit.reset()
    with h.chdir(tmp_path):
        sim = Simulation.load_from_xml(xml, custom_verbosity="quiet", read_only=True)
    softexit.reset()
    requests = []  # (force field, positions) in the order queued
    for name, ff in sim.fflist.items():
        def queue(atoms, cell, reqid=-1, template=None, _name=name, _queue=ff.queue):
            requests.append((_name, h.state(atoms.q)))
            return _queue(atoms, cell, reqid, template)
        ff.queue = queue
    try:
        for step in range(3):
            sim.syslist[0].motion.step(step)
    finally:
        sim.stop()
        softexit.reset()
    order = {}
    for k, (name, q) in enumerate(requests):
        key = (name, q.tobytes())
        assert key not in order, f"{name} asked twice at the same positions"
        order[key] = k
    slow_positions = [key[1] for key in order if key[0] == "slow"]
    assert len(slow_positions) == 3 * int(np.prod(nmts[:-1])) + 1  # the start and every slow sub-step's end
    assert all(order[("slow", q)] < order[("fast", q)] for q in slow_positions)


# ----------------------------------------------------------------------------- restart


def test_restart_mid_run_continues_identically(tmp_path):
    """Inner PILE_L, 4 beads, contracted slow force: a checkpoint written at step 10 of 20,
    resumed, ends where the uninterrupted run ends (thermostat and PRNG state included)."""
    kw = dict(
        placement="inner", thermostat="pile_l", nbeads=4, nmts=(1, 3), contracted=True, steps=20,
        checkpoint="<checkpoint filename='chk' stride='10' overwrite='false'/>",
    )
    q_full, p_full, e_full, _ = h.run_inprocess(h.simulation_xml(**kw), tmp_path / "full")
    chk = (tmp_path / "full" / "sim.chk_1").read_text()  # chk_0 is the start
    assert "thermostat_placement='inner'" in chk and re.search(r"<step>\s*10\s*</step>", chk)
    (tmp_path / "resumed").mkdir()
    q_res, p_res, e_res, sim = h.run_inprocess(chk, tmp_path / "resumed")
    assert sim.step == 19
    assert np.abs(q_res - q_full).max() < 1e-9
    assert np.abs(p_res - p_full).max() < 1e-9 * np.abs(p_full).max()
    assert abs(e_res - e_full) < 1e-9


# ----------------------------------------------------------------------------- guard


def test_blow_up_stops_with_one_line_and_a_good_restart(tmp_path):
    # NVE at 100 fs: the Ne atoms' springs (period 290 fs) are unstable, the Ar ones not
    xml = h.simulation_xml(nmts=(1, 1), dt_fs=100.0, steps=200)
    with pytest.raises(SimulationBlewUp) as info:
        h.run_inprocess(xml, tmp_path / "boom")
    msg = str(info.value)
    assert "\n" not in msg and "blew up at step" in msg and "kinetic temperature" in msg
    step = int(re.search(r"at step (\d+)", msg).group(1))
    assert step > 1
    restart = (tmp_path / "boom" / "RESTART").read_text()
    assert "mode='mts'" in restart
    assert re.search(rf"<step>\s*{step - 1}\s*</step>", restart)
    # the RESTART state is the state after step-1 steps of the same run
    q_ok, p_ok, _, _ = h.run_inprocess(xml.replace("<total_steps>200", f"<total_steps>{step - 1}"), tmp_path / "ok")
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    softexit.reset()
    with h.chdir(tmp_path / "boom"):
        back = Simulation.load_from_xml(restart, custom_verbosity="quiet", read_only=True)
    softexit.reset()
    q_back = h.state(back.syslist[0].beads.q)
    assert np.isfinite(q_back).all()
    assert np.abs(q_back - q_ok).max() < 1e-9


def test_guard_checks_nan_and_distances(tmp_path):
    # temperature check off: the run goes on until the numbers overflow
    nan_guard = "<mts_guard><max_temperature_factor>0</max_temperature_factor><min_distance>0</min_distance></mts_guard>"
    xml = h.simulation_xml(nmts=(1, 1), dt_fs=3000.0, steps=400, guard=nan_guard)
    with pytest.raises(SimulationBlewUp, match="non-finite"):
        h.run_inprocess(xml, tmp_path / "nan")
    # atoms 3.8 A apart: a 4 A minimum distance stops the run at the first check
    close_guard = "<mts_guard><stride>3</stride><min_distance units='angstrom'>4.0</min_distance></mts_guard>"
    with pytest.raises(SimulationBlewUp, match=r"at step 3: two atoms are 3\.\d+ A apart"):
        h.run_inprocess(h.simulation_xml(steps=10, guard=close_guard), tmp_path / "close")
    # stride 0: no guard, no monitor
    off = "<mts_guard><stride>0</stride><min_distance units='angstrom'>4.0</min_distance></mts_guard>"
    h.run_inprocess(h.simulation_xml(steps=4, guard=off), tmp_path / "off")
    assert not (tmp_path / "off" / "sim.mts_monitor").exists()


def test_monitor_matches_ipi_species_temperature(tmp_path):
    xml = h.simulation_xml(thermostat="pile_l", placement="inner", nbeads=4, steps=10, fixcom=True)
    q, p, e, sim = h.run_inprocess(xml, tmp_path)
    system = sim.syslist[0]
    mine = system.motion.integrator.monitor.species_temperatures()
    for species in ("Ar", "Ne"):
        ipi_value = system.properties[f"temperature(atom={species})"][0]
        assert mine[species] == pytest.approx(ipi_value, rel=1e-12)
    lines = (tmp_path / "sim.mts_monitor").read_text().splitlines()
    assert lines[0].startswith("# step time_ps conserved_Ha")
    assert len(lines) == 2 and lines[1].split()[0] == "10"
