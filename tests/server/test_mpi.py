"""`mpirun -n K ipi-mts serve --mpi`: real MPI ranks (mpi4py + MPICH wheels) serving a real
i-PI (`ipi-mts run`) over loopback TCP."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ipi_mts.errors import UserError
from ipi_mts.server.mpi import Forcefield, assignment
from ipi_mts.testing_ipi import free_tcp_port

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def test_forcefield_mapping():
    fast, slow = Forcefield.parse("31415=water-pair:fast"), Forcefield.parse("31416=water-pair:slow")
    assert (slow.port, slow.model, slow.component) == (31416, "water-pair", "slow")
    assert Forcefield.parse("1=qtip4pf").component == "full"
    assert (Forcefield.parse("1=ase:EMT").model, Forcefield.parse("1=ase:EMT:full").model) == ("ase:EMT", "ase:EMT")
    # 4 ranks, 1 fast + 3 slow, 8 beads: the slow ranks hold 3 + 3 + 2 connections
    got = [assignment([fast, slow], 4, r, ranks="1,3", beads=8) for r in range(4)]
    assert [(ff.component, j, k) for ff, j, k in got] == [("fast", 0, 8), ("slow", 0, 3), ("slow", 1, 3), ("slow", 2, 2)]
    # default: as even as possible, in order
    assert [assignment([fast, slow], 3, r)[0].component for r in range(3)] == ["fast", "fast", "slow"]


@pytest.mark.parametrize(
    "text, ranks, size, words",
    [
        ("31415", None, 2, "expected PORT=MODEL"),
        ("x=qtip4pf", None, 2, "expected PORT=MODEL"),
        ("1=qtip4pf", "1,1", 2, "one count"),
        ("1=qtip4pf", "3", 2, "adds up to 3"),
    ],
)
def test_bad_mapping(text, ranks, size, words):
    with pytest.raises(UserError, match=words):
        assignment([Forcefield.parse(text)], size, 0, ranks=ranks)


def test_more_forcefields_than_ranks():
    with pytest.raises(UserError, match="need at least 2 MPI ranks"):
        assignment([Forcefield.parse("1=a"), Forcefield.parse("2=b")], 1, 0)


# ------------------------------------------------------------------ real ranks, real i-PI

needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec: pip install '.[mpi]'")

PIMD = """<simulation verbosity='quiet' safe_stride='1'>
  <output prefix='sim'>
    <trajectory filename='pos' stride='1' format='xyz'> positions </trajectory>
    <checkpoint stride='1000'/>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>4242</seed></prng>
  {ffs}
  <system>
    <initialize nbeads='8'>
      <file mode='xyz' units='angstrom'>init.xyz</file>
      <velocities mode='thermal' units='kelvin'>300</velocities>
    </initialize>
    <forces>
      <force forcefield='slow'> <mts_weights>[1, 0]</mts_weights> </force>
      <force forcefield='fast'> <mts_weights>[0, 1]</mts_weights> </force>
    </forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'>1.0</timestep>
        <nmts>[1, 2]</nmts>
        <thermostat mode='pile_l'><tau units='femtosecond'>100</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>300</temperature></ensemble>
  </system>
</simulation>
"""
MODELS = {"fast": "qtip4pf-intra", "slow": "qtip4pf-inter"}


def _write_case(path: Path, steps: int, mode: str, ports=None) -> Path:
    from tests.test_launcher import write_water

    path.mkdir()
    write_water(path / "init.xyz", n_molecules=8)
    ffs = []
    for name, model in MODELS.items():
        if mode == "unix":
            where = f"mode='unix'><address>m{os.getpid()}{path.name}{name}</address>"
        else:
            where = f"mode='inet'><address>127.0.0.1</address><port>{ports[name]}</port>"
        ffs.append(f"<ffsocket name='{name}' {where}<parameters>{{model: {model}}}</parameters></ffsocket>")
    (path / "input.xml").write_text(PIMD.format(steps=steps, ffs="\n  ".join(ffs)))
    return path


def _run_ipi(case: Path):
    return subprocess.Popen([sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", "input.xml"], cwd=case,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _mpi_serve(case: Path, ports, ranks=4):
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "ipi_mts.cli", "serve", "--mpi",
           "--host", "127.0.0.1", "--beads", "8", "--ranks", "1,3", "--template", "init.xyz",
           "--forcefield", f"{ports['fast']}=qtip4pf-intra", "--forcefield", f"{ports['slow']}=qtip4pf-inter"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=case, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _beads(case: Path) -> np.ndarray:
    from tests.test_launcher import frames

    return np.array([frames(case / f"sim.pos_{b}.xyz") for b in range(8)])


STEPS = 12


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The run with one local driver per forcefield (ipi-mts run over UNIX sockets)."""
    case = _write_case(tmp_path_factory.mktemp("mpi") / "single", STEPS, "unix")
    ipi = _run_ipi(case)
    out, err = ipi.communicate(timeout=240)
    assert ipi.returncode == 0, err
    return _beads(case)


def _workers(port: int) -> list[int]:
    """PIDs of the `ipi-mts serve` worker processes (not the MPI ranks) serving `port`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and b"--mpi" not in argv and b"--port" in argv and str(port).encode() in argv:
            pids.append(int(entry.name))
    return pids


@needs_mpi
@pytest.mark.parametrize("kill", [False, True], ids=["undisturbed", "worker-killed"])
def test_pimd_over_four_ranks_matches_single_process(tmp_path, single_process, kill):
    ports = {name: free_tcp_port() for name in MODELS}
    case = _write_case(tmp_path / "mpi", STEPS, "inet", ports)
    ipi = _run_ipi(case)
    ranks = _mpi_serve(case, ports)
    killed = 0
    if kill:  # SIGKILL one slow rank's worker once the run is under way
        deadline = time.time() + 200
        while time.time() < deadline and not killed and ipi.poll() is None:
            pos = case / "sim.pos_0.xyz"
            if pos.exists() and pos.read_text().count("CELL") >= 4:
                pids = _workers(ports["slow"])
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = 1
            time.sleep(0.05)
        assert killed, "the run ended before a worker could be killed"
    out, err = ipi.communicate(timeout=240)
    rout, rerr = ranks.communicate(timeout=120)
    assert ipi.returncode == 0, err
    assert ranks.returncode == 0, rerr  # every rank left cleanly
    assert rerr.count("worker pid") == 4 + killed, rerr
    if kill:
        assert "worker ended (killed by SIGKILL); starting a new one (1/10)" in rerr, rerr
    assert np.array_equal(_beads(case), single_process)
