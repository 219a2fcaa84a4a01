"""`ipi-mts run`: i-PI in this process, with local drivers that are restarted if they die.

The launcher reads the XML, starts one `ipi-mts serve` for each `<ffsocket mode='unix'>`
whose `<parameters>` name a model, runs the simulation, and stops the drivers at the end.
`mode='inet'` forcefields are served by drivers that users start elsewhere: their command
lines are printed. A driver that dies (a crash, SIGKILL) is started again and i-PI recomputes
the lost request, so the trajectory is the one an undisturbed run gives; a driver that exits
with a user error (exit code 2) stops the run with its message, RESTART written.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .motion.monitor import DriftFit

RESTARTS_PER_DRIVER = 10


@dataclass
class DriverPlan:
    """How one forcefield of the input gets its driver."""

    name: str  # the forcefield's name
    mode: str  # unix | inet
    address: str
    port: int
    model: str | None  # from <parameters>{model: ...}; None: not ours to start
    component: str = "full"
    params: dict = field(default_factory=dict)
    batch_size: int = 1

    def command(self, connections: int, prefix: str, template: str | None = None,
                threads: int | None = None) -> list[str]:
        cmd = ["ipi-mts", "serve", "--model", self.model]
        if self.component != "full":
            cmd += ["--component", self.component]
        if self.mode == "unix":
            cmd += ["--unix", self.address]
            if prefix != "/tmp/ipi_":
                cmd += ["--prefix", prefix]
        else:
            host = "127.0.0.1" if self.address in ("localhost", "") else self.address
            cmd += ["--host", host, "--port", str(self.port)]
        if connections > 1:
            cmd += ["--connections", str(connections)]
        if template:
            cmd += ["--template", template]
        if threads:
            cmd += ["--threads", str(threads)]
        for k, v in self.params.items():
            cmd += ["--param", f"{k}={v}"]
        return cmd


def _read_parameters(text: str) -> dict:
    from ipi.utils.io.inputs.io_xml import read_dict

    text = text.strip()
    if not text:
        return {}
    try:
        return read_dict(text)
    except ValueError as e:
        raise UserError(f"cannot read <parameters>{text}</parameters>: {e}") from None


def load_xml(path: Path) -> ET.Element:
    """The parsed input, with initialisation files that are missing from the working
    directory looked up in the input's own folder."""
    if not path.is_file():
        raise UserError(f"input file {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise UserError(f"{path} is not valid XML: {e}") from None
    if root.tag != "simulation":
        raise UserError(f"{path} is not an i-PI input: its root element is <{root.tag}>, not <simulation>")
    for element in root.iter():
        if element.tag in ("file", "init_file") and element.text and element.text.strip():
            name = element.text.strip()
            if not Path(name).exists() and (path.parent / name).exists():
                element.text = str((path.parent / name).resolve())
    return root


def driver_plans(root: ET.Element) -> list[DriverPlan]:
    plans = []
    for ff in root.iter("ffsocket"):
        params = _read_parameters(ff.findtext("parameters", ""))
        model = params.pop("model", None)
        component = params.pop("component", "full")
        plans.append(
            DriverPlan(
                name=ff.get("name", "ffsocket"),
                mode=ff.get("mode", "unix"),
                address=(ff.findtext("address") or "localhost").strip(),
                port=int((ff.findtext("port") or "65535").strip()),
                model=model,
                component=component,
                params=params,
                batch_size=int((ff.findtext("batch_size") or "1").strip()),
            )
        )
    return plans


def is_loopback(host: str) -> bool:
    """Whether every address `host` resolves to is a loopback one."""
    import ipaddress

    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_sockets(plans: list[DriverPlan], prefix: str, allow_remote: bool = False) -> None:
    """One clear error for a socket that i-PI could not open, or that would listen beyond
    this machine without `allow_remote`."""
    for plan in plans:
        if plan.mode == "inet" and not allow_remote and not is_loopback(plan.address):
            raise UserError(
                f"forcefield '{plan.name}' would listen on {plan.address}:{plan.port}, reachable from "
                "other machines: pass --allow-remote if drivers run elsewhere (anyone who can reach "
                "the port can then act as a driver)"
            )
        if plan.mode == "unix":
            path = prefix + plan.address
            if os.path.exists(path):
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                probe.settimeout(1.0)
                try:
                    probe.connect(path)
                except OSError:
                    raise UserError(
                        f"stale socket file {path} from an earlier run (nothing listens on it): "
                        f"remove it with `rm {path}` and run again"
                    ) from None
                finally:
                    probe.close()
                raise UserError(
                    f"socket {path} is in use by another running i-PI: give forcefield "
                    f"'{plan.name}' another <address>"
                )
        elif plan.mode == "inet":
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((plan.address, plan.port))
            except OSError as e:
                raise UserError(
                    f"cannot listen on {plan.address}:{plan.port} for forcefield '{plan.name}': "
                    f"{e.strerror} (is another run using this port?)"
                ) from None
            finally:
                probe.close()


class Drivers:
    """Local `ipi-mts serve` processes, watched and restarted by a thread."""

    def __init__(self, plans, connections, prefix, template, logdir: Path):
        self.plans = plans
        self.connections = connections
        self.prefix = prefix
        self.template = template
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts = {p.name: 0 for p in plans}
        self.failure: str | None = None
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="ipi-mts-drivers", daemon=True)

    def _log(self, plan) -> Path:
        return self.logdir / f"ipi-mts-serve-{plan.name}.log"

    def _start(self, plan):
        from .server.serve import default_threads

        threads = default_threads(len(self.plans))  # the machine's cores shared by the drivers
        cmd = plan.command(self.connections[plan.name], self.prefix, self.template, threads)
        cmd = [sys.executable, "-m", "ipi_mts.cli"] + cmd[1:]
        with open(self._log(plan), "a") as log:
            self.procs[plan.name] = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def start(self):
        for plan in self.plans:
            self._start(plan)
        self._watcher.start()

    def _last_line(self, plan) -> str:
        try:
            lines = self._log(plan).read_text().strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def _watch(self):
        from ipi.utils.softexit import softexit

        while not self._stop.wait(0.2):
            for plan in self.plans:
                code = self.procs[plan.name].poll()
                if code is None or code == 0 or self._stop.is_set() or softexit.triggered:
                    continue  # running, left cleanly (i-PI closed or said EXIT), or the run is ending
                if code == 2 or self.restarts[plan.name] >= RESTARTS_PER_DRIVER:
                    why = self._last_line(plan) or f"exit code {code}"
                    if code != 2:
                        why = f"died {self.restarts[plan.name] + 1} times, last: {why}"
                    self.failure = f"driver for forcefield '{plan.name}' stopped: {why}"
                    self._stop.set()
                    try:
                        softexit.trigger(status="bad", message=self.failure)
                    except SystemExit:
                        pass
                    return
                self.restarts[plan.name] += 1
                print(
                    f"ipi-mts run: driver for '{plan.name}' ended ({_describe(code)}); "
                    f"restarting it ({self.restarts[plan.name]}/{RESTARTS_PER_DRIVER})",
                    file=sys.stderr,
                )
                self._start(plan)

    def stop_watching(self):
        self._stop.set()

    def stop(self, timeout=10.0):
        """Wait for the drivers to leave (i-PI has closed its sockets), then end them."""
        self._stop.set()
        deadline = time.time() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _describe(code: int) -> str:
    if code < 0:
        import signal

        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class Progress:
    """An i-PI output object: called after every step, it shows progress and records the
    conserved energy for the summary."""

    def __init__(self, simulation, quiet: bool):
        from tqdm import tqdm

        self.sim = simulation
        self.system = simulation.syslist[0]
        self.dt_fs = float(self.system.motion.dt) / _femtosecond()
        self.first_step = simulation.step
        self.drift = DriftFit()  # conserved energy (Ha) against time (ps)
        self.walls: list[float] = []
        self.start = time.time()
        self.bar = tqdm(
            total=simulation.tsteps - simulation.step,
            unit="step",
            disable=quiet,
            file=sys.stderr,
            mininterval=1.0,
            dynamic_ncols=True,
        )

    def active(self):
        return True

    def write(self):
        step = self.sim.step + 1  # steps completed
        self.drift.add(step * self.dt_fs * 1e-3, float(self.system.ensemble.econs))
        done = step - self.first_step
        if done <= 0:
            return
        self.walls.append(time.time())
        wall = time.time() - self.start
        self.bar.n = done
        self.bar.set_postfix_str(
            f"t={step * self.dt_fs / 1000:.3f} ps, {_ns_per_day(done * self.dt_fs, wall):.3g} ns/day",
            refresh=False,
        )
        self.bar.update(0)

    def close(self):
        self.bar.close()

    def summary(self) -> dict:
        wall = time.time() - self.start
        steps = len(self.walls)  # one entry per completed step
        # steady state: from the end of the first step (drivers started and connected)
        ms_per_step = float("nan")
        if steps >= 2:
            ms_per_step = 1000.0 * (self.walls[-1] - self.walls[0]) / (steps - 1)
        beads = self.system.beads  # per atom of the conserved energy per bead, as i-PI's `conserved`
        drift = self.drift.slope * _ev_per_hartree() * 1000.0 / (beads.natoms * beads.nbeads)
        return {
            "steps": steps,
            "wall_s": wall,
            "ms_per_step": ms_per_step,
            "ns_per_day": _ns_per_day(self.dt_fs, ms_per_step / 1000.0),
            "drift_mev_per_atom_ps": drift,
        }


