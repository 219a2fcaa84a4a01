"""`ipi-mts run` end to end: real i-PI in the launcher's process, real `ipi-mts serve` drivers."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from ipi_mts.data.water import water_box

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]


def write_water(path, n_molecules=8, seed=3, symbols=None):
    atoms = water_box(n_molecules, seed=seed)
    edge = atoms.cell[0, 0]
    names = symbols or atoms.get_chemical_symbols()
    lines = [str(len(atoms)), f"# CELL(abcABC): {edge} {edge} {edge} 90 90 90 cell{{angstrom}} positions{{angstrom}}"]
    lines += [f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in zip(names, atoms.positions)]
    path.write_text("\n".join(lines) + "\n")


def water_input(tmp_path, steps=20, model="qtip4pf", extra_ff="", mode="unix", port=0,
                forces=None, nmts="", dt=0.5, stride=1, thermostat=True, dynamics=None):
    """A small water run; unique socket addresses so tests never collide."""
    tag = uuid.uuid4().hex[:10]
    write_water(tmp_path / "init.xyz")
    address = f"t{tag}" if mode == "unix" else "127.0.0.1"
    port_xml = f"<port>{port}</port>" if mode == "inet" else ""
    forces = forces or "<force forcefield='main'/>"
    thermo = "<thermostat mode='langevin'><tau units='femtosecond'>50</tau></thermostat>" if thermostat else ""
    xml = f"""<simulation verbosity='quiet' safe_stride='1'>
  <output prefix='sim'>
    <properties stride='{stride}' filename='out' flush='1'> [ step, time{{picosecond}}, conserved, temperature{{kelvin}}, potential ] </properties>
    <trajectory filename='pos' stride='{stride}' format='xyz'> positions </trajectory>
    <checkpoint stride='1000'/>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>12345</seed></prng>
  <ffsocket name='main' mode='{mode}' pbc='false'>
    <address>{address}</address>{port_xml}
    <parameters>{{model: {model}}}</parameters>
  </ffsocket>
  {extra_ff.replace('TAG', tag)}
  <system>
    <initialize nbeads='1'>
      <file mode='xyz' units='angstrom'>init.xyz</file>
      <velocities mode='thermal' units='kelvin'>300</velocities>
    </initialize>
    <forces>{forces}</forces>
    <motion mode='dynamics'>
      <dynamics {dynamics or f"mode='{'nvt' if thermostat else 'nve'}'"}>
        <timestep units='femtosecond'>{dt}</timestep>{nmts}
        {thermo}
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>300</temperature></ensemble>
  </system>
