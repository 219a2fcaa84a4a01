"""`ipi-mts serve` on bad input: one line on stderr, exit code 2, no traceback, no hang."""

import os
import socket
import time

import numpy as np
import pytest
from ipi.engine.forcefields import ForceRequest
from ipi.interfaces import sockets as ipi_sockets

from ipi_mts.testing_ipi import (
    DEFAULT_PREFIX,
    IPIProcess,
    Process,
    ffsocket_xml,
    free_tcp_port,
    serve_command,
    simulation_xml,
    unique_address,
)

pytestmark = pytest.mark.timeout(60)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


def run_serve(tmp_path, *args, timeout=30):
    with Process(serve_command(*args), tmp_path, "serve") as p:
        t = time.monotonic()
        rc = p.wait(timeout)
        return rc, p.stderr(), time.monotonic() - t


def test_unknown_model(tmp_path):
    rc, err, _ = run_serve(tmp_path, "no-such-model", "--unix", unique_address())
    assert rc == 2
    line = one_error_line(err)
    assert "unknown model 'no-such-model'" in line and "qtip4pf" in line


def test_missing_template(tmp_path):
    rc, err, _ = run_serve(tmp_path, "qtip4pf", "--unix", unique_address(), "--template", tmp_path / "nope.xyz")
    assert rc == 2
    assert "nope.xyz" in one_error_line(err)


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_nobody_listening(tmp_path, transport):
    """Retries until --timeout, then one line naming the address and the reason."""
    if transport == "unix":
        address = unique_address("none")
        where, label, reason = ["--unix", address], DEFAULT_PREFIX + address, "no such socket file"
    else:
        port = free_tcp_port()
        where, label, reason = ["--port", port], f"127.0.0.1:{port}", "connection refused"
    rc, err, elapsed = run_serve(tmp_path, "qtip4pf", *where, "--timeout", "1.5")
    assert rc == 2
    line = one_error_line(err)
    assert f"no i-PI listening at {label} ({reason}) after 1.5 s" in line
    assert "waiting for i-PI" in err
    assert elapsed < 1.5 + 15  # the retry stops at --timeout (plus interpreter start-up)


def test_stale_socket_file_is_refused(tmp_path):
    address = unique_address("stale")
    path = DEFAULT_PREFIX + address
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a file that nobody listens on
    stale.close()
    try:
        rc, err, _ = run_serve(tmp_path, "qtip4pf", "--unix", address, "--timeout", "0.5")
    finally:
        os.unlink(path)
    assert rc == 2
    assert "(connection refused) after 0.5 s" in one_error_line(err)


class FakeIPI:
    """A listening UNIX socket whose accepted clients are driven by i-PI's own server-side
    `Driver` class, so a test can send what a real i-PI would not (NaN positions)."""

    def __init__(self):
        self.address = unique_address("fake")
        self.path = DEFAULT_PREFIX + self.address
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(4)
        self.server.settimeout(30)

    def accept(self):
        client, _ = self.server.accept()
        client.settimeout(5.0)
        return ipi_sockets.Driver(client)

    def close(self):
        self.server.close()
        os.unlink(self.path)


def _request(q):
    h = np.eye(3) * 20.0
    return ForceRequest(
        id=0, pos=q.reshape(-1), active=np.arange(q.size), cell=(h, np.linalg.inv(h)),
        pars=" ", offset=0.0, status="Queued", start=-1, result=None,
    )


def test_nan_positions(tmp_path):
    fake = FakeIPI()
    try:
        with Process(serve_command("qtip4pf", "--unix", fake.address, "--timeout", 30), tmp_path, "serve") as p:
            driver = fake.accept()
            assert driver.get_status() & ipi_sockets.Status.NeedsInit
            q = np.full((3, 3), np.nan)
            assert driver.dispatch_send(_request(q))
            rc = p.wait(30)
            err = p.stderr()
            # the driver closed its end: i-PI's side sees the disconnection
            assert driver.recv(12) == b""
    finally:
        fake.close()
    assert rc == 2
    assert "non-finite (NaN or inf) positions" in one_error_line(err)


def test_ipi_closing_without_exit_ends_cleanly(tmp_path):
    fake = FakeIPI()
    try:
        with Process(serve_command("qtip4pf", "--unix", fake.address, "--timeout", 30), tmp_path, "serve") as p:
            driver = fake.accept()
            assert driver.get_status() & ipi_sockets.Status.NeedsInit
            driver.close()
            rc = p.wait(30)
            err = p.stderr()
    finally:
        fake.close()
    assert rc == 0, err
    assert "i-PI closed the connection" in err
    assert "Traceback" not in err


def test_ipi_gone_silent_ends_after_the_idle_timeout(tmp_path):
    """An i-PI that keeps the connection open but sends nothing (stopped, hung) ends a driver
    given --idle-timeout with one line and exit code 2, instead of a wait without end."""
    fake = FakeIPI()
    try:
        command = serve_command("qtip4pf", "--unix", fake.address, "--timeout", 30, "--idle-timeout", 2)
        with Process(command, tmp_path, "serve") as p:
            driver = fake.accept()
            assert driver.get_status() & ipi_sockets.Status.NeedsInit
            t = time.monotonic()
            rc = p.wait(30)
            waited = time.monotonic() - t
            err = p.stderr()
            assert driver.recv(12) == b""  # the driver closed its end
    finally:
        fake.close()
    assert rc == 2 and 2.0 <= waited < 15.0, (rc, waited)
    assert "i-PI sent nothing for 2 s" in one_error_line(err)


def test_model_mismatch_with_ipi_parameters(tmp_path):
    """i-PI's forcefield names another model in <parameters>: refuse at INIT."""
    address = unique_address("mm")
    (tmp_path / "init.xyz").write_text("3\n# CELL(abcABC): 10 10 10 90 90 90\nO 0 0 0\nH 1 0 0\nH 0 1 0\n")
    xml = simulation_xml(ffsocket_xml("ff", address, parameters="{model: lj}"), steps=1)
    with IPIProcess(tmp_path, xml, socket=address) as ipi:
        ipi.wait_listening(30)
        with Process(serve_command("qtip4pf", "--unix", address, "--timeout", 30), tmp_path, "serve") as p:
            rc = p.wait(30)
            err = p.stderr()
    assert rc == 2
    line = one_error_line(err)
    assert "asks for model 'lj'" in line and "serves 'qtip4pf'" in line


@pytest.mark.parametrize(
    "args, words",
    [
        (["--unix", "x"], "--model"),
        (["--model", "qtip4pf"], "--unix NAME or --port"),
        (["--model", "qtip4pf", "--port", "1", "--beads", "8"], "are for --mpi"),
        (["--model", "qtip4pf", "--port", "1", "--idle-timeout", "0"], "--idle-timeout must be positive"),
    ],
)
def test_missing_or_misplaced_arguments(tmp_path, args, words):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ipi_mts.cli", "serve", *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert words in one_error_line(result.stderr)
