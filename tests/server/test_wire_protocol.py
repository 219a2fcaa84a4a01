"""The driver side of the protocol against i-PI's own server-side code (`ipi.interfaces.sockets`)
over socket pairs in this process: framing, both message flows, batching, gathering."""

import select
import socket
import threading
import time

import numpy as np
import pytest
from ipi.engine.forcefields import ForceRequest
from ipi.interfaces import sockets as ipi_sockets

from ipi_mts.errors import UserError
from ipi_mts.server import protocol as P
from ipi_mts.server.serve import DriverPool

pytestmark = pytest.mark.timeout(30)

K_SPRING = 0.3  # Ha/bohr², for the numpy harmonic below


class CountingHarmonic:
    """E = ½k Σ q² in atomic units, with the WireEvaluator signature; records its calls."""

    def __init__(self):
        self.calls = []  # number of structures per call

    def __call__(self, cells, positions):
        positions = np.asarray(positions)
        if not np.isfinite(positions).all():
            raise UserError("i-PI sent non-finite (NaN or inf) positions or cell")
        self.calls.append(positions.shape[0])
        energies = 0.5 * K_SPRING * (positions**2).sum(axis=(1, 2))
        forces = -K_SPRING * positions
        virials = np.einsum("bni,bnj->bij", forces, positions)
        return energies, forces, virials, ['{"n": %d}' % len(p) for p in positions]


def expected(q):
    return 0.5 * K_SPRING * (q**2).sum(), -K_SPRING * q.reshape(-1)


