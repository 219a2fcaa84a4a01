"""`ipi-mts data trajectories`: NVE segments with momenta through the real launcher (a
32-atom fcc Al box with ASE's EMT, a few fine steps), their units and their dynamics."""

import math

import ase.io
import ase.units
import numpy as np
import pytest
import torch
from ase.build import bulk

from ipi_mts import units
from ipi_mts.cli import main
from ipi_mts.data.trajectories import MOMENTUM_AU_PER_ASE, read_trajectories
from ipi_mts.potentials import load_potential
from ipi_mts.potentials.model_file import ipi_masses

DT_FS = 1.0
STEPS = 10


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("traj")
    ase.io.write(tmp / "al.extxyz", bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2)))
    out = tmp / "out.extxyz"
    code = main(["data", "trajectories", "--model", "ase:EMT", "--structure", str(tmp / "al.extxyz"),
                 "--temperatures", "500", "--dt-fs", str(DT_FS), "--save-every", "1",
                 "--segment-fs", str(STEPS * DT_FS), "--segments", "2", "--spacing-fs", "20",
                 "--equilibration-ps", "0.04", "--quiet", "--out", str(out)])
    assert code == 0
    return out


def test_frames_carry_momenta_masses_and_segment_info(trajectory):
    frames = ase.io.read(trajectory, index=":")
    assert len(frames) == 2 * (STEPS + 1)  # the starting state and every step, per segment
    assert [a.info["segment"] for a in frames] == [1] * (STEPS + 1) + [2] * (STEPS + 1)
    assert [a.info["time_fs"] for a in frames[: STEPS + 1]] == [k * DT_FS for k in range(STEPS + 1)]
    assert {a.info["temperature"] for a in frames} == {500.0}
    assert all(a.info["frame_dt_fs"] == DT_FS for a in frames)
    np.testing.assert_allclose(frames[0].get_masses(), ipi_masses([13] * 32))  # the run's (i-PI's) masses
    assert np.abs(frames[0].get_momenta()).max() > 0
    # the segments start from different NVT states
    assert np.abs(frames[0].positions - frames[STEPS + 1].positions).max() > 1e-3


def test_momentum_unit_against_ase():
    """ASE momenta are in √(amu·eV); one atomic unit of momentum is √(m_e·Hartree)."""
    au_in_ase = math.sqrt(ase.units._me / ase.units._amu * ase.units.Hartree)
    assert MOMENTUM_AU_PER_ASE == pytest.approx(1.0 / au_in_ase, rel=1e-6)


def test_segments_are_verlet_nve(trajectory):
    """q' − q = dt (p + p')/2m up to O(dt³) (velocity Verlet), and E = K + V is conserved."""
    segments = read_trajectories(trajectory)
    assert len(segments) == 2
    emt = load_potential("ase:EMT")
    dt = DT_FS * units.FEMTOSECOND
    from ipi_mts.maps import System

    for s in segments:
        m = s.masses[None, :, None]
        dq = s.q[1:] - s.q[:-1]
        predicted = dt * 0.5 * (s.p[1:] + s.p[:-1]) / m
        assert np.abs(dq - predicted).max() < 2e-3 * np.abs(dq).max()
        system = System.from_ipi(s.masses, s.cell, s.numbers)
        energies = [
            float(system.potential_energy(emt, torch.as_tensor(q))) + 0.5 * float((p**2 / m[0]).sum())
            for q, p in zip(s.q, s.p)
        ]
        drift_ev_per_atom = units.energy_from_wire(np.ptp(energies)) / len(s.numbers)
        assert drift_ev_per_atom < 2e-4


def test_bad_segment_length_is_one_line(tmp_path, capsys):
    code = main(["data", "trajectories", "--model", "ase:EMT", "--structure", "x.xyz", "--dt-fs", "1",
                 "--segment-fs", "10.5", "--out", str(tmp_path / "o.extxyz")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "segment length" in err[0]
