"""Run a real i-PI on a tiny input in a scratch folder: for tests of drivers and launchers.

Everything here waits with a timeout and kills what it started, so that a test fails
instead of hanging:

    with IPIProcess(tmp_path, simulation_xml(ffsocket_xml("ff", address)), socket=address):
        ...  # start a driver, then .wait(30)

i-PI refuses to start if its UNIX socket file exists, so every test takes a fresh address
from `unique_address()`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

DEFAULT_PREFIX = "/tmp/ipi_"


def script(name: str) -> str:
    """An installed console script (i-pi, i-pi-py_driver, ipi-mts) of this environment."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable} nor on PATH")
    return found


def unique_address(tag: str = "test") -> str:
    """A UNIX socket address nobody else uses (short: paths are limited to 107 bytes)."""
    return f"mts-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def free_tcp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_listening(port: int) -> bool:
    """Whether some process listens on 127.0.0.1:`port`, without connecting (a connection
    would count as a driver for i-PI)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


# ---------------------------------------------------------------------------- inputs


def write_xyz(path, symbols, positions, cell, units: str = "angstrom") -> Path:
    """An i-PI xyz file: orthorhombic `cell` lengths (3,) and positions (N, 3) in `units`."""
    path = Path(path)
    a, b, c = cell
    lines = [
        str(len(symbols)),
        f"# CELL(abcABC): {a:.10f} {b:.10f} {c:.10f} 90.0 90.0 90.0 "
        f"cell{{{units}}} positions{{{units}}}",
    ]
    for s, (x, y, z) in zip(symbols, np.asarray(positions, dtype=float)):
        lines.append(f"{s:2s} {x:20.12f} {y:20.12f} {z:20.12f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def ffsocket_xml(
    name: str,
    address: str,
    *,
    mode: str = "unix",
    port: int | None = None,
    batch_size: int = 1,
    consolidate: bool = True,
    parameters: str | None = None,
    timeout: float | None = None,
    pbc: bool = False,
) -> str:
    parts = [f"<address>{address}</address>"]
    if port is not None:
        parts.append(f"<port>{port}</port>")
    if batch_size != 1:
        parts.append(f"<batch_size>{batch_size}</batch_size>")
    if not consolidate:
        parts.append("<consolidate_messages>false</consolidate_messages>")
    if parameters:
        parts.append(f"<parameters>{parameters}</parameters>")
    if timeout is not None:
        parts.append(f"<timeout>{timeout}</timeout>")
    return (
        f"<ffsocket name='{name}' mode='{mode}' pbc='{str(pbc).lower()}'>"
        + "".join(parts)
        + "</ffsocket>"
    )


def ffdirect_xml(name: str, parameters: str, *, pes_path=None, batch_size: int = 1) -> str:
    """An `<ffdirect>`: the plugin file `pes_path` as i-PI's custom PES, or without it the
    PES `ipi_mts` that `ipi-mts run` registers."""
    extra = f"<batch_size>{batch_size}</batch_size>" if batch_size != 1 else ""
    pes = f"<pes>custom</pes><pes_path>{pes_path}</pes_path>" if pes_path else "<pes>ipi_mts</pes>"
    return f"<ffdirect name='{name}'>{pes}<parameters>{parameters}</parameters>{extra}</ffdirect>"


def simulation_xml(
    forcefield: str,
    *,
    ff_name: str | None = None,
    init: str = "init.xyz",
    nbeads: int = 1,
    steps: int = 3,
    timestep_fs: float = 0.5,
    temperature: float = 300.0,
    seed: int = 12345,
    prefix: str = "sim",
    properties: str = "[ step, potential, conserved ]",
    trajectories: tuple[str, ...] = ("positions", "forces"),
    dynamics: str = "nve",
) -> str:
    """A short NVE (or `dynamics` mode with a Langevin thermostat) run of `init` with the
    forcefield element `forcefield`; properties and full-precision (`bin`) trajectories every step."""
    if ff_name is None:
        ff_name = forcefield.split("name='", 1)[1].split("'", 1)[0]
    trajs = "".join(
        f"<trajectory filename='{q}' stride='1' format='bin'>{q}</trajectory>" for q in trajectories
    )
    thermostat = ""
    if dynamics == "nvt":
        thermostat = (
            "<thermostat mode='pile_l'><tau units='femtosecond'>10</tau></thermostat>"
        )
    return f"""<simulation verbosity='low' safe_stride='1000'>
  <output prefix='{prefix}'>
    <properties stride='1' filename='out' flush='1'> {properties} </properties>
    {trajs}
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>{seed}</seed></prng>
  {forcefield}
  <system>
    <initialize nbeads='{nbeads}'>
      <file mode='xyz'>{init}</file>
      <velocities mode='thermal' units='kelvin'>{temperature}</velocities>
    </initialize>
    <forces><force forcefield='{ff_name}'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='{dynamics}'>
        <timestep units='femtosecond'>{timestep_fs}</timestep>
        {thermostat}
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>{temperature}</temperature></ensemble>
  </system>