</simulation>
"""
    path = tmp_path / "input.xml"
    path.write_text(xml)
    return path, tag


def run(args, cwd, timeout=180, **kw):
    return subprocess.run(
        [sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw,
    )


def assert_user_error(result, *words):
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ipi-mts run: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in last, last


def frames(path):
    """Positions of every frame of an i-PI xyz trajectory."""
    lines = Path(path).read_text().splitlines()
    n = int(lines[0])
    out = []
    for start in range(0, len(lines), n + 2):
        out.append([[float(x) for x in l.split()[1:4]] for l in lines[start + 2 : start + 2 + n]])
    return np.array(out)


SPLIT_FORCES = """<force forcefield='inter'> <mts_weights>[1, 0]</mts_weights> </force>
      <force forcefield='intra'> <mts_weights>[0, 1]</mts_weights> </force>"""
SPLIT_FFS = """<ffsocket name='inter' mode='unix' pbc='false'><address>iTAG</address><parameters>{model: qtip4pf-inter}</parameters></ffsocket>
  <ffsocket name='intra' mode='unix' pbc='false'><address>aTAG</address><parameters>{model: qtip4pf-intra}</parameters></ffsocket>"""


def test_mts_run_end_to_end(tmp_path):
    path, tag = water_input(tmp_path, steps=10, forces=SPLIT_FORCES, extra_ff=SPLIT_FFS, dt=2.0,
                            nmts="<nmts>[1, 4]</nmts>")
    result = run([path], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("ipi-mts run: done: 10 steps"), summary
    assert "ns/day" in summary and "meV/atom/ps" in summary
    props = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert props.shape[0] == 11 and np.isfinite(props).all()
    assert (tmp_path / "ipi-mts-serve-intra.log").exists()
    for name in (f"i{tag}", f"a{tag}", f"t{tag}"):
        assert not os.path.exists(f"/tmp/ipi_{name}")  # i-PI removed its sockets


def test_killed_driver_is_restarted_and_trajectory_is_unchanged(tmp_path):
    reference, disturbed = tmp_path / "ref", tmp_path / "kill"
    reference.mkdir(), disturbed.mkdir()
    path, _ = water_input(reference, steps=150, thermostat=False)
    assert run([path], reference).returncode == 0

    path, tag = water_input(disturbed, steps=150, thermostat=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", str(path)],
        cwd=disturbed, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    killed = 0
    deadline = time.time() + 120
    out_file = disturbed / "sim.out"
    while time.time() < deadline and killed < 2 and proc.poll() is None:
        rows = len(out_file.read_text().splitlines()) if out_file.exists() else 0
        if rows > 20 + 50 * killed:
            pids = subprocess.run(["pgrep", "-f", "--", f"--unix t{tag}"], capture_output=True, text=True).stdout.split()
            for pid in pids:
                os.kill(int(pid), signal.SIGKILL)
            killed += bool(pids)
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert killed == 2
    assert stderr.count("restarting it") == 2, stderr
    a, b = frames(reference / "sim.pos_0.xyz"), frames(disturbed / "sim.pos_0.xyz")
    assert a.shape == b.shape == (151, 24, 3)
    assert np.array_equal(a, b)


def test_sigterm_with_a_reader_gone_writes_restart_and_exits(tmp_path):
    """`ipi-mts run | tee` stopped by Ctrl-C, or a stopped benchmark: stdout is a broken pipe
    when the signal comes. The run must still write RESTART and end, not wait for ever."""
    path, tag = water_input(tmp_path, steps=100000)
    proc = subprocess.Popen([sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", str(path)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out_file, deadline, done = tmp_path / "sim.out", time.time() + 120, 0
        while time.time() < deadline and proc.poll() is None and done < 20:
            if out_file.exists():  # rows of steps 0, 1, ...: done - 1 steps finished
                done = sum(1 for line in out_file.read_text().splitlines() if not line.startswith("#"))
            time.sleep(0.05)
        assert proc.poll() is None and done >= 20
        proc.stdout.close(), proc.stderr.close()  # the reader goes away
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1  # interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["pkill", "-KILL", "-f", "--", f"--unix t{tag}"])
    restart = (tmp_path / "RESTART").read_text()
    step = int(restart.split("<step>")[1].split("</step>")[0])
    assert step >= done - 1  # at least the steps seen finished
    assert not subprocess.run(["pgrep", "-f", "--", f"--unix t{tag}"], capture_output=True).stdout  # drivers gone


def test_print_drivers_for_inet(tmp_path):
    path, _ = water_input(tmp_path, mode="inet", port=23456)
    result = run([path, "--print-drivers"], tmp_path, timeout=60)
    assert result.returncode == 0
    assert "ipi-mts serve --model qtip4pf --host 127.0.0.1 --port 23456" in result.stdout
    assert "mpirun -n K ipi-mts serve --mpi --host 127.0.0.1 --beads 1 --template SPECIES.xyz --forcefield 23456=qtip4pf" in result.stdout


def test_inet_beyond_loopback_needs_allow_remote(tmp_path):
    path, _ = water_input(tmp_path, mode="inet", port=23457)
    path.write_text(path.read_text().replace("<address>127.0.0.1</address>", "<address>0.0.0.0</address>"))
    assert_user_error(run([path], tmp_path, timeout=60), "0.0.0.0:23457", "--allow-remote")


@pytest.mark.parametrize(
    "text, words",
    [
        (None, ("does not exist",)),
        ("<simulation><total_steps>10</total_steps>", ("not valid XML",)),
        ("<foo/>", ("not an i-PI input",)),
    ],
)
def test_bad_input_files(tmp_path, text, words):
    path = tmp_path / "input.xml"
    if text is not None:
        path.write_text(text)
    assert_user_error(run([path], tmp_path, timeout=60), *words)


def test_unknown_model_stops_the_run_with_the_driver_message(tmp_path):
    path, _ = water_input(tmp_path, model="no-such-model")
    assert_user_error(run([path], tmp_path, timeout=120), "unknown model", "no-such-model")


def test_water_that_is_not_OHH_is_refused(tmp_path):
    path, _ = water_input(tmp_path)
    write_water(tmp_path / "init.xyz", symbols=["H", "O", "H"] * 8)
    assert_user_error(run([path], tmp_path, timeout=120), "O,H,H")


def test_stale_socket_file(tmp_path):
    path, tag = water_input(tmp_path)
    stale = f"/tmp/ipi_t{tag}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(stale)
    server.close()  # the file stays, nothing listens: what a crashed run leaves
    try:
        assert_user_error(run([path], tmp_path, timeout=60), "stale socket file", stale)
    finally:
        os.unlink(stale)


def test_tcp_port_in_use(tmp_path):
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        path, _ = water_input(tmp_path, mode="inet", port=busy.getsockname()[1])
        assert_user_error(run([path], tmp_path, timeout=60), "cannot listen", str(busy.getsockname()[1]))
    finally:
        busy.close()


def restart_positions(path):
    """Bead positions stored in an i-PI RESTART file."""
    import xml.etree.ElementTree as ET

    q = ET.parse(path).getroot().find("system/beads/q").text
    return np.array([float(x) for x in q.replace("[", " ").replace("]", " ").replace(",", " ").split()])


def test_mts_inner_restart_continues_identically(tmp_path):
    """mode='mts' with the thermostat inside: a RESTART written after 6 steps and resumed by
    `ipi-mts run RESTART` ends where an uninterrupted 12-step run ends."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    dynamics = "mode='mts' thermostat_placement='inner'"
    for folder in (whole, split):
        path, _ = water_input(folder, steps=12, forces=SPLIT_FORCES, extra_ff=SPLIT_FFS, dt=2.0,
                              nmts="<nmts>[1, 4]</nmts>", dynamics=dynamics)
    result = run([whole / "input.xml"], whole)
    assert result.returncode == 0, result.stderr
    assert "mts monitor (inner thermostat" in result.stdout
    first = run([split / "input.xml", "--steps", "6"], split)
    assert first.returncode == 0, first.stderr
    assert "mode='mts'" in (split / "RESTART").read_text()
    second = run(["RESTART", "--steps", "12"], split)
    assert second.returncode == 0, second.stderr
    assert "6 steps" in second.stdout
    a, b = restart_positions(whole / "RESTART"), restart_positions(split / "RESTART")
    assert a.shape == b.shape == (72,)
    assert np.abs(a - b).max() < 1e-9
