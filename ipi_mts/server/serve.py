"""`ipi-mts serve`: one process, K connections to one i-PI forcefield, one batched model call.

Design: a single thread multiplexes the K sockets with `select`. A round goes

1. *gather*: read whole messages from every readable socket and answer what needs no
   results at once (STATUS -> NEEDINIT/READY/HAVEDATA, INIT, POSDATA is stored, EXIT closes).
   A message whose answer needs results (GETFORCE, or STATUS while positions are held but
   not yet evaluated) parks its connection. While a connection is parked and other
   connections may still send positions, keep reading for up to `gather_window` seconds or
   until as many connections hold positions as held them together in recent rounds;
2. *evaluate*: every structure held on any connection (batch_size > 1 carries several per
   connection) goes into ONE evaluator call per atom count;
3. *answer* the parked messages (FORCEREADY + results, or HAVEDATA).

This serves both i-PI 3.3 flows: the default consolidated one (POSDATA and GETFORCE in one
write) and the legacy STATUS/READY/POSDATA/STATUS/HAVEDATA/GETFORCE one, where i-PI's worker
threads each wait for HAVEDATA. The window only costs time when fewer requests arrive than
the recent rounds had; with nbeads = K it ends as soon as all K hold positions.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from . import protocol as P


_EXIT_WHY = "i-PI sent EXIT"


def _stderr(message: str) -> None:
    print(f"ipi-mts serve: {message}", file=sys.stderr, flush=True)


@dataclass
class Stats:
    """What a serve session did."""

    connections: int = 0  # connections made
    structures: int = 0  # structures evaluated (batched padding included)
    evaluations: int = 0  # evaluator calls
    largest_batch: int = 0  # most structures in one evaluator call
    largest_round: int = 0  # most connections answered from one evaluation round
    exit_received: int = 0  # connections that i-PI ended with EXIT

    def summary(self) -> str:
        return (
            f"served {self.structures} structures in {self.evaluations} evaluator calls "
            f"(largest batch {self.largest_batch}, over up to {self.largest_round} connections)"
        )


class _Connection:
    """One socket to i-PI and where it stands in the protocol."""

    def __init__(self, sock: socket.socket, label: str):
        self.sock = sock
        self.label = label
        self.initialized = False
        self.batch_size = 1
        self.cells = None  # (B, 3, 3) bohr, held positions' cells
        self.positions = None  # (B, N, 3) bohr
        self.results = None  # (energies (B,), forces (B, N, 3), virials (B, 3, 3), extras)
        self.parked = None  # STATUS or GETFORCE header whose answer needs the results
        self.open = True

    @property
    def unevaluated(self) -> bool:
        return self.positions is not None and self.results is None

    def fileno(self) -> int:
        return self.sock.fileno()


class DriverPool:
    """The connections of one serve process and the round loop over them."""

    def __init__(
        self,
        evaluator,
        log=_stderr,
        gather_window: float = 0.05,
        message_timeout: float = 60.0,
        expected: int = 1,
        model: str | None = None,
        component: str | None = None,
    ):
        self.evaluator = evaluator
        self.log = log
        self.gather_window = gather_window
        self.message_timeout = message_timeout
        self.model = model
        self.component = component
        self.conns: list[_Connection] = []
        self.stats = Stats()
        self._initial_expected = max(1, expected)
        self._rounds = collections.deque(maxlen=4)  # connections answered per recent round
        self._last_init = None  # (batch size, parameters) last logged at INIT

    # ------------------------------------------------------------------ connections

    def add(self, sock: socket.socket, label: str) -> None:
        self.conns.append(_Connection(sock, label))
        self.stats.connections += 1

    @property
    def open_conns(self) -> list[_Connection]:
        return [c for c in self.conns if c.open]

    def _close(self, c: _Connection, why: str | None = None) -> None:
        if not c.open:
            return
        c.open = False
        c.parked = None
        try:
            c.sock.close()
        except OSError:
            pass
        left = len(self.open_conns)
        if why and (left == 0 or why != _EXIT_WHY):  # one line for an orderly EXIT of all K
            self.log(f"{c.label}: {why} ({left} connection{'s' if left != 1 else ''} left)")

    def close_all(self) -> None:
        for c in self.conns:
            if c.open:
                c.open = False
                try:
                    c.sock.close()
                except OSError:
                    pass

    # ------------------------------------------------------------------ the round loop

    def run(self, idle_timeout: float | None = None) -> Stats:
        """Serve until every connection is closed (EXIT or i-PI gone). `idle_timeout`, if
        given, bounds how long i-PI may stay silent (a UserError then)."""
        last = time.monotonic()
        try:
            while self.open_conns:
                if self.round(wait=1.0):
                    last = time.monotonic()
                elif idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    raise UserError(f"i-PI sent nothing for {idle_timeout:g} s (--idle-timeout): is it stopped or hung?")
        except BaseException:
            self.close_all()  # i-PI sees this driver go and can requeue its requests
            raise
        return self.stats

    def round(self, wait: float) -> bool:
        """One gather/evaluate/answer round; waits up to `wait` s for a first message.
        Returns whether anything was received."""
        got = self._gather(wait)
        parked = [c for c in self.open_conns if c.parked is not None]
        if parked:
            self._evaluate()
            for c in parked:
                if c.open:
                    self._answer_parked(c)
        return got

    def _expected(self) -> int:
        return max(self._rounds) if self._rounds else self._initial_expected

    def _gather(self, wait: float) -> bool:
        got = False
        deadline = None
        while True:
            conns = self.open_conns
            if not conns:
                return got
            listening = [c for c in conns if c.parked is None]
            if any(c.parked is not None for c in conns):
                holding = sum(1 for c in conns if c.unevaluated)
                may_send = [c for c in listening if c.positions is None]
                if not may_send or holding >= self._expected():
                    return got
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.gather_window
                timeout = deadline - now
                if timeout <= 0:
                    return got
            else:
                if got:
                    timeout = 0.0  # drain what is already there, then go on
                else:
                    timeout = wait
            try:
                readable, _, _ = select.select(listening, [], [], timeout)
            except (OSError, ValueError):  # a socket closed under us
                readable = [c for c in listening if _is_dead(c)]
                for c in readable:
                    self._close(c, "connection lost")
                continue
            if not readable:
                if not any(c.parked is not None for c in self.open_conns):
                    return got
                continue
            for c in readable:
                got = True
                self._read_message(c)

    def _read_message(self, c: _Connection) -> None:
        t = self.message_timeout
        try:
            head = P.recv_exact(c.sock, P.HDRLEN, t, "a message header")
            if head == P.STATUS:
                if not c.initialized:
                    self._send(c, P.NEEDINIT, "NEEDINIT")
                elif c.results is not None:
                    self._send(c, P.HAVEDATA, "HAVEDATA")
                elif c.positions is not None:
                    c.parked = P.STATUS  # HAVEDATA once evaluated
                else:
                    self._send(c, P.READY, "READY")
            elif head == P.POSDATA:
                c.cells, c.positions = P.recv_posdata_body(c.sock, c.batch_size, t)
                c.results = None
            elif head == P.GETFORCE:
                if c.results is not None:
                    self._send_forces(c)
                elif c.positions is not None:
                    c.parked = P.GETFORCE
                else:
                    raise P.ProtocolError(f"{c.label}: i-PI asked for forces before sending positions")
            elif head == P.INIT:
                rid, text = P.recv_init_body(c.sock, t)
                self._init(c, rid, text)
            elif head == P.EXIT:
                self.stats.exit_received += 1
                self._close(c, _EXIT_WHY)
            else:
                raise P.ProtocolError(
                    f"{c.label}: i-PI sent an unknown message {P.describe(head)}; is this an i-PI socket "
                    "(shm mode is not supported)?"
                )
        except P.Closed:
            self._close(c, "i-PI closed the connection")

    def _init(self, c: _Connection, rid: int, text: str) -> None:
        params = P.parse_init_string(text)
        for key, mine in (("model", self.model), ("component", self.component)):
            theirs = params.get(key)
            if mine is not None and theirs is not None and theirs != mine:
                raise UserError(
                    f"i-PI's forcefield asks for {key} {theirs!r} (its <parameters>) but this driver "
                    f"serves {mine!r}"
                )
        c.batch_size = P.batch_size_from(params)
        c.initialized = True
        c.cells = c.positions = c.results = None
        shown = {k: v for k, v in params.items() if k != "batch_size"}
        said = (c.batch_size, tuple(shown.items()))
        if said != self._last_init:  # not K times the same line
            self._last_init = said
            self.log(
                f"{c.label}: INIT request id {rid}, batch size {c.batch_size}"
                + (f", parameters {shown}" if shown else "")
            )

    def _send(self, c: _Connection, data: bytes, what: str) -> None:
        try:
            P.send_all(c.sock, data, self.message_timeout, what)
        except P.Closed:
            self._close(c, "i-PI closed the connection")

    def _send_forces(self, c: _Connection) -> None:
        energies, forces, virials, extras = c.results
        batched = c.batch_size > 1
        if not batched and energies.shape[0] != 1:
            raise P.ProtocolError(f"{c.label}: holds {energies.shape[0]} structures without batching")
        self._send(c, P.encode_forceready(energies, forces, virials, extras, batched), "FORCEREADY")
        c.cells = c.positions = c.results = None

    def _answer_parked(self, c: _Connection) -> None:
        what, c.parked = c.parked, None
        if what == P.GETFORCE:
            self._send_forces(c)
        else:
            self._send(c, P.HAVEDATA, "HAVEDATA")

    def _evaluate(self) -> None:
        todo = [c for c in self.open_conns if c.unevaluated]
        if not todo:
            return
        groups: dict[int, list[_Connection]] = {}
        for c in todo:
            groups.setdefault(c.positions.shape[1], []).append(c)
        for conns in groups.values():
            cells = np.concatenate([c.cells for c in conns])
            positions = np.concatenate([c.positions for c in conns])
            energies, forces, virials, extras = self.evaluator(cells, positions)
            start = 0
            for c in conns:
                stop = start + c.positions.shape[0]
                c.results = (
                    np.ascontiguousarray(energies[start:stop], dtype=np.float64),
                    np.ascontiguousarray(forces[start:stop], dtype=np.float64),
                    np.ascontiguousarray(virials[start:stop], dtype=np.float64),
                    list(extras[start:stop]),
                )
                start = stop
            self.stats.evaluations += 1
            self.stats.structures += positions.shape[0]
            self.stats.largest_batch = max(self.stats.largest_batch, positions.shape[0])
        # the gather window waits for as many connections as the last rounds had: a
        # smaller round is remembered too, and the larger ones age out of the deque
        self._rounds.append(len(todo))
        self.stats.largest_round = max(self.stats.largest_round, len(todo))


def _is_dead(c: _Connection) -> bool:
    try:
        return c.sock.fileno() < 0
    except OSError:
        return True


# ---------------------------------------------------------------------------- connecting


@dataclass
class Address:
    """Where i-PI listens: a UNIX socket file `path`, or TCP `host`:`port`."""

    path: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None

    @property
    def label(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


def connect(address: Address, timeout: float, service=None, log=None) -> socket.socket:
    """A socket connected to i-PI, retrying until `timeout` seconds have passed (i-PI may
    start after the driver). `service(seconds)` is called between attempts, so that
    connections already made keep answering i-PI; `log` hears once that we wait."""
    deadline = time.monotonic() + timeout
    reason = "not tried"
    told = False
    while True:
        if address.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = address.path
        else:
            try:
                infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise UserError(f"cannot resolve i-PI host {address.host!r}: {e.strerror}") from None
            family, kind, proto, _, target = infos[0]
            sock = socket.socket(family, kind, proto)
        left = deadline - time.monotonic()
        sock.settimeout(max(0.05, min(1.0, left)))
        try:
            sock.connect(target)
        except FileNotFoundError:
            reason = "no such socket file"
        except ConnectionRefusedError:
            reason = "connection refused"
        except (BlockingIOError, socket.timeout, InterruptedError):
            reason = "connection not accepted"
        except OSError as e:
            reason = e.strerror or str(e)
        else:
            sock.settimeout(None)
            if address.path is None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        sock.close()
        left = deadline - time.monotonic()
        if left <= 0:
            raise UserError(f"no i-PI listening at {address.label} ({reason}) after {timeout:g} s")
        if log is not None and not told:
            log(f"waiting for i-PI at {address.label} ({reason}), up to {timeout:g} s")
            told = True
        if service is not None:
            service(min(0.1, left))
        else:
            time.sleep(min(0.1, left))


def serve(
    evaluator,
    *,
    unix: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    prefix: str = "/tmp/ipi_",
    connections: int = 1,
    timeout: float = 60.0,
    log=_stderr,
    model: str | None = None,
    component: str | None = None,
    gather_window: float = 0.05,
    message_timeout: float = 60.0,
    idle_timeout: float | None = None,
) -> Stats:
    """Connect `connections` sockets to i-PI and serve `evaluator` (a `WireEvaluator` or any
    callable with its signature) until i-PI sends EXIT or closes them all.

    `model`/`component`, when given, are checked against the `<parameters>` that i-PI's
    forcefield sends with INIT. Raises UserError for a user's mistake (no i-PI, NaN
    positions, wrong model); the sockets are closed either way.
    """
    if (unix is None) == (port is None):
        raise UserError("give either a UNIX socket name or a TCP port")
    if connections < 1:
        raise UserError(f"--connections must be at least 1, got {connections}")
    if timeout < 0:
        raise UserError(f"--timeout must not be negative, got {timeout:g}")
    if idle_timeout is not None and idle_timeout <= 0:
        raise UserError(f"--idle-timeout must be positive, got {idle_timeout:g}")
    address = Address(path=prefix + unix) if unix is not None else Address(host=host, port=port)
    if address.path is not None and len(os.fsencode(address.path)) > 107:
        raise UserError(f"UNIX socket path {address.path!r} is longer than 107 bytes")
    pool = DriverPool(
        evaluator, log, gather_window, message_timeout, connections, model=model, component=component
    )

    def service(seconds):
        if pool.open_conns:
            pool.round(wait=seconds)
        else:
            time.sleep(seconds)

    try:
        for i in range(connections):
            sock = connect(address, timeout, service, log)
            label = address.label if connections == 1 else f"{address.label} #{i}"
            pool.add(sock, label)
            if i == 0 or i == connections - 1:
                log(f"connected to {address.label} ({i + 1}/{connections})")
            if i > 0 and not pool.open_conns:
                log("i-PI closed the earlier connections while connecting: stopping")
                return pool.stats
        stats = pool.run(idle_timeout)
    finally:
        pool.close_all()
    log(stats.summary())
    return stats


def default_threads(drivers: int = 1) -> int:
    """CPU threads for each of `drivers` local driver processes: the cores less one for i-PI.
    A driver with as many threads as cores fights i-PI for them (10x slower steps measured on
    2 cores with water-64: benchmarks/serving.py)."""
    return max(1, ((os.cpu_count() or 2) - 1) // max(drivers, 1))


def run_from_args(args) -> int:
    """`ipi-mts serve` with parsed arguments (see `ipi_mts.cli`)."""
    if args.mpi:
        from .mpi import serve_rank

        return serve_rank(args)
    if args.forcefield or args.ranks or args.beads:
        raise UserError("--forcefield, --ranks and --beads are for --mpi")
    if not args.model:
        raise UserError("give the potential to serve with --model")
    if args.unix is None and args.port is None:
        raise UserError("give where i-PI listens: --unix NAME or --port PORT (with --host)")

    from ..state import read_species
    from .evaluator import WireEvaluator

    import torch

    torch.set_num_threads(args.threads or default_threads())
    numbers = read_species(args.template) if args.template else None
    params = dict(args.param or [])
    evaluator = WireEvaluator.from_name(args.model, args.component, numbers, args.device, **params)
    serve(
        evaluator,
        unix=args.unix,
        host=args.host,
        port=args.port,
        prefix=args.prefix,
        connections=args.connections,
        timeout=args.timeout,
        idle_timeout=args.idle_timeout,
        model=args.model,
        component=args.component,
    )
    return 0
