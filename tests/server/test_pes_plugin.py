"""ipi_mts.server.pes, the i-PI PES of ipi-mts models: as the plugin file
drivers/ipi_mts_pes.py through i-PI's own loader, through `i-pi-py_driver -m custom` and
inside i-PI as `<ffdirect>`; and registered as `<pes>ipi_mts</pes>` under `ipi-mts run`. It
serves the same trajectory as `ipi-mts serve`."""

from pathlib import Path

import numpy as np
import pytest
from ipi.pes import load_pes, scan_pes_file

from ipi_mts.testing_ipi import (
    RunOutput,
    assert_matches_direct,
    ffdirect_xml,
    ffsocket_xml,
    py_driver_command,
    run_ipi_with_driver,
    serve_command,
    simulation_xml,
    unique_address,
)

PES = Path(__file__).resolve().parents[2] / "drivers" / "ipi_mts_pes.py"

pytestmark = pytest.mark.timeout(90)


def _plugin_class():
    return load_pes("custom", str(PES))


def test_plugin_declares_itself():
    assert scan_pes_file(str(PES)) == ("IpiMtsDriver", "ipi_mts")
    from ipi.pes.dummy import Dummy_driver

    assert issubclass(_plugin_class(), Dummy_driver)


def test_batched_compute_is_one_evaluator_call(argon):
    cls = _plugin_class()
    pes = cls(verbosity=True, **argon.plugin_kwargs())  # <ffdirect> adds `verbosity`
    calls = []
    inner = pes.evaluator

    def counting(cells, positions):
        calls.append(len(positions))
        return inner(cells, positions)

    pes.evaluator = counting
    rng = np.random.default_rng(0)
    h, q = argon.structure()
    cells = [h.copy() for _ in range(3)]
    positions = [q + rng.normal(scale=0.05, size=q.shape) for _ in range(3)]
    batch = pes(cells, positions)
    assert calls == [3]
    assert len(batch) == 3
    for h, q, (e, f, v, extra) in zip(cells, positions, batch):
        e1, f1, v1, extra1 = pes(h, q)  # one structure, as i-pi-py_driver calls it
        assert isinstance(e1, float) and f1.shape == q.shape and v1.shape == (3, 3)
        assert f1.dtype == np.float64 and f1.flags.c_contiguous
        assert e == pytest.approx(e1, rel=1e-12)
        np.testing.assert_allclose(f, f1, rtol=1e-10, atol=1e-14)
        assert extra1.isascii()
    # the model's name can also come as the first positional value (-o harmonic,...)
    kwargs = argon.plugin_kwargs()
    e2, f2, _, _ = cls(kwargs.pop("model"), **kwargs)(cells[0], positions[0])
    np.testing.assert_array_equal(f2, inner(np.array(cells[:1]), np.array(positions[:1]))[1][0])


def test_bad_model_is_one_line(tmp_path):
    from ipi_mts.testing_ipi import Process

    cmd = py_driver_command("-m", "custom", "-P", PES, "-o", "model=no-such-model", "-u", "-a", "x")
    with Process(cmd, tmp_path, "pydriver") as p:
        rc = p.wait(30)
        err = p.stderr()
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "ipi_mts PES: error: unknown model 'no-such-model'" in lines[0]


def _serve_run(workdir, system, nbeads, steps, connections):
    address = unique_address("sv")
    xml = simulation_xml(ffsocket_xml("ff", address), init=system.init, nbeads=nbeads, steps=steps)
    cmd = serve_command(system.model, "--unix", address, "--connections", connections, *system.serve_args())
    rc_ipi, rc_driver, err = run_ipi_with_driver(workdir, xml, cmd, socket=address)
    assert (rc_ipi, rc_driver) == (0, 0), err
    return RunOutput(workdir)


def _assert_same_run(a: RunOutput, b: RunOutput):
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.forces, b.forces)
    np.testing.assert_array_equal(a.properties, b.properties)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_py_driver_equals_serve(tmp_path, argon, batch_size):
    """i-pi-py_driver -m custom -P drivers/ipi_mts_pes.py -o model=... -u -a ADDRESS, plain
    and with i-PI's batched protocol, gives the trajectory `ipi-mts serve` gives."""
    nbeads = 2
    address = unique_address("pd")
    xml = simulation_xml(
        ffsocket_xml("ff", address, batch_size=batch_size), init=argon.init, nbeads=nbeads, steps=3
    )
    cmd = py_driver_command("-m", "custom", "-P", PES, "-o", argon.plugin_option(), "-u", "-a", address)
    rc_ipi, rc_driver, err = run_ipi_with_driver(tmp_path / "plugin", xml, cmd, socket=address)
    assert (rc_ipi, rc_driver) == (0, 0), err
    plugin = RunOutput(tmp_path / "plugin")
    assert_matches_direct(plugin, argon.evaluator())
    served = _serve_run(tmp_path / "serve", argon, nbeads, 3, connections=nbeads // batch_size)
    _assert_same_run(plugin, served)


def test_ffdirect_equals_serve(tmp_path, argon):
    """<ffdirect><pes>custom</pes><pes_path>drivers/ipi_mts_pes.py</pes_path>, with two beads
    batched into one call, gives the trajectory `ipi-mts serve` gives over 2 connections."""
    ff = ffdirect_xml("ff", argon.ffdirect_parameters(), pes_path=PES, batch_size=2)
    rc_ipi, _, _ = run_ipi_with_driver(tmp_path / "direct", simulation_xml(ff, init=argon.init, nbeads=2, steps=3))
    assert rc_ipi == 0
    direct = RunOutput(tmp_path / "direct")
    assert_matches_direct(direct, argon.evaluator())
    served = _serve_run(tmp_path / "serve", argon, 2, 3, connections=2)
    _assert_same_run(direct, served)


def test_registered_pes_takes_the_species_from_the_simulation(tmp_path, learned_water):
    """`<ffdirect><pes>ipi_mts</pes>` with no template under `ipi-mts run`: a learned model,
    which needs the species, gets them from i-PI's atoms and gives the trajectory `ipi-mts
    serve` gives with a template."""
    import subprocess
    import sys

    learned = learned_water
    workdir = tmp_path / "registered"
    workdir.mkdir()
    ff = ffdirect_xml("ff", "{model: water-baseline}")
    (workdir / "input.xml").write_text(simulation_xml(ff, init=learned.init, steps=3))
    run = subprocess.run([sys.executable, "-m", "ipi_mts.cli", "run", "--quiet", "input.xml"],
                         cwd=workdir, capture_output=True, text=True, timeout=80)
    assert run.returncode == 0, run.stderr
    registered = RunOutput(workdir)
    assert_matches_direct(registered, learned.evaluator(), rtol=1e-3, atol=1e-6)  # float32 model
    served = _serve_run(tmp_path / "serve", learned, 1, 3, connections=1)
    np.testing.assert_array_equal(registered.positions, served.positions)
    np.testing.assert_array_equal(registered.forces, served.forces)
    # `ipi-mts run` writes every digit (floatformat), plain i-PI ten
    np.testing.assert_allclose(registered.properties, served.properties, rtol=1e-8, atol=0)