def ipi_driver_pair(timeout=5.0):
    """(i-PI's server-side Driver, our end) on a UNIX socket pair."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(timeout)
    return ipi_sockets.Driver(theirs), ours, theirs


def request(rid, natoms, rng, pars=" model : harmonic , "):
    q = rng.normal(size=3 * natoms)
    h = np.diag(rng.uniform(10, 20, size=3))
    h[0, 1] = 0.5  # a tilted cell: h must arrive unchanged, vectors as columns
    return ForceRequest(
        id=rid, pos=q, active=np.arange(3 * natoms), cell=(h, np.linalg.inv(h)), pars=pars,
        offset=0.0, status="Queued", start=-1, result=None,
    )


class PoolThread:
    def __init__(self, evaluator, socks, **kw):
        kw.setdefault("log", lambda m: None)
        self.pool = DriverPool(evaluator, expected=len(socks), **kw)
        for i, s in enumerate(socks):
            self.pool.add(s, f"conn{i}")
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.pool.run(idle_timeout=20)
        except BaseException as e:  # surfaced by join()
            self.error = e

    def join(self, timeout=10):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "driver pool did not stop"
        return self.pool.stats


def test_headers_match_ipi():
    for name, data in ipi_sockets.MESSAGE.items():
        assert P.header(name) == data
        assert len(data) == P.HDRLEN
    assert P.FORCEREADY == ipi_sockets.MESSAGE["forceready"]


def test_init_string_as_ipi_builds_it():
    # FFSocket.queue gives " k : v , k : v , "; batched i-PI appends ", batch_size:N"
    text = " model : qtip4pf , cutoff : 9.0 , " + ", batch_size:4"
    params = P.parse_init_string(text)
    assert params == {"model": "qtip4pf", "cutoff": "9.0", "batch_size": "4"}
    assert P.batch_size_from(params) == 4
    assert P.batch_size_from(P.parse_init_string(" ")) == 1
    with pytest.raises(P.ProtocolError):
        P.batch_size_from({"batch_size": "many"})


@pytest.mark.parametrize("batch", [1, 3])
def test_forceready_read_by_ipi(batch):
    driver, ours, theirs = ipi_driver_pair()
    driver.batch_size = batch
    rng = np.random.default_rng(batch)
    e = rng.normal(size=batch)
    f = rng.normal(size=(batch, 5, 3))
    v = rng.normal(size=(batch, 3, 3))
    extras = ['{"dipole": [%d, 0, 0]}' % i for i in range(batch)]
    ours.sendall(P.encode_forceready(e, f, v, extras, batched=batch > 1))
    if batch == 1:
        got = [driver._recv_forces_bulk(5)]
    else:
        got = driver._recv_forces_bulk_batch(5, batch)
    for i, (mu, mf, mvir, extra) in enumerate(got):
        assert mu == e[i]
        np.testing.assert_array_equal(mf, f[i].reshape(-1))
        np.testing.assert_array_equal(mvir, v[i])
        assert extra["dipole"] == [i, 0, 0]
    ours.close()
    theirs.close()


@pytest.mark.parametrize("batch", [1, 2])
def test_posdata_from_ipi(batch):
    driver, ours, theirs = ipi_driver_pair()
    driver.batch_size = batch
    driver.status = ipi_sockets.Status.Up | ipi_sockets.Status.Ready
    rng = np.random.default_rng(7)
    reqs = [request(i, 4, rng) for i in range(batch)]
    if batch == 1:
        assert driver.dispatch_send(reqs[0])
    else:
        assert driver.dispatch_send_batch(reqs)
    assert P.recv_exact(ours, P.HDRLEN, 1.0) == P.POSDATA
    cells, positions = P.recv_posdata_body(ours, batch, 1.0)
    assert cells.shape == (batch, 3, 3) and positions.shape == (batch, 4, 3)
    for i, r in enumerate(reqs):
        np.testing.assert_array_equal(cells[i], r["cell"][0])
        np.testing.assert_array_equal(positions[i].reshape(-1), r["pos"])
    assert P.recv_exact(ours, P.HDRLEN, 1.0) == P.GETFORCE
    # and our own encoder writes what i-PI writes
    data = P.encode_posdata(
        np.stack([r["cell"][0] for r in reqs]), np.stack([r["pos"] for r in reqs]), batch > 1
    )
    assert P.recv_posdata_body(_replay(data[P.HDRLEN:]), batch, 1.0)[1].shape == (batch, 4, 3)
    ours.close()
    theirs.close()


def _replay(data):
    a, b = socket.socketpair()
    a.sendall(data)
    a.close()
    return b


def test_recv_exact_ends():
    a, b = socket.socketpair()
    a.close()
    with pytest.raises(P.Closed):
        P.recv_exact(b, 12, 1.0)
    a, b = socket.socketpair()
    a.sendall(b"POSD")
    a.close()
    with pytest.raises(P.ProtocolError, match="in the middle"):
        P.recv_exact(b, 12, 1.0)
    a, b = socket.socketpair()
    a.sendall(b"POSD")
    t = time.monotonic()
    with pytest.raises(P.ProtocolError, match="stopped sending"):
        P.recv_exact(b, 12, 0.2)
    assert time.monotonic() - t < 2.0
    a.close()


def _consolidated_step(drivers, reqs):
    """What i-PI's _pool_distribute_select does: send to every client, then collect."""
    for d, r in zip(drivers, reqs):
        assert d.dispatch_send(r)
    pending = list(zip(drivers, reqs))
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select([d for d, _ in pending], [], [], 0.5)
        for d, r in [p for p in pending if p[0] in readable]:
            assert d.dispatch_recv(r)
            pending.remove((d, r))
    assert not pending, "i-PI side did not get its forces"


def test_consolidated_flow_batches_connections():
    k = 4
    pairs = [ipi_driver_pair() for _ in range(k)]
    drivers = [p[0] for p in pairs]
    ev = CountingHarmonic()
    pool = PoolThread(ev, [p[1] for p in pairs], gather_window=2.0)
    for d in drivers:  # pool_update's handshake
        assert d.get_status() & ipi_sockets.Status.NeedsInit
    rng = np.random.default_rng(0)
    for step in range(3):
        reqs = [request(i, 3, rng) for i in range(k)]
        _consolidated_step(drivers, reqs)
        for r in reqs:
            e, f = expected(r["pos"])
            assert r["status"] == "Done"
            assert r["result"][0] == pytest.approx(e, rel=1e-14)
            np.testing.assert_allclose(r["result"][1], f, rtol=1e-14)
            assert r["result"][3]["n"] == 3
        # after FORCEREADY, i-PI probed STATUS and got READY
        assert all(d.status & ipi_sockets.Status.Ready for d in drivers)
    for d in drivers:
        d.shutdown()
    stats = pool.join()
    assert pool.error is None
    assert ev.calls == [k, k, k]  # every step: the 4 beads in ONE evaluator call
    assert stats.exit_received == k