def _ns_per_day(simulated_fs: float, wall_s: float) -> float:
    return simulated_fs * 1e-6 / (wall_s / 86400.0) if wall_s > 0 else float("nan")


def _femtosecond():
    from . import units

    return units.FEMTOSECOND


def _ev_per_hartree():
    from . import units

    return units.EV_PER_HARTREE


def _connections(simulation, plan: DriverPlan) -> int:
    """One connection per bead (or per batch of beads) of the forcefield's largest use."""
    nbeads = 1
    for system in simulation.syslist:
        for component in system.forces.mforces:
            if component.ffield == plan.name:
                nbeads = max(nbeads, component.nbeads)
    return max(1, -(-nbeads // max(plan.batch_size, 1)))


def _write_template(simulation, directory: Path) -> str:
    """An xyz file of the species, since i-PI sends none to its drivers."""
    from .state import numbers_from_symbols, symbols

    names = simulation.syslist[0].beads.names
    path = directory / "species.xyz"
    lines = [str(len(names)), "species of the i-PI system (positions unused)"]
    lines += [f"{s} 0.0 0.0 0.0" for s in symbols(numbers_from_symbols(names))]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def print_driver_commands(plans, simulation=None, prefix="/tmp/ipi_", nbeads=1) -> None:
    for plan in plans:
        if plan.model is None:
            print(f"# forcefield '{plan.name}': no model in <parameters>; start your own driver")
            continue
        k = _connections(simulation, plan) if simulation is not None else max(1, -(-nbeads // max(plan.batch_size, 1)))
        where = "started by ipi-mts run" if plan.mode == "unix" else "start on the driver host"
        print(f"# forcefield '{plan.name}' ({plan.mode}, {where}):")
        print(shlex.join(plan.command(k, prefix, "SPECIES.xyz" if plan.mode == "inet" else None)))
    inet = [p for p in plans if p.mode == "inet" and p.model is not None]
    if inet:
        host = "127.0.0.1" if inet[0].address in ("localhost", "") else inet[0].address
        cmd = ["mpirun", "-n", "K", "ipi-mts", "serve", "--mpi", "--host", host, "--beads", str(nbeads),
               "--template", "SPECIES.xyz"]
        for p in inet:
            cmd += ["--forcefield", f"{p.port}={p.model}" + (f":{p.component}" if p.component != "full" else "")]
        print("# or all inet forcefields from one MPI job of K ranks (--ranks N1,N2,... to weight them):")
        print(shlex.join(cmd))


def _nbeads(root: ET.Element) -> int:
    init = root.find("./system/initialize")
    return int(init.get("nbeads", "1")) if init is not None else 1


def run_from_args(args) -> int:
    from . import ipi_patches, motion

    path = Path(args.input)
    root = load_xml(path)
    plans = driver_plans(root)
    prefix = root.get("sockets_prefix", "/tmp/ipi_") or "/tmp/ipi_"
    if args.print_drivers:
        print_driver_commands(plans, prefix=prefix, nbeads=_nbeads(root))
        return 0
    check_sockets(plans, prefix, args.allow_remote)
    # RESTART files with every digit of float64, so that a restart continues identically
    root.set("floatformat", root.get("floatformat", "%24.16e"))
    ipi_patches.apply()
    from ipi.utils.softexit import softexit

    def adjust(simulation):
        if args.steps is not None:
            simulation.tsteps = args.steps

    try:
        simulation = motion.load_simulation(  # our modes and PES registered, species given
            ET.tostring(root, encoding="unicode"),
            custom_verbosity=None if args.verbose else "quiet",
            post_init_hook=adjust,
        )
    except UserError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OSError, RuntimeError, NameError) as e:
        raise UserError(f"i-PI cannot use {path}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None

    ours = [p for p in plans if p.mode == "unix" and p.model is not None]
    others = [p for p in plans if p not in ours]
    if others:
        print("ipi-mts run: start these drivers yourself (i-PI is waiting for them):", file=sys.stderr)
        print_driver_commands(others, simulation, prefix, _nbeads(root))
    workdir = Path(tempfile.mkdtemp(prefix="ipi-mts-"))
    template = _write_template(simulation, workdir)
    drivers = Drivers(
        ours, {p.name: _connections(simulation, p) for p in ours}, prefix, template, Path.cwd()
    )
    progress = Progress(simulation, args.quiet)
    simulation.outputs.append(progress)
    drivers.start()
    try:
        simulation.run()
        interrupted = softexit.triggered  # a signal or an EXIT file between steps ends the loop quietly
    except SystemExit:  # ... and during a step, from the thread waiting for forces
        interrupted = True
    finally:
        progress.close()
        drivers.stop_watching()
        try:  # writes RESTART, closes i-PI's sockets (drivers leave); i-PI's chatter is dropped
            with contextlib.redirect_stdout(sys.stdout if args.verbose else io.StringIO()):
                softexit.cleanup(
                    status="bad" if drivers.failure else "success",
                    message=drivers.failure or " @ ipi-mts run: done.",
                )
        except SystemExit:
            pass
        drivers.stop()
    if drivers.failure:
        raise UserError(drivers.failure + " (RESTART holds the last good step)")
    s = progress.summary()
    status = "interrupted" if interrupted else "done"
    monitored = motion.summary(simulation) or {}
    drift = ("n/a (isokinetic: no conserved energy)" if monitored.get("placement") == "isokinetic"
             else f"{s['drift_mev_per_atom_ps']:+.3g} meV/atom/ps")
    print(
        f"ipi-mts run: {status}: {s['steps']} steps in {s['wall_s']:.1f} s, "
        f"{s['ms_per_step']:.3g} ms/step, {s['ns_per_day']:.3g} ns/day, conserved-energy drift {drift}"
        + (f", driver restarts {sum(drivers.restarts.values())}" if any(drivers.restarts.values()) else "")
    )
    line = motion.summary_line(simulation)
    if line:
        print("ipi-mts run: " + line)
    return 1 if interrupted else 0
