"""Training data made by running i-PI with a reference potential, through `ipi-mts run`.

For each temperature an NVT (PILE_L or Langevin) trajectory is run by the launcher with the
potential served by `ipi-mts serve`. Every `sample_every_fs` a frame is kept, together with
its partner one `pair_offset_fs` later (one outer MTS step: the pairs let training measure how
fast a force changes along a trajectory). Kept frames are labelled with the same potential
(energy eV, forces eV/Å, stress eV/Å³ in ASE's sign) and written as extxyz through ASE, with
`info` keys `temperature` (K), `segment` (one per kept frame pair: splits never separate a
pair), `time_fs` and `bead`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

from .. import units
from ..errors import UserError

INPUT = """<simulation verbosity='quiet'>
  <output prefix='{prefix}'>
{outputs}
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>{seed}</seed></prng>
  <ffsocket name='reference' mode='unix' pbc='false'>
    <address>{address}</address>
    <parameters>{{model: {model}}}</parameters>
  </ffsocket>
  <system>
    <initialize nbeads='{beads}'>
{initialize}
    </initialize>
    <forces><force forcefield='reference'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='{mode}'>
        <timestep units='femtosecond'>{dt}</timestep>
{thermostat}
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>{temperature}</temperature></ensemble>
  </system>
</simulation>
"""
THERMOSTAT = "        <thermostat mode='pile_l'><tau units='femtosecond'>100</tau></thermostat>"


def ipi_input(model, initialize, outputs, steps, dt_fs, temperature, seed=0, nvt=True, beads=1, prefix="gen"):
    """An i-PI input: `model` served on a fresh UNIX socket (the launcher starts it), NVT with
    PILE_L (τ = 100 fs) or NVE, `initialize` and `outputs` as XML lines."""
    return INPUT.format(
        prefix=prefix, outputs=outputs, steps=steps, seed=seed, address=socket_address(prefix),
        model=model, beads=beads, initialize=initialize, mode="nvt" if nvt else "nve", dt=dt_fs,
        thermostat=THERMOSTAT if nvt else "", temperature=temperature,
    )


def thermal_start(structure, temperature) -> str:
    """<initialize> lines: positions and cell from `structure` (i-PI xyz, or any format ASE
    reads), velocities drawn at `temperature`."""
    structure = Path(structure).resolve()
    fmt = "xyz" if structure.suffix == ".xyz" else "ase"
    return (
        f"      <file mode='{fmt}' units='angstrom'>{structure}</file>\n"
        f"      <velocities mode='thermal' units='kelvin'>{temperature}</velocities>"
    )


def _steps(time_fs: float, dt_fs: float, what: str) -> int:
    n = time_fs / dt_fs
    if n < 1 or abs(n - round(n)) > 1e-6:
        raise UserError(f"{what} ({time_fs} fs) must be a positive multiple of the time step ({dt_fs} fs)")
    return int(round(n))


def launch(xml: str, workdir: Path, quiet: bool, what: str) -> None:
    """Write `xml` as workdir/input.xml and run it with `ipi-mts run` (the one place where
    data generation runs i-PI); a failure is a UserError naming `what`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.xml").write_text(xml)
    cmd = [sys.executable, "-m", "ipi_mts.cli", "run", "input.xml"] + (["--quiet"] if quiet else [])
    result = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=None if not quiet else subprocess.PIPE, text=True)
    if result.returncode != 0:
        why = (result.stderr or "").strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        raise UserError(f"{what} failed: {why[0]}")