def test_legacy_flow_with_threads():
    """consolidate_messages=false: i-PI's worker threads run STATUS/READY/POSDATA/STATUS/
    HAVEDATA/GETFORCE concurrently; HAVEDATA needs the results, which come batched."""
    k = 3
    pairs = [ipi_driver_pair() for _ in range(k)]
    drivers = [p[0] for p in pairs]
    ev = CountingHarmonic()
    pool = PoolThread(ev, [p[1] for p in pairs], gather_window=2.0)
    rng = np.random.default_rng(1)
    for step in range(2):
        reqs = [request(i, 2, rng) for i in range(k)]
        threads = [threading.Thread(target=d.dispatch, args=(r,)) for d, r in zip(drivers, reqs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        for r in reqs:
            assert r["status"] == "Done"
            e, f = expected(r["pos"])
            assert r["result"][0] == pytest.approx(e, rel=1e-14)
            np.testing.assert_allclose(r["result"][1], f, rtol=1e-14)
    for d in drivers:
        d.shutdown()
    pool.join()
    assert pool.error is None
    assert ev.calls == [k, k]


def test_batched_layout_and_padding():
    """<batch_size>3 with two connections: i-PI pads a short batch with copies of the last
    request; everything held is evaluated together."""
    pairs = [ipi_driver_pair() for _ in range(2)]
    drivers = [p[0] for p in pairs]
    for d in drivers:
        d.batch_size = 3
    ev = CountingHarmonic()
    pool = PoolThread(ev, [p[1] for p in pairs], gather_window=2.0)
    rng = np.random.default_rng(2)
    reqs = [request(i, 5, rng) for i in range(5)]
    batches = [reqs[:3], reqs[3:]]  # the second is padded to 3 by i-PI
    for d, b in zip(drivers, batches):
        assert d.dispatch_send_batch(b)
    for d, b in zip(drivers, batches):
        assert d.dispatch_recv_batch(b)
    for r in reqs:
        e, f = expected(r["pos"])
        assert r["result"][0] == pytest.approx(e, rel=1e-14)
        np.testing.assert_allclose(r["result"][1], f, rtol=1e-14)
    for d in drivers:
        d.shutdown()
    pool.join()
    assert pool.error is None
    assert ev.calls == [6]


def test_fewer_requests_than_connections_learns_the_round():
    """4 connections, 2 beads: the first round waits for the gather window, later rounds
    answer as soon as the 2 are in."""
    pairs = [ipi_driver_pair() for _ in range(4)]
    drivers = [p[0] for p in pairs]
    ev = CountingHarmonic()
    pool = PoolThread(ev, [p[1] for p in pairs], gather_window=0.3)
    rng = np.random.default_rng(3)
    times = []
    for step in range(4):
        t = time.monotonic()
        _consolidated_step(drivers[:2], [request(i, 2, rng) for i in range(2)])
        times.append(time.monotonic() - t)
    for d in drivers:
        d.shutdown()
    pool.join()
    assert ev.calls == [2, 2, 2, 2]
    assert times[0] >= 0.25
    assert max(times[1:]) < 0.2


def test_user_error_in_evaluator_stops_the_pool():
    driver, ours, theirs = ipi_driver_pair()
    ev = CountingHarmonic()
    pool = PoolThread(ev, [ours])
    r = request(0, 2, np.random.default_rng(4))
    r["pos"][:] = np.nan
    assert driver.dispatch_send(r)
    pool.join()
    assert isinstance(pool.error, UserError)
    assert "non-finite" in str(pool.error)
    assert ours.fileno() == -1  # closed, so i-PI sees the driver go
    theirs.close()


def test_init_model_mismatch_is_a_user_error():
    driver, ours, theirs = ipi_driver_pair()
    pool = PoolThread(CountingHarmonic(), [ours], model="qtip4pf")
    r = request(0, 2, np.random.default_rng(5), pars=" model : lj , ")
    driver.dispatch_send(r)
    pool.join()
    assert isinstance(pool.error, UserError)
    assert "'lj'" in str(pool.error) and "'qtip4pf'" in str(pool.error)
    theirs.close()


def test_unknown_header_is_a_protocol_error():
    ours, theirs = socket.socketpair()
    pool = PoolThread(CountingHarmonic(), [ours])
    theirs.sendall(b"HELLOTHERE!!")
    pool.join()
    assert isinstance(pool.error, P.ProtocolError)
    assert "HELLOTHERE" in str(pool.error)
    theirs.close()
