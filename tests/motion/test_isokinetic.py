"""`thermostat_placement='isokinetic'` (SIN(R)): the sub-steps are the exact flows they claim
to be and keep the isokinetic surface; through i-PI, positions sample the canonical
distribution at an outer step where RESPA resonates; RESTART continuity; refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ipi_mts.motion as mts_motion
from ipi_mts.motion.isokinetic import Isokinetic

import mts_helpers as h


@pytest.fixture(autouse=True, scope="module")
def _registered():
    mts_motion.register()


def _thermostat(n=7, seed=0, L=3):
    rng = np.random.default_rng(seed)
    masses = rng.uniform(1.0, 30.0, n) * 1822.9
    iso = Isokinetic(kT=1e-3, tau=400.0, masses=masses, gaussian=rng.standard_normal, L=L)
    v = iso.project(rng.standard_normal(n) * np.sqrt(1e-3 / masses))
    return iso, v, rng


def test_substeps_keep_the_isokinetic_surface():
    iso, v, rng = _thermostat()
    assert np.allclose(iso.constraint(v), 1.0, rtol=0, atol=1e-13)
    for _ in range(50):
        force = rng.standard_normal(v.size) * 10.0 ** rng.uniform(-8, 0, v.size)  # series branch too
        v = iso.kick(v, force, 40.0)
        v = iso.nose_hoover(v, 20.0)
        iso.ornstein_uhlenbeck(20.0)
        assert np.allclose(iso.constraint(v), 1.0, rtol=0, atol=1e-12)
    # a huge force cannot put more than L kT into a degree of freedom
    v = iso.kick(v, np.full(v.size, 1e3), 100.0)
    assert np.all(iso.m * v**2 <= iso.L * iso.kT * (1 + 1e-12))


def _rk4(rhs, y, t, n=4000):
    dt = t / n
    for _ in range(n):
        k1 = rhs(y)
        k2 = rhs(y + dt / 2 * k1)
        k3 = rhs(y + dt / 2 * k2)
        k4 = rhs(y + dt * k3)
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def test_kick_is_the_exact_flow_of_its_equations():
    """v̇ = F/m − λ v, v̇1 = −λ v1 with λ = F v/(L kT), F constant: against RK4."""
    iso, v, rng = _thermostat()
    force = np.array([3e-2, -1e-2, 5e-3, 1e-9, -2e-10, 4e-2, 0.0])  # 1e-9, 1e-10, 0: the series
    n, L, lkt = v.size, iso.L, iso.L * iso.kT

    def rhs(y):
        vv, v1 = y[:n], y[n:].reshape(L, n)
        lam = force * vv / lkt
        return np.concatenate([force / iso.m - lam * vv, (-lam * v1).ravel()])

    expected = _rk4(rhs, np.concatenate([v, iso.v1.ravel()]), 60.0)
    got = iso.kick(v, force, 60.0)
    assert np.abs(got - expected[:n]).max() < 1e-10 * np.abs(expected[:n]).max()
    assert np.abs(iso.v1.ravel() - expected[n:]).max() < 1e-10 * np.abs(expected[n:]).max()


def test_nose_hoover_is_the_exact_flow_at_fixed_v2():
    """v̇ = −λ v, v̇1_k = −λ v1_k − v2_k v1_k, λ = −L/(L+1) Σ Q1 v1² v2/(L kT): against RK4
    (the half-kicks of v2 around it are explicit)."""
    iso, v, _ = _thermostat(seed=1)
    iso.v2 *= 20.0
    n, L, lkt, c = v.size, iso.L, iso.L * iso.kT, iso.L / (iso.L + 1) * iso.Q1
    v1, v2 = iso.v1.copy(), iso.v2.copy()

    def rhs(y):
        vv, w = y[:n], y[n:].reshape(L, n)
        lam = -c * (w**2 * v2).sum(0) / lkt
        return np.concatenate([-lam * vv, (-lam * w - v2 * w).ravel()])

    t = 30.0
    iso._t = lambda tau: None  # the exact part alone
    expected = _rk4(rhs, np.concatenate([v, v1.ravel()]), t)
    got = iso.nose_hoover(v, t)
    assert np.abs(got - expected[:n]).max() < 1e-10 * np.abs(expected[:n]).max()
    assert np.abs(iso.v1.ravel() - expected[n:]).max() < 1e-10 * np.abs(expected[n:]).max()


# ----------------------------------------------------------------------------- through i-PI

# Both forces harmonic traps on the sites: fast k = 0.01 a.u. (Ne period 290 fs), slow k =
# 0.0001. At an outer step of 145 fs, half the Ne period, the slow impulses resonate with
# the Ne springs; positions should still sample ⟨V⟩ = n kT/2.
RESONANT = dict(dt_fs=145.0, nmts=(1, 29), k_fast=0.01, k_slow=0.0001, temperature=60.0, tau_fs=20.0,
                properties="step, temperature{kelvin}, potential",
                guard="<mts_guard><max_temperature_factor>1000</max_temperature_factor></mts_guard>")


def _mean_potential_ratio(workdir, skip=100):
    from ipi.utils.units import Constants, unit_to_internal

    out = np.loadtxt(workdir / "sim.out")
    kT = Constants.kb * unit_to_internal("temperature", "kelvin", RESONANT["temperature"])
    n = 3 * len(h.CLUSTER)
    ratio = out[skip:, 2] / (n * kT / 2)
    blocks = ratio[: len(ratio) // 10 * 10].reshape(10, -1).mean(1)
    return ratio.mean(), blocks.std() / np.sqrt(10), out[skip:, 1].mean()


def test_isokinetic_samples_positions_where_respa_resonates(tmp_path):
    xml = h.simulation_xml(placement="isokinetic", thermostat="langevin", steps=600, **RESONANT)
    *_, sim = h.run_inprocess(xml, tmp_path / "iso")
    ratio, err, temperature = _mean_potential_ratio(tmp_path / "iso")
    assert abs(ratio - 1) < max(3 * err, 0.04), (ratio, err)
    assert abs(temperature / (60.0 * 4 / 5) - 1) < 0.05  # ⟨m v²⟩ = kT L/(L+1), L = 4
    assert "(isokinetic: T L/(L+1) = 48.0 K by construction; the positions sample 60.0 K)" in mts_motion.summary_line(sim)
    # i-PI's own MTS at the same step, with the Langevin thermostat outside, is far off
    # (measured 0.84 ± 0.02)
    h.run_inprocess(h.simulation_xml(placement="outer", thermostat="langevin", steps=600, **RESONANT),
                    tmp_path / "outer")
    ratio_outer, err_outer, _ = _mean_potential_ratio(tmp_path / "outer")
    assert abs(ratio_outer - 1) > 5 * max(err_outer, err), (ratio_outer, err_outer)


def test_isokinetic_restart_continues_identically(tmp_path):
    kw = dict(placement="isokinetic", thermostat="langevin", nmts=(1, 3), steps=20,
              checkpoint="<checkpoint filename='chk' stride='10' overwrite='false'/>")
    q_full, p_full, _, _ = h.run_inprocess(h.simulation_xml(**kw), tmp_path / "full")
    chk = (tmp_path / "full" / "sim.chk_1").read_text()
    assert "thermostat_placement='isokinetic'" in chk and "<isokinetic" in chk
    (tmp_path / "resumed").mkdir()
    q_res, p_res, _, sim = h.run_inprocess(chk, tmp_path / "resumed")
    assert sim.step == 19
    assert np.abs(q_res - q_full).max() < 1e-9
    assert np.abs(p_res - p_full).max() < 1e-9 * np.abs(p_full).max()


def test_isokinetic_refusals(tmp_path):
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    h.write_xyz(tmp_path / "init.xyz")
    cases = [
        (dict(thermostat="langevin", nbeads=4), "classical only"),
        (dict(thermostat="svr"), "needs <thermostat mode='langevin'>"),
        (dict(thermostat="langevin", fixcom=True), "<fixcom>False</fixcom>"),
    ]
    for kw, message in cases:
        softexit.reset()
        with h.chdir(tmp_path), pytest.raises(ValueError, match=re.escape(message)):
            Simulation.load_from_xml(h.simulation_xml(placement="isokinetic", **kw), custom_verbosity="quiet",
                                     read_only=True)
    softexit.reset()
