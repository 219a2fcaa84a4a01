"""Longer physics check (pytest -m slow, `make test-slow`): NVE energy conservation of
q-TIP4P/F water served by `ipi-mts serve` through the launcher, against the time step."""

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from ipi_mts.analysis import read_properties

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def nve(tmp_path, dt_fs, time_fs=250.0):
    folder = tmp_path / f"dt{dt_fs}"
    folder.mkdir()
    xml = (REPO / "inputs" / "water-64" / "nve.xml").read_text()
    xml = xml.replace("<timestep units='femtosecond'>0.5</timestep>", f"<timestep units='femtosecond'>{dt_fs}</timestep>")
    xml = xml.replace("<total_steps>2000</total_steps>", f"<total_steps>{int(round(time_fs / dt_fs))}</total_steps>")
    xml = xml.replace("ipi-mts-water-64-nve", f"t{uuid.uuid4().hex[:10]}")
    xml = xml.replace("<properties stride='20'", "<properties stride='1'")
    (folder / "input.xml").write_text(xml.replace("init.xyz", str(REPO / "inputs" / "water-64" / "init.xyz")))
    result = subprocess.run([sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", "input.xml"],
                            cwd=folder, capture_output=True, text=True, timeout=800)
    assert result.returncode == 0, result.stderr
    props = read_properties(folder / "nve.out")
    return props["conserved{electronvolt}"], props["potential{electronvolt}"]


def test_nve_energy_error_scales_as_dt_squared(tmp_path):
    """Velocity Verlet's shadow Hamiltonian: the conserved-energy fluctuation shrinks 4x when
    the step halves, and stays far below the potential energy's own fluctuation."""
    spread = {}
    for dt in (0.25, 0.5):
        conserved, potential = nve(tmp_path, dt)
        spread[dt] = conserved.std()
        assert spread[dt] < 0.02 * potential.std()
    assert 3.0 < spread[0.5] / spread[0.25] < 5.0
