"""Small i-PI systems and runners for the tests of `<dynamics mode='mts'>`.

The forces are i-PI's own: a stiff harmonic trap (`<ffdirect><pes>harmonic`) as the fast
component and a Lennard-Jones cluster (`<fflj>`) as the slow one, so these tests do not
depend on ipi-mts's drivers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# Einstein crystal + LJ: each atom is tied to its site of a cube of side 2^(1/6) sigma by a
# stiff isotropic spring (the fast force, <ffdebye>), and the atoms interact by LJ (the slow
# force, <fflj>: 19x softer curvature at the sites). The start is a little off the sites.
SIDE = 2.0 ** (1.0 / 6.0) * 6.4 * 0.529177210903  # angstrom
REFERENCE = SIDE * np.array(
    [[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float
) - SIDE / 2
CLUSTER = REFERENCE + 0.08 * np.array(
    [
        [0.3, -0.8, 0.5],
        [-0.6, 0.2, 0.9],
        [0.7, 0.4, -0.3],
        [-0.2, -0.9, -0.6],
        [0.9, 0.1, 0.2],
        [-0.4, 0.6, -0.8],
        [0.1, -0.3, 0.7],
        [-0.8, 0.5, -0.1],
    ]
)
SPECIES = ["Ar", "Ne"] * 4


def write_xyz(path: Path) -> None:
    lines = [str(len(CLUSTER)), "# CELL(abcABC): 60.0 60.0 60.0 90.0 90.0 90.0 positions{angstrom} cell{angstrom}"]
    lines += [f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(SPECIES, CLUSTER)]
    path.write_text("\n".join(lines) + "\n")


def simulation_xml(
    *,
    mode="mts",
    steps=20,
    dt_fs=4.0,
    nmts=(1, 4),
    splitting="obabo",
    placement=None,
    thermostat=None,
    tau_fs=50.0,
    nbeads=1,
    temperature=60.0,
    seed=31415,
    contracted=False,
    k_fast=0.01,
    k_slow=None,
    weights=None,
    guard="",
    extra_dynamics="",
    checkpoint="",
    fixcom=False,
    properties="step, time{picosecond}, conserved, temperature{kelvin}, potential",
) -> str:
    """An i-PI input. nmts=None: no <nmts> and one level (weights default to one level).
    k_slow: the slow force is a second harmonic trap of that stiffness (a.u.), not LJ."""
    levels = 1 if nmts is None else len(nmts)
    if weights is None:
        if levels == 1:
            weights = ([1], [1])
        elif levels == 2:
            weights = ([1, 0], [0, 1])
        else:  # slow LJ on level 1 of 3, its 10 % on the outer level; harmonic innermost
            weights = ([0.1, 0.9] + [0] * (levels - 2), [0] * (levels - 1) + [1])
    slow_w, fast_w = weights
    thermo = ""
    if thermostat is not None:
        thermo = f"""
        <thermostat mode='{thermostat}'>
          <tau units='femtosecond'>{tau_fs}</tau>
        </thermostat>"""
    place = "" if placement is None else f" thermostat_placement='{placement}'"
    nmts_xml = "" if nmts is None else f"<nmts>[{', '.join(str(n) for n in nmts)}]</nmts>"
    slow_nbeads = " nbeads='1'" if contracted else ""
    n = len(CLUSTER)
    hessian = "[" + ", ".join(f"{x:g}" for x in (k_fast * np.eye(3 * n)).ravel()) + "]"
    xref = "[" + ", ".join(f"{x:.6f}" for x in REFERENCE.ravel()) + "]"
    slow = """<fflj name='slow' pbc='false' threaded='false'>
            <parameters>{eps: 0.00038, sigma: 6.4}</parameters>
          </fflj>"""
    if k_slow is not None:
        stiff = "[" + ", ".join(f"{x:g}" for x in (k_slow * np.eye(3 * n)).ravel()) + "]"
        slow = f"""<ffdebye name='slow'>
            <hessian shape='({3 * n}, {3 * n})'>{stiff}</hessian>
            <x_reference units='angstrom'>{xref}</x_reference>
          </ffdebye>"""
    return textwrap.dedent(
        f"""\
        <simulation verbosity='quiet' safe_stride='1' floatformat='%24.16e'>
          <output prefix='sim'>
            <properties stride='1' filename='out'> [ {properties} ] </properties>
            {checkpoint}
          </output>
          <total_steps>{steps}</total_steps>
          <prng><seed>{seed}</seed></prng>
          <ffdebye name='fast'>
            <hessian shape='({3 * n}, {3 * n})'>{hessian}</hessian>
            <x_reference units='angstrom'>{xref}</x_reference>
          </ffdebye>
          {slow}
          <system>
            <initialize nbeads='{nbeads}'>
              <file mode='xyz'>init.xyz</file>
              <velocities mode='thermal' units='kelvin'>{temperature}</velocities>
            </initialize>
            <forces>
              <force forcefield='slow'{slow_nbeads}><mts_weights>[{', '.join(map(str, slow_w))}]</mts_weights></force>
              <force forcefield='fast'><mts_weights>[{', '.join(map(str, fast_w))}]</mts_weights></force>
            </forces>
            <ensemble><temperature units='kelvin'>{temperature}</temperature></ensemble>
            <motion mode='dynamics'>
              <fixcom>{str(fixcom).lower()}</fixcom>
              <dynamics mode='{mode}' splitting='{splitting}'{place}>
                <timestep units='femtosecond'>{dt_fs}</timestep>
                {nmts_xml}{thermo}
                {guard}{extra_dynamics}
              </dynamics>
            </motion>
          </system>
        </simulation>
        """
    )


@contextlib.contextmanager
def chdir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_inprocess(xml: str, workdir: Path, register=True, init=True):
    """Run `xml` in this process in `workdir` (with the cluster as init.xyz unless `init` is
    false: then the caller wrote it); returns the final (q, p, econs, sim).

    i-PI's soft exit is a process-wide singleton: it is reset before and after, and the
    forcefields are stopped, so runs in one pytest process do not see each other."""
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    workdir.mkdir(parents=True, exist_ok=True)
    if init:
        write_xyz(workdir / "init.xyz")
    if register:
        import ipi_mts.motion

        ipi_mts.motion.register()
    softexit.reset()
    with chdir(workdir):
        sim = Simulation.load_from_xml(xml, custom_verbosity="quiet")
        try:
            sim.run()
        finally:
            sim.stop()
            for o in sim.outputs:
                if hasattr(o, "close_stream"):
                    o.close_stream()
            softexit.reset()
    s = sim.syslist[0]
    return state(s.beads.q), state(s.beads.p), float(s.ensemble.econs), sim


def state(x) -> np.ndarray:
    """A copy of an i-PI depend array (np.array(x) returns i-PI's live buffer)."""
    from ipi.utils.depend import dstrip

    return dstrip(x).copy()


def run_subprocess(code: str, workdir: Path, timeout=120) -> subprocess.CompletedProcess:
    """`python -c code` in `workdir` (with init.xyz written there), with a timeout."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_xyz(workdir / "init.xyz")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [PYTHON, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env
    )


def read_out(path: Path) -> np.ndarray:
    return np.loadtxt(path, ndmin=2)
