"""`mpirun -n K ipi-mts serve --mpi`: K ranks serving the forcefields of one i-PI run over TCP.

Every rank reads the same mapping from its command line: `--forcefield PORT=MODEL[:COMPONENT]`,
once per i-PI `<ffsocket mode='inet'>`, and `--ranks N1,N2,...` (how many ranks each
forcefield gets, in order; default as even as possible). Rank r takes the forcefield its
place in that list gives it. Its device is the GPU of its node-local rank (cuda:local_rank
mod the node's GPUs) where CUDA is present, otherwise the CPU, whose cores the node's ranks
share. `--beads P` spreads P connections over a forcefield's ranks, so that the P beads of
a path-integral run are evaluated at once, batched within each rank.

A rank does not serve in its own process: it supervises a worker `ipi-mts serve` (no MPI)
and starts a new one when it dies (a crash, an out-of-memory kill), so one bad process does
not bring down mpirun and the other ranks; i-PI (with `ipi-mts run`'s fix for a lost client)
sends the lost request again. The rank ends when its worker ends cleanly (i-PI sent EXIT or
closed), and with the worker's message when the worker reports a user error.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

from ..errors import UserError

RESTARTS_PER_RANK = 10
COMPONENTS = ("full", "fast", "slow")
_NO_IPI = "no i-PI listening"  # the worker's message when nothing accepts its connection


@dataclass
class Forcefield:
    """One i-PI forcefield: where it listens and what serves it."""

    port: int
    model: str
    component: str = "full"

    @classmethod
    def parse(cls, text: str) -> "Forcefield":
        port, eq, model = text.partition("=")
        component = "full"
        head, _, tail = model.rpartition(":")
        if head and tail in COMPONENTS:  # a model name may hold colons itself (ase:EMT)
            model, component = head, tail
        if not eq or not port.strip().isdigit() or not model:
            raise UserError(f"--forcefield {text!r}: expected PORT=MODEL or PORT=MODEL:COMPONENT "
                            f"(COMPONENT one of {', '.join(COMPONENTS)})")
        return cls(int(port), model, component)

    @property
    def label(self) -> str:
        return f"{self.model}" + (f" ({self.component})" if self.component != "full" else "") + f" on port {self.port}"


def ranks_per_forcefield(n_forcefields: int, size: int, ranks: str | None) -> list[int]:
    """How many of the `size` ranks serve each forcefield."""
    if ranks:
        try:
            counts = [int(x) for x in ranks.split(",")]
        except ValueError:
            raise UserError(f"--ranks {ranks!r}: expected comma-separated integers, e.g. 1,3") from None
        if len(counts) != n_forcefields or min(counts) < 1:
            raise UserError(f"--ranks {ranks!r}: give one count of at least 1 per --forcefield ({n_forcefields})")
        if sum(counts) != size:
            raise UserError(f"--ranks {ranks!r} adds up to {sum(counts)} ranks, but mpirun started {size}")
        return counts
    if size < n_forcefields:
        raise UserError(f"{n_forcefields} forcefields need at least {n_forcefields} MPI ranks; mpirun started {size}")
    return [size // n_forcefields + (i < size % n_forcefields) for i in range(n_forcefields)]


def assignment(forcefields: list[Forcefield], size: int, rank: int, ranks: str | None = None,
               beads: int | None = None, connections: int = 1) -> tuple[Forcefield, int, int]:
    """(forcefield, index of this rank among the forcefield's ranks, connections) of `rank`."""
    counts = ranks_per_forcefield(len(forcefields), size, ranks)
    start = 0
    for ff, n in zip(forcefields, counts):
        if rank < start + n:
            j = rank - start
            k = connections if beads is None else beads // n + (j < beads % n)
            return ff, j, k
        start += n
    raise AssertionError("unreachable: the counts add up to size")


def rank_device(local_rank: int, requested: str | None) -> str:
    """The device of a rank: the one asked for, else the GPU of its node-local rank, else CPU."""
    if requested not in (None, "", "auto"):
        return requested
    import torch

    if torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return "cpu"


class Worker:
    """One `ipi-mts serve` process of a rank; its output is passed on, the last line kept."""

    def __init__(self, cmd: list[str], prefix: str):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.prefix = prefix
        self.last = ""
        self._reader = threading.Thread(target=self._forward, daemon=True)
        self._reader.start()

    def _forward(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line:
                self.last = line
                print(f"{self.prefix}{line}", file=sys.stderr, flush=True)

    def wait(self) -> int:
        code = self.proc.wait()
        self._reader.join(timeout=5.0)
        return code


def serve_rank(args) -> int:
    """The body of one rank of `ipi-mts serve --mpi` (see the module docstring)."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError("--mpi needs mpi4py and an MPI runtime: pip install 'ipi-mts[mpi]'") from None
    from .serve import default_threads

    world = MPI.COMM_WORLD
    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    rank, size, local_rank, local_size = world.rank, world.size, node.rank, node.size
    node.Free()
    if not args.forcefield:
        raise UserError("--mpi needs at least one --forcefield PORT=MODEL[:COMPONENT]")
    forcefields = [Forcefield.parse(t) for t in args.forcefield]
    ff, j, k = assignment(forcefields, size, rank, args.ranks, args.beads, args.connections)
    tag = f"rank {rank}/{size}: "

    def say(text):
        print(f"ipi-mts serve: {tag}{text}", file=sys.stderr, flush=True)

    if k < 1:
        say(f"{ff.label} has more ranks than beads: nothing to serve")
        return 0
    device = rank_device(local_rank, args.device)
    threads = args.threads or (default_threads(local_size) if device == "cpu" else 1)
    cmd = [sys.executable, "-m", "ipi_mts.cli", "serve", "--model", ff.model, "--component", ff.component,
           "--host", args.host, "--port", str(ff.port), "--connections", str(k), "--device", device,
           "--threads", str(threads)]
    if args.template:
        cmd += ["--template", args.template]
    if args.idle_timeout is not None:
        cmd += ["--idle-timeout", str(args.idle_timeout)]
    for key, value in args.param or []:
        cmd += ["--param", f"{key}={value}"]

    worker = None

    def stop(signum, frame):  # mpirun ends the job: end the worker with it
        if worker is not None and worker.proc.poll() is None:
            worker.proc.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts = 0
    while True:  # a replacement connects at once to a running i-PI: 10 s are plenty
        timeout = args.timeout if restarts == 0 else min(args.timeout, 10.0)
        worker = Worker(cmd + ["--timeout", str(timeout)], tag)
        say(f"{ff.label}, {k} connection{'s' if k != 1 else ''}, {device}"
            + (f" ({threads} threads)" if device == "cpu" else "") + f", worker pid {worker.proc.pid}")
        code = worker.wait()
        if code == 0:
            return 0
        if code == 2:
            if restarts and _NO_IPI in worker.last:
                say("i-PI stopped listening while the worker was replaced: the run is over")
                return 0
            return 2  # the worker's one-line error is already out
        if restarts >= RESTARTS_PER_RANK:
            say(f"worker died {restarts + 1} times, giving up")
            return 1
        restarts += 1
        why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        say(f"worker ended ({why}); starting a new one ({restarts}/{RESTARTS_PER_RANK})")