</simulation>
"""


# ---------------------------------------------------------------------------- processes


class IPIProcess:
    """`i-pi input.xml` in `workdir`, as a context manager that always kills it.

    `socket` (a UNIX address) or `port` (TCP) says what to wait for in `wait_listening`.
    """

    def __init__(
        self,
        workdir,
        xml: str,
        *,
        socket: str | None = None,
        port: int | None = None,
        sockets_prefix: str | None = None,
        env: dict | None = None,
    ):
        self.workdir = Path(workdir)
        self.xml = xml
        self.socket = socket
        self.port = port
        self.prefix = sockets_prefix or DEFAULT_PREFIX
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> str | None:
        return None if self.socket is None else self.prefix + self.socket

    def start(self) -> "IPIProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "input.xml").write_text(self.xml)
        cmd = [sys.executable, script("i-pi"), "input.xml"]
        if self.prefix != DEFAULT_PREFIX:
            cmd += ["--sockets_prefix", self.prefix]
        self._out = open(self.workdir / "ipi.stdout", "w")
        self._err = open(self.workdir / "ipi.stderr", "w")
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=self._out, stderr=self._err, env=env,
            start_new_session=True,
        )
        return self

    def __enter__(self) -> "IPIProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

    def log(self) -> str:
        text = ""
        for name in ("ipi.stdout", "ipi.stderr"):
            p = self.workdir / name
            if p.exists():
                text += f"--- {name} ---\n" + p.read_text()[-4000:]
        return text

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until i-PI has opened its socket; raises (with i-PI's output) if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"i-PI exited with {self.proc.returncode} before listening\n{self.log()}")
            if self.socket_path is not None and os.path.exists(self.socket_path):
                return
            if self.port is not None and tcp_listening(self.port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"i-PI did not open its socket within {timeout} s\n{self.log()}")

    def wait(self, timeout: float = 60.0) -> int:
        """i-PI's exit code; raises TimeoutError (with its output) if it runs longer."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"i-PI did not finish within {timeout} s\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        for f in ("_out", "_err"):
            if hasattr(self, f):
                getattr(self, f).close()
        if self.socket_path is not None and os.path.exists(self.socket_path):
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass


class Process:
    """Any command with its output in files, killed (with its process group) on exit."""

    def __init__(self, cmd, workdir, name: str, env: dict | None = None):
        self.cmd = [str(c) for c in cmd]
        self.workdir = Path(workdir)
        self.name = name
        self.env = env
        self.proc = None

    def __enter__(self) -> "Process":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._out = open(self.workdir / f"{self.name}.stdout", "w")
        self._err = open(self.workdir / f"{self.name}.stderr", "w")
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            self.cmd, cwd=self.workdir, stdout=self._out, stderr=self._err, env=env,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._out.close()
        self._err.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} did not finish within {timeout} s\n{self.output()}") from None

    def wait_for_text(self, text: str, timeout: float) -> None:
        """Until `text` appears in the process's stderr (or raise, with its output)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not print {text!r}\n{self.output()}")

    def stdout(self) -> str:
        return (self.workdir / f"{self.name}.stdout").read_text()

    def stderr(self) -> str:
        return (self.workdir / f"{self.name}.stderr").read_text()

    def output(self) -> str:
        self._out.flush()
        self._err.flush()
        return f"--- {self.name} stdout ---\n{self.stdout()[-3000:]}\n--- stderr ---\n{self.stderr()[-3000:]}"


def serve_command(model: str, *args) -> list[str]:
    """`ipi-mts serve --model MODEL ARGS...` run with this interpreter."""
    return [sys.executable, "-m", "ipi_mts.cli", "serve", "--model", model, *map(str, args)]


def py_driver_command(*args) -> list[str]:
    """i-PI's reference Python client, `i-pi-py_driver ARGS...`."""
    return [sys.executable, script("i-pi-py_driver"), *map(str, args)]


# ---------------------------------------------------------------------------- outputs


def read_properties(path) -> np.ndarray:
    """An i-PI properties file as a (steps, columns) array."""
    return np.atleast_2d(np.loadtxt(path, comments="#"))


