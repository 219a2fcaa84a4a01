"""Eight q-TIP4P/F waters in a periodic 6.2 Å box for the tests of
`<dynamics mode='learned_map'>`: i-PI inputs, an equilibrated start, map files, runners.

i-PI's forces come from `<ffdirect><pes>ipi_mts</pes>` (q-TIP4P/F in this process, no
sockets), the map's anchor from the map file: the same potential, by two routes.
"""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import numpy as np

import mts_helpers as h
from ipi_mts.testing_ipi import ffdirect_xml, write_xyz

STEPS_EQUILIBRATE = 400  # i-PI nvt, 0.5 fs, PILE_L 20 fs: 200 fs from the lattice start


def simulation_xml(
    *,
    model="map.pt",
    mode="learned_map",
    steps=20,
    dt_fs=1.0,
    thermostat=None,
    tau_fs=10.0,
    temperature=300.0,
    velocities=300.0,
    nbeads=1,
    splitting="obabo",
    seed=1234,
    anchor="qtip4pf",
    init="init.xyz",
    extra_attributes="",
    fixcom=True,
    output="",
    properties="step, time{picosecond}, conserved, temperature{kelvin}, potential",
) -> str:
    thermo = "" if thermostat is None else (
        f"<thermostat mode='{thermostat}'><tau units='femtosecond'>{tau_fs}</tau></thermostat>"
    )
    model_attr = f" model='{model}'" if model is not None else ""
    return textwrap.dedent(
        f"""\
        <simulation verbosity='quiet' safe_stride='1' floatformat='%24.16e'>
          <output prefix='sim'>
            <properties stride='1' filename='out'> [ {properties} ] </properties>
            {output}
          </output>
          <total_steps>{steps}</total_steps>
          <prng><seed>{seed}</seed></prng>
          {ffdirect_xml("water", "{model: %s}" % anchor)}
          <system>
            <initialize nbeads='{nbeads}'>
              <file mode='xyz'>{init}</file>
              <velocities mode='thermal' units='kelvin'>{velocities}</velocities>
            </initialize>
            <forces><force forcefield='water'/></forces>
            <ensemble><temperature units='kelvin'>{temperature}</temperature></ensemble>
            <motion mode='dynamics'>
              <fixcom>{str(fixcom).lower()}</fixcom>
              <dynamics mode='{mode}' splitting='{splitting}'{model_attr}{extra_attributes}>
                <timestep units='femtosecond'>{dt_fs}</timestep>
                {thermo}
              </dynamics>
            </motion>
          </system>
        </simulation>
        """
    )


def write_lattice(path: Path) -> None:
    """2x2x2 waters on a 3.1 Å grid, random orientations (ipi_mts.testing.water_box)."""
    from ipi_mts import testing
    from ipi_mts.state import symbols

    box = testing.water_box(2, jitter=0.0, seed=0)
    write_xyz(path, symbols(box.numbers), box.positions.numpy(), np.diag(box.cell[0].numpy()))


def equilibrate(folder: Path) -> None:
    """folder/init.xyz: the lattice after 200 fs of i-PI nvt at 300 K (bohr, i-PI's xyz)."""
    work = folder / "equilibrate"
    work.mkdir(parents=True, exist_ok=True)
    write_lattice(work / "lattice.xyz")
    xml = simulation_xml(
        mode="nvt", model=None, steps=STEPS_EQUILIBRATE, dt_fs=0.5, thermostat="pile_l", tau_fs=20.0,
        init="lattice.xyz", properties="step",
        output="<trajectory filename='pos' stride='%d' format='xyz'> positions </trajectory>" % STEPS_EQUILIBRATE,
    )
    h.run_inprocess(xml, work, init=False)
    frames = (work / "sim.pos_0.xyz").read_text().splitlines()
    n = int(frames[0])
    (folder / "init.xyz").write_text("\n".join(frames[-(n + 2):]) + "\n")


def save_pure_map(path: Path, timestep_fs=1.0, tol=1e-10, masses=None, species=(1, 8)) -> Path:
    """A map file of the implicit midpoint rule of q-TIP4P/F (no correction)."""
    from ipi_mts.maps import GeneratingFunction, MidpointMap
    from ipi_mts.potentials import load_potential
    from ipi_mts.potentials.model_file import save_map

    midpoint = MidpointMap(GeneratingFunction(load_potential("qtip4pf"), timestep_fs), tol=tol, max_iter=100)
    return save_map(path, midpoint, anchor="qtip4pf", species=list(species), masses=masses)


@contextlib.contextmanager
def interactive(xml: str, folder: Path, **kwargs):
    """i-PI's scripting API on `xml` in `folder` (our modes registered), stopped and its
    soft exit reset afterwards."""
    import ipi_mts.motion as motion
    from ipi.utils.softexit import softexit

    softexit.reset()
    with h.chdir(folder):
        sim = motion.interactive_simulation(xml, **kwargs)
        try:
            yield sim
        finally:
            sim.stop()
            for o in sim.outputs:
                if hasattr(o, "close_stream"):
                    o.close_stream()
            softexit.reset()


def ipi_state(sim):
    """(q (n, 3) bohr, p (n, 3), masses (n,), h (3, 3) bohr, atomic numbers) of system 0."""
    from ipi.utils.depend import dstrip

    from ipi_mts.state import numbers_from_symbols

    s = sim.syslist[0]
    return (
        h.state(s.beads.q).reshape(-1, 3),
        h.state(s.beads.p).reshape(-1, 3),
        dstrip(s.beads.m).copy(),
        dstrip(s.cell.h).copy(),
        numbers_from_symbols(s.beads.names),
    )


def temperatures(folder: Path) -> np.ndarray:
    return h.read_out(folder / "sim.out")[:, 3]
