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
"""

from __future__ import annotations

import functools
import os
import sys


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


def apply() -> None:
    """Apply every fix once (idempotent)."""
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