def socket_address(prefix: str = "gen") -> str:
    """A fresh UNIX socket address, so that concurrent runs never share one."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run_trajectory(model, structure, temperature, steps, stride, dt_fs, beads, seed, workdir, quiet):
    """Run i-PI through `ipi-mts run`; return the trajectory file of every bead."""
    outputs = (f"    <trajectory filename='pos' stride='{stride}' format='xyz' cell_units='angstrom'>"
               " positions{angstrom} </trajectory>")
    xml = ipi_input(model, thermal_start(structure, temperature), outputs, steps, dt_fs, temperature,
                    seed=seed, beads=beads)
    launch(xml, workdir, quiet, f"data generation at {temperature} K")
    width = len(str(beads - 1))
    return [workdir / f"gen.pos_{b:0{width}d}.xyz" for b in range(beads)]


def read_ipi_trajectory(path):
    """Frames of an i-PI trajectory as (symbols, positions Å (N, 3), cell Å rows (3, 3))."""
    from ipi.utils.io import iter_file_name

    for frame in iter_file_name(str(path)):
        atoms = frame["atoms"]
        yield (
            list(atoms.names),
            units.positions_from_wire(np.array(atoms.q).reshape(-1, 3)),
            units.cell_from_wire(np.array(frame["cell"].h)),
        )


def label(atoms_list, model, component="full", batch=16, quiet=True):
    """Attach energy, forces and stress of `model` to ASE atoms (in place)."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from tqdm import tqdm

    from ..potentials import evaluate, load_potential
    from ..state import State

    potential = load_potential(model, component)
    for start in tqdm(range(0, len(atoms_list), batch), desc="labelling", disable=quiet, file=sys.stderr):
        chunk = atoms_list[start : start + batch]
        potential.check(chunk[0].numbers)
        out = evaluate(potential, State.from_ase(chunk))
        forces = out.forces.detach().numpy()
        offset = 0
        for k, atoms in enumerate(chunk):
            n = len(atoms)
            virial = out.virial[k].detach().numpy()
            stress = -0.5 * (virial + virial.T) / atoms.get_volume()
            atoms.calc = SinglePointCalculator(
                atoms, energy=float(out.energy[k]), forces=forces[offset : offset + n], stress=stress
            )
            offset += n
    return atoms_list


def generate(model, structure, temperatures, out, time_ps=5.0, dt_fs=0.5, sample_every_fs=50.0,
             pair_offset_fs=2.0, equilibration_ps=0.5, beads=1, seed=0, quiet=False):
    """Run NVT at each temperature and write labelled frame pairs to `out` (extxyz)."""
    import ase.io
    from ase import Atoms
    from tqdm import tqdm

    offset = _steps(pair_offset_fs, dt_fs, "pair offset")
    every = _steps(sample_every_fs, dt_fs, "sampling interval")
    if every % offset:
        raise UserError("the sampling interval must be a multiple of the pair offset")
    if every <= offset:
        raise UserError("the sampling interval must be longer than the pair offset")
    skip = _steps(equilibration_ps * 1000.0, dt_fs, "equilibration") if equilibration_ps > 0 else 0
    steps = skip + _steps(time_ps * 1000.0, dt_fs, "run length")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    segment = 0
    with tempfile.TemporaryDirectory(prefix="ipi-mts-data-") as tmp:
        for i, temperature in enumerate(tqdm(temperatures, desc="temperatures", disable=quiet, file=sys.stderr)):
            paths = run_trajectory(model, structure, temperature, steps, offset, dt_fs, beads,
                                   seed + i, Path(tmp) / f"T{temperature}", quiet)
            for bead, path in enumerate(paths):
                for k, (symbols, positions, cell) in enumerate(read_ipi_trajectory(path)):
                    step = k * offset
                    if step < skip or (step - skip) % every not in (0, offset):
                        continue
                    first = (step - skip) % every == 0
                    if first:
                        segment += 1
                    atoms = Atoms(symbols=[s.strip() for s in symbols], positions=positions, cell=cell, pbc=True)
                    atoms.info.update(temperature=float(temperature), segment=segment,
                                      time_fs=step * dt_fs, bead=bead, pair_offset_fs=pair_offset_fs)
                    frames.append(atoms)
    label(frames, model, quiet=quiet)
    ase.io.write(out, frames, format="extxyz")
    return out, len(frames)
