r"""Short NVE trajectories with momenta, for training long-time-step maps (`ipi-mts data
trajectories`).

At each temperature T, through `ipi-mts run` with the reference potential served:

1. NVT (PILE_L, τ_T = 100 fs) for `equilibration_ps`, then on for (n − 1) × `spacing_fs`,
   writing an i-PI checkpoint every `spacing_fs`: the last n checkpoints are n equilibrated
   states, `spacing_fs` apart;
2. from each of them (`<file mode='chk'>`: positions, momenta, masses, cell, exactly) an NVE
   segment of `segment_fs` at the fine step `dt_fs`, positions and momenta written every
   `save_every` steps (i-PI `<trajectory format='ase'>`, which writes ASE's units: Å and
   √(amu·eV), 8 decimals).

Every saved state becomes one extxyz frame (through ASE) with positions (Å), ASE momenta and
the masses of the run (i-PI's), and `info` keys `temperature` (K), `segment` (one per NVE
segment, numbered over the whole file), `time_fs` (since the segment's start),
`frame_dt_fs` (= save_every × dt_fs) and `order` (frame index within the segment).

ASE momenta are in √(amu·eV) (ASE's time unit is Å √(amu/eV)), so

    p [a.u. = √(m_e·Ha)] = p_ASE × √(AMU · HARTREE_PER_EV)

with both constants from `ipi_mts.units` (`read_trajectories` converts back).
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from .. import units
from ..errors import UserError
from .dataset import read_extxyz
from .generate import _steps, ipi_input, launch, thermal_start

MOMENTUM_AU_PER_ASE = math.sqrt(units.AMU * units.HARTREE_PER_EV)  # a.u. per √(amu·eV)

_NVT_OUTPUT = "    <checkpoint filename='chk' stride='{stride}' overwrite='false'/>"
_NVE_OUTPUT = (
    "    <trajectory filename='pos' stride='{stride}' format='ase'> positions </trajectory>\n"
    "    <trajectory filename='mom' stride='{stride}' format='ase'> momenta </trajectory>"
)


@dataclass
class Segment:
    """One NVE segment in i-PI atomic units (float64 numpy)."""

    q: np.ndarray  # (n_frames, n_atoms, 3) bohr
    p: np.ndarray  # (n_frames, n_atoms, 3) a.u. momenta
    masses: np.ndarray  # (n_atoms,) electron masses
    numbers: np.ndarray  # (n_atoms,) atomic numbers
    cell: np.ndarray  # (3, 3) i-PI h, bohr, vectors as columns
    frame_dt_fs: float  # time between frames
    temperature: float  # K, of the NVT that started it
    segment: int


def _equilibrated_states(model, structure, temperature, n, eq_steps, spacing, dt_fs, seed, workdir, quiet):
    """Checkpoint files of the last `n` of an NVT run, `spacing` steps apart."""
    steps = eq_steps + (n - 1) * spacing
    xml = ipi_input(model, thermal_start(structure, temperature), _NVT_OUTPUT.format(stride=spacing),
                    steps, dt_fs, temperature, seed=seed, prefix="traj")
    launch(xml, workdir, quiet, f"NVT equilibration at {temperature} K")
    files = sorted(workdir.glob("traj.chk_*"), key=lambda f: int(f.name.rsplit("_", 1)[1]))
    if len(files) < n:
        raise UserError(f"NVT at {temperature} K wrote {len(files)} checkpoints, {n} were needed")
    return files[-n:]


def _nve_segment(model, checkpoint, steps, save_every, dt_fs, temperature, workdir, quiet):
    """(positions Å, momenta a.u.) frames of an NVE run from `checkpoint` (i-PI writes the
    starting state as the first frame) and (masses a.u., names, h bohr)."""
    init = f"      <file mode='chk'>{Path(checkpoint).resolve()}</file>"
    xml = ipi_input(model, init, _NVE_OUTPUT.format(stride=save_every), steps, dt_fs, temperature,
                    nvt=False, prefix="traj")
    launch(xml, workdir, quiet, f"NVE segment at {temperature} K")
    positions = read_extxyz(workdir / "traj.pos_0.extxyz")
    momenta = read_extxyz(workdir / "traj.mom_0.extxyz")
    q = [a.arrays["positions"] for a in positions]
    p = [a.arrays["momenta"] * MOMENTUM_AU_PER_ASE for a in momenta]
    return q, p, _checkpoint_state(checkpoint)


def _checkpoint_state(path):
    """(masses a.u. (n,), names, h bohr (3, 3)) of an i-PI checkpoint, read by i-PI."""
    from ipi.engine.initializer import init_chk

    beads, cell = init_chk(str(path))[:2]
    return np.array(beads.m), [str(x).strip() for x in beads.names], np.array(cell.h)


def generate_trajectories(model, structure, temperatures, out, dt_fs=0.25, save_every=2,
                          segment_fs=100.0, segments=4, spacing_fs=200.0, equilibration_ps=1.0,
                          seed=0, quiet=False):
    """NVT-equilibrated NVE segments at each temperature, written to `out` (extxyz, module
    docstring). Returns (out, number of frames, number of segments)."""
    from tqdm import tqdm

    if segments < 1 or save_every < 1:
        raise UserError("segments and save_every must be at least 1")
    seg_steps = _steps(segment_fs, dt_fs, "segment length")
    if seg_steps % save_every:
        raise UserError(f"the segment ({seg_steps} steps) must be a multiple of save_every ({save_every})")
    spacing = _steps(spacing_fs, dt_fs, "segment spacing")
    eq_steps = _steps(equilibration_ps * 1000.0, dt_fs, "equilibration") if equilibration_ps > 0 else spacing
    made = []
    total = len(temperatures) * (segments + 1)
    with tempfile.TemporaryDirectory(prefix="ipi-mts-traj-") as tmp, tqdm(
        total=total, desc="i-PI runs", disable=quiet, file=sys.stderr
    ) as bar:
        for i, temperature in enumerate(temperatures):
            base = Path(tmp) / f"T{temperature}"
            starts = _equilibrated_states(model, structure, temperature, segments, eq_steps, spacing,
                                          dt_fs, seed + i, base / "nvt", True)
            bar.update(1)
            for j, checkpoint in enumerate(starts):
                q, p, (masses, names, h) = _nve_segment(model, checkpoint, seg_steps, save_every, dt_fs,
                                                       temperature, base / f"nve{j}", True)
                made.append(Segment(
                    q=units.positions_to_wire(np.stack(q)), p=np.stack(p), masses=masses,
                    numbers=np.array([atomic_numbers[n] for n in names]), cell=h,
                    frame_dt_fs=save_every * dt_fs, temperature=float(temperature), segment=len(made) + 1,
                ))
                bar.update(1)
    n = write_segments(out, made)
    return Path(out), n, len(made)


def write_segments(out, segments) -> int:
    """Write `Segment`s as extxyz frames (module docstring); returns the number of frames."""
    import ase.io
    from ase import Atoms

    frames = []
    for s in segments:
        for k, (q, p) in enumerate(zip(s.q, s.p)):
            atoms = Atoms(numbers=s.numbers, positions=units.positions_from_wire(q),
                          cell=units.cell_from_wire(s.cell), pbc=True, masses=s.masses / units.AMU,
                          momenta=p / MOMENTUM_AU_PER_ASE)
            atoms.info.update(temperature=s.temperature, segment=s.segment, time_fs=k * s.frame_dt_fs,
                              frame_dt_fs=s.frame_dt_fs, order=k)
            frames.append(atoms)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(out, frames, format="extxyz")
    return len(frames)


def read_trajectories(paths) -> list[Segment]:
    """The NVE segments of `generate_trajectories` files, in i-PI atomic units."""
    segments: dict = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        frames = read_extxyz(path)
        for k, atoms in enumerate(frames):
            if "momenta" not in atoms.arrays or "segment" not in atoms.info or "frame_dt_fs" not in atoms.info:
                raise UserError(f"{path}: frame {k} has no momenta, segment or frame_dt_fs "
                                "(write it with `ipi-mts data trajectories`)")
            segments.setdefault((str(path), atoms.info["segment"]), []).append(atoms)
    out = []
    for (path, number), frames in segments.items():
        frames.sort(key=lambda a: a.info["order"])
        first = frames[0]
        out.append(Segment(
            q=units.positions_to_wire(np.stack([a.positions for a in frames])),
            p=np.stack([a.get_momenta() for a in frames]) * MOMENTUM_AU_PER_ASE,
            masses=first.get_masses() * units.AMU,
            numbers=first.numbers.copy(),
            cell=units.cell_to_wire(np.array(first.cell)),
            frame_dt_fs=float(first.info["frame_dt_fs"]),
            temperature=float(first.info.get("temperature", math.nan)),
            segment=len(out),
        ))
    if not out:
        raise UserError("no frames in the trajectory files")
    return out

