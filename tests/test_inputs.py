"""Every i-PI input shipped in inputs/ runs: two steps through `ipi-mts run` from another
folder (initialisation files are found next to the input, local drivers are started),
exit 0, and the properties file holds finite numbers."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ipi_mts.analysis import read_properties

REPO = Path(__file__).resolve().parents[1]
INPUTS = sorted((REPO / "inputs").glob("*/*.xml"))


def test_the_inputs_are_found():
    assert len(INPUTS) >= 13 and (REPO / "inputs/water-64/pimd-mts-nvt-learned-inner.xml") in INPUTS


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_shipped_input_runs(tmp_path, path):
    result = subprocess.run([sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", "--steps", "2", str(path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-2000:]
    (out,) = [f for f in tmp_path.glob("*.out") if not f.name.startswith("ipi-mts")]
    props = read_properties(out)
    assert props["step"].size >= 1 and all(np.isfinite(v).all() for v in props.values())
