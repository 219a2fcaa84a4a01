"""Fixes applied to the pinned i-PI (3.3.1) at launch, in memory, without touching its files.

- Dead driver in the consolidated message flow: when a client dies while computing,
  `recv_into` raises ConnectionResetError (or another OSError) in `_recv_forces_bulk`, where
  only `socket.timeout` is caught; the forcefield's polling thread dies and i-PI waits for
  ever. Turned into i-PI's own `Disconnected`, the request is put back on the queue and the
  next client (the launcher restarts the driver) computes it again.
- Output whose reader has gone away (`ipi-mts run | tee log` stopped by Ctrl-C, a benchmark
  that was stopped): i-PI's soft exit prints before it marks itself triggered, so the
  BrokenPipeError kills the soft-exit thread, RESTART is never written and the step waits
  for ever. stdout and stderr drop what they cannot deliver instead (`PipeSafe`).
- A forcefield's polling thread wakes every `latency` (1e-4 s) even when it has nothing to
  poll, and each wake-up takes the GIL from whatever computes in i-PI's process. With the fast
  force of MTS in that process (`<ffdirect>`), the slow socket's idle thread made every fast
  evaluation of water-216 take 8.2 ms instead of 5.4, and the step 1.18x as long
  (benchmarks/polling_thread.py). The thread now sleeps until a request is queued
  (`_poll_loop`), and polls at `latency` while any is pending, as before.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time

IDLE_CHECK_S = 0.05  # an idle polling thread still looks at its exit flag this often


def _disconnect_on_oserror(method):
    from ipi.interfaces.sockets import Disconnected

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Disconnected:
            raise
        except OSError as e:  # timeouts are retried inside; anything left is a dead peer
            raise Disconnected() from e

    wrapped.__ipi_mts_patch__ = True
    return wrapped


class PipeSafe:
    """A text stream that, once its pipe is broken, sends everything to /dev/null."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.stream.fileno())  # the buffered rest goes there too
        finally:
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _wake(ff) -> threading.Event:
    """The event that `queue` sets when `ff` gets a request (made on first use)."""
    return ff.__dict__.setdefault("_ipi_mts_wake", threading.Event())


def _queue_and_wake(queue):
    @functools.wraps(queue)
    def wrapped(self, *args, **kwargs):
        request = queue(self, *args, **kwargs)
        _wake(self).set()
        return request

    wrapped.__ipi_mts_patch__ = True
    return wrapped


def _event_driven_poll_loop(poll_loop):
    """i-PI's loop (sleep `latency`, poll if there are requests), but asleep on the wake-up
    event while there are none; forcefields whose own `queue` might bypass the base class's
    keep i-PI's loop."""

    @functools.wraps(poll_loop)
    def wrapped(self):
        from ipi.engine.forcefields import ForceField

        if type(self).queue is not ForceField.queue:
            return poll_loop(self)
        wake = _wake(self)
        while self._doloop[0]:
            wake.clear()
            if self.requests:
                time.sleep(self.latency)
                if self.requests:
                    self.poll()
            else:  # wakes at once on a new request; on exit (softexit joins) within IDLE_CHECK_S
                wake.wait(IDLE_CHECK_S)

    wrapped.__ipi_mts_patch__ = True
    return wrapped


def apply() -> None:
    """Apply every fix once (idempotent)."""
    from ipi.engine.forcefields import ForceField
    from ipi.interfaces import sockets

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, PipeSafe):
            setattr(sys, name, PipeSafe(stream))

    for cls in (sockets.Driver, sockets.SHMDriver):
        for name in ("_recv_forces_bulk", "_recv_forces_bulk_batch"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "__ipi_mts_patch__", False):
                setattr(cls, name, _disconnect_on_oserror(method))

    for name, patch in (("queue", _queue_and_wake), ("_poll_loop", _event_driven_poll_loop)):
        method = ForceField.__dict__[name]
        if not getattr(method, "__ipi_mts_patch__", False):
            setattr(ForceField, name, patch(method))
