"""Fixes applied to the pinned i-PI (3.3.1) at launch, in memory, without touching its files.

- Dead driver in the consolidated message flow: when a client dies while computing,
  `recv_into` raises ConnectionResetError (or another OSError) in `_recv_forces_bulk`, where
  only `socket.timeout` is caught; the forcefield's polling thread dies and i-PI waits for
  ever. Turned into i-PI's own `Disconnected`, the request is put back on the queue and the
  next client (the launcher restarts the driver) computes it again.
"""

from __future__ import annotations

import functools


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


def apply() -> None:
    """Apply every fix once (idempotent)."""
    from ipi.interfaces import sockets

    for cls in (sockets.Driver, sockets.SHMDriver):
        for name in ("_recv_forces_bulk", "_recv_forces_bulk_batch"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "__ipi_mts_patch__", False):
                setattr(cls, name, _disconnect_on_oserror(method))