def read_frames(path):
    """The frames of an i-PI `format='bin'` trajectory, at full precision, as a list of
    (h (3, 3) with vectors as columns, values (N, 3)) in the trajectory's units (i-PI's
    atomic units unless the XML says otherwise)."""
    data = Path(path).read_bytes()
    frames = []
    off = 0
    while off < len(data):
        h = np.frombuffer(data, np.float64, 9, off).reshape(3, 3)
        off += 72
        nat = int(np.frombuffer(data, np.int64, 1, off)[0])
        off += 8
        values = np.frombuffer(data, np.float64, 3 * nat, off).reshape(nat, 3)
        off += 24 * nat
        nnames = int(np.frombuffer(data, np.int64, 1, off)[0])
        off += 8 + 4 * nnames
        # the title (UTF-32) ends with "cell{units}": read up to that closing brace
        title = ""
        while off < len(data):
            ch = data[off : off + 4].decode("utf-32-le")
            off += 4
            title += ch
            if ch == "}" and "cell{" in title:
                break
        frames.append((h.copy(), values.copy()))
    return frames


class RunOutput:
    """What `simulation_xml` runs write: per bead and frame, cells h (3, 3) bohr (vectors as
    columns), positions (N, 3) bohr and forces (N, 3) Ha/bohr; per frame, the properties."""

    def __init__(self, workdir, prefix: str = "sim"):
        workdir = Path(workdir)
        pos_files = sorted(workdir.glob(f"{prefix}.positions_*.bin"), key=_bead_index)
        frc_files = sorted(workdir.glob(f"{prefix}.forces_*.bin"), key=_bead_index)
        if not pos_files or len(pos_files) != len(frc_files):
            raise FileNotFoundError(f"no position/force trajectories {prefix}.*.bin in {workdir}")
        pos = [read_frames(p) for p in pos_files]
        frc = [read_frames(p) for p in frc_files]
        self.cells = np.array([[h for h, _ in bead] for bead in pos])  # (beads, frames, 3, 3)
        self.positions = np.array([[q for _, q in bead] for bead in pos])  # (beads, frames, N, 3)
        self.forces = np.array([[f for _, f in bead] for bead in frc])
        self.properties = read_properties(workdir / f"{prefix}.out")  # step, potential, ...

    @property
    def nbeads(self) -> int:
        return self.positions.shape[0]

    @property
    def nframes(self) -> int:
        return self.positions.shape[1]


def _bead_index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def assert_matches_direct(run: RunOutput, evaluator, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """The forces i-PI received equal `evaluator` on the same cells and positions (all beads,
    all frames), and the `potential` column (2nd, 8 digits) is their bead average."""
    energies = []
    for b in range(run.nbeads):
        e, f, _, _ = evaluator(run.cells[b], run.positions[b])
        np.testing.assert_allclose(run.forces[b], f, rtol=rtol, atol=atol)
        energies.append(e)
    potential = np.mean(energies, axis=0)
    np.testing.assert_allclose(run.properties[: run.nframes, 1], potential, rtol=max(rtol, 2e-8), atol=atol)


def run_ipi_with_driver(
    workdir,
    xml: str,
    driver_cmd=None,
    *,
    socket: str | None = None,
    port: int | None = None,
    sockets_prefix: str | None = None,
    driver_first: bool = False,
    timeout: float = 60.0,
    env: dict | None = None,
):
    """Run i-PI on `xml` in `workdir` with a driver command (None for <ffdirect> inputs).
    With `driver_first` the driver starts first and i-PI only once the driver reports that
    it is waiting for i-PI (it must retry connecting); otherwise the driver starts once
    i-PI listens. Returns (i-PI's exit code, the driver's exit code or None, the driver's
    stderr); everything is killed on the way out."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    ipi = IPIProcess(workdir, xml, socket=socket, port=port, sockets_prefix=sockets_prefix, env=env)
    if driver_cmd is None:
        with ipi:
            return ipi.wait(timeout), None, ""
    driver = Process(driver_cmd, workdir, "driver", env=env)
    with driver:
        if driver_first:
            driver.wait_for_text("waiting for i-PI", timeout)
        with ipi:
            if not driver_first:
                ipi.wait_listening(timeout)
            try:
                rc_ipi = ipi.wait(max(1.0, deadline - time.monotonic()))
            except TimeoutError as e:
                raise TimeoutError(f"{e}\n{driver.output()}") from None
            rc_driver = driver.wait(max(1.0, deadline - time.monotonic()))
            return rc_ipi, rc_driver, driver.stderr()
