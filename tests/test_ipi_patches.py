"""The fixes that ipi-mts applies to i-PI at launch (`ipi_mts.ipi_patches`), on i-PI's own
classes."""

import threading
import time

import numpy as np
import pytest
from ipi.engine.atoms import Atoms
from ipi.engine.cell import Cell
from ipi.engine.forcefields import ForceField

from ipi_mts import ipi_patches


def _started_forcefield():
    ipi_patches.apply()
    ff = ForceField(latency=1e-4, name="patched", threaded=True)
    ff.start()
    return ff


def _queue(ff):
    atoms = Atoms(2)
    atoms.q = np.arange(6.0)
    return ff.queue(atoms, Cell(np.eye(3) * 10.0))


def test_idle_polling_thread_sleeps():
    """An idle forcefield's polling thread costs no CPU (i-PI's own wakes every 1e-4 s)."""
    ff = _started_forcefield()
    try:
        time.sleep(0.1)
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(0.5)
        busy = (time.process_time() - cpu) / (time.perf_counter() - wall)
    finally:
        ff.stop()
    assert busy < 0.02, f"an idle forcefield kept {busy:.0%} of a core busy"


def test_queued_requests_are_served_and_the_thread_ends_on_stop():
    ff = _started_forcefield()
    try:
        for _ in range(3):
            time.sleep(0.1)  # asleep on the wake-up event
            request = _queue(ff)
            assert request._event_done.wait(1.0), "a request queued to an idle forcefield was not polled"
            assert request["status"] == "Done"
            ff.release(request)
    finally:
        ff.stop()
    ff._thread.join(timeout=1.0)
    assert not ff._thread.is_alive(), "the polling thread did not end after stop()"


def test_forcefields_with_their_own_queue_keep_ipis_loop():
    from ipi.engine.forcefields import FFCommittee

    ipi_patches.apply()
    assert FFCommittee.queue is not ForceField.queue
    assert ForceField._poll_loop.__ipi_mts_patch__ and ForceField.queue.__ipi_mts_patch__
    ipi_patches.apply()  # idempotent: no wrapper around the wrapper
    assert ForceField.queue.__wrapped__.__name__ == "queue"
    assert not getattr(ForceField.queue.__wrapped__, "__ipi_mts_patch__", False)


@pytest.fixture(autouse=True)
def _no_leftover_threads():
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=1.0)
