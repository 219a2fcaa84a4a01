"""Blow-up guard and monitor of `<dynamics mode='mts'>` and `<dynamics mode='learned_map'>`.

Every step (cheap, O(3NP) over arrays i-PI holds anyway):
  - positions and momenta are finite (one sum each: NaN and inf propagate);
  - the kinetic temperature, i-PI's `temperature` property 2K/(3 N P kB) with K the
    bead-averaged normal-mode kinetic energy, is below `max_temperature_factor` times the
    ensemble temperature (skipped when no temperature is set, e.g. plain NVE).
Every `stride` steps:
  - no two atoms of any bead closer than `min_distance` (a vesin cell list with that
    cutoff, linear in N, minimum image in i-PI's cell);
  - one line of the monitor file `<prefix>.mts_monitor` (`<prefix>.map_monitor` for maps):
    step, time, conserved energy, its drift (least-squares slope since the start of this
    run, per atom) and the kinetic temperature of each species (the equipartition check: in
    equilibrium each equals the ensemble temperature), then the integrator's own columns
    (`monitor_columns()`, e.g. a map's solver iterations and fallbacks). The same
    per-species temperatures are i-PI's own properties `temperature(atom=O)`, which can be
    written in `<properties>` for any mode. With mode='mts' and the thermostat inside, the
    columns `T(X)_inner_K` follow: the mean since the last line of the per-species
    temperature read right after every inner O step (mts.py explains why the step ends,
    between two slow half-kicks, read a biased one).

A failed check stops the run: i-PI's soft exit is run (outputs closed, RESTART written
from the state i-PI stored at the end of the last completed step), then `SimulationBlewUp`
is raised with a one-line message. `ipi-mts run` prints it and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError


class SimulationBlewUp(UserError):
    """The dynamics left the physical regime (NaN, overheating, collapsed atoms)."""


def _bohr_per_angstrom() -> float:
    from ..units import BOHR_PER_ANGSTROM

    return BOHR_PER_ANGSTROM


@dataclass
class GuardSettings:
    """What `<mts_guard>` sets (atomic units)."""

    stride: int = 10
    max_temperature_factor: float = 10.0
    min_distance: float = field(default_factory=lambda: 0.3 * _bohr_per_angstrom())  # bohr
    file: str = "mts_monitor"

    @classmethod
    def from_dict(cls, d: dict | None) -> "GuardSettings":
        s = cls()
        for k, v in (d or {}).items():
            if not hasattr(s, k):
                raise ValueError(f"unknown <mts_guard> setting '{k}'")
            setattr(s, k, type(getattr(s, k))(v))
        if s.stride < 0 or s.max_temperature_factor < 0 or s.min_distance < 0:
            raise ValueError("<mts_guard> settings must not be negative")
        return s


class DriftFit:
    """Running least-squares slope of y(t), O(1) memory (shifted sums avoid cancellation)."""

    def __init__(self):
        self.n = 0
        self.t0 = self.y0 = 0.0
        self.st = self.sy = self.stt = self.sty = 0.0

    def add(self, t: float, y: float) -> None:
        if self.n == 0:
            self.t0, self.y0 = t, y
        t, y = t - self.t0, y - self.y0
        self.n += 1
        self.st += t
        self.sy += y
        self.stt += t * t
        self.sty += t * y

    @property
    def slope(self) -> float:
        den = self.n * self.stt - self.st**2
        if self.n < 2 or den <= 0:
            return float("nan")
        return (self.n * self.sty - self.st * self.sy) / den


def _kb() -> float:
    from ipi.utils.units import Constants

    return Constants.kb


def _units():
    from ipi.utils.units import unit_to_internal, unit_to_user

    return {
        "ps": unit_to_internal("time", "picosecond", 1.0),
        "meV": unit_to_user("energy", "electronvolt", 1.0) * 1000.0,
        "K": unit_to_user("temperature", "kelvin", 1.0),
        "A": unit_to_user("length", "angstrom", 1.0),
    }


MTS_HINT = "try a shorter <timestep> or more inner steps in <nmts>"


class _SpeciesAverage:
    """Per-species temperatures averaged over samples: since the start and since the last
    `interval()` call."""

    def __init__(self):
        self.total: dict[str, float] = {}
        self.n = 0
        self.since: dict[str, float] = {}
        self.n_since = 0

    def add(self, temps: dict) -> None:
        for k, v in temps.items():
            self.total[k] = self.total.get(k, 0.0) + v
            self.since[k] = self.since.get(k, 0.0) + v
        self.n += 1
        self.n_since += 1

    def interval(self) -> dict:
        out = {k: v / max(self.n_since, 1) for k, v in self.since.items()}
        self.since, self.n_since = {}, 0
        return out

    def mean(self) -> dict:
        return {k: v / self.n for k, v in self.total.items()} if self.n else {}


class Monitor:
    """The guard and monitor of one motion (`name`: its mode, for messages; `hint`: what to
    try when it blows up). `bind` after the integrator is bound."""

    def __init__(self, settings: GuardSettings, name: str = "mts", hint: str = MTS_HINT):
        self.s = settings
        self.name, self.hint = name, hint
        self.drift = DriftFit()
        self.ends = _SpeciesAverage()  # at the step ends, every `stride` steps
        self.inner = _SpeciesAverage()  # after each inner O step (thermostat_placement='inner')
        self.last_min_distance = float("nan")
        self.out = None
        self.stopped = None  # the message, once the guard has stopped a run

    def bind(self, integrator, omaker=None) -> None:
        self.ig = integrator
        beads = integrator.beads
        self.names = [str(n) for n in beads.names]
        self.species = list(dict.fromkeys(self.names))
        self.species_index = {s: np.array([i for i, n in enumerate(self.names) if n == s]) for s in self.species}
        self.u = _units()
        self.kb = _kb()
        if omaker is not None and self.s.stride > 0 and self.s.file.strip().lower() not in ("", "none"):
            # one file per system: the second mts system of a simulation writes NAME_1, ...
            index = getattr(omaker, "_ipi_mts_monitors", 0)
            omaker._ipi_mts_monitors = index + 1
            name = self.s.file.strip() + (f"_{index}" if index else "")
            self.out = omaker.get_output(name)
            if omaker.f_start:
                cols = ["step", "time_ps", "conserved_Ha", "drift_meV_per_atom_ps"]
                cols += [f"T({s})_K" for s in self.species] + ["min_distance_A"]
                if self.samples_inner():
                    cols += [f"T({s})_inner_K" for s in self.species]
                cols += list(self._columns())
                self.out.out.write("# " + " ".join(cols) + "\n")

    # ---------------------------------------------------------------- quantities
    def temperature(self) -> float:
        """i-PI's `temperature` property without the fixcom/fixatoms corrections."""
        nm, beads = self.ig.nm, self.ig.beads
        return 2.0 * float(nm.kin) / (self.kb * 3.0 * beads.natoms * beads.nbeads**2)

    def species_temperatures(self) -> dict:
        """i-PI's `temperature(atom=X)` for each species (fixcom correction included)."""
        from ipi.utils.depend import dstrip

        nm, beads, motion = self.ig.nm, self.ig.beads, self.ig.motion
        pnm, dm3 = dstrip(nm.pnm), dstrip(nm.dynm3)
        per_atom = (pnm**2 / dm3).reshape(beads.nbeads, beads.natoms, 3).sum(axis=(0, 2)) * 0.5
        temp = float(self.ig.ensemble.temp)
        m = dstrip(beads.m)
        out = {}
        for s, idx in self.species_index.items():
            kin = per_atom[idx].sum() / beads.nbeads
            if temp > 0 and motion.fixcom:
                kin += 0.5 * self.kb * temp * 3.0 * m[idx].sum() / m.sum()
            out[s] = 2.0 * kin / (self.kb * 3.0 * len(idx) * beads.nbeads)
        return out

    def samples_inner(self) -> bool:
        return getattr(self.ig, "thermostat_placement", None) == "inner" and bool(self.ig.thermostatted)

    def after_thermostat(self) -> None:
        """Called by an integrator right after each O step of its innermost loop (and its
        constraints): one sample of the per-species temperature read where the thermostat
        leaves the momenta."""
        if self.s.stride > 0:
            self.inner.add(self.species_temperatures())

    def min_distance(self) -> float:
        """Closest pair over all beads (bohr); inf when no pair is closer than the cutoff."""
        from ipi.utils.depend import dstrip
        from vesin import NeighborList

        beads, cell = self.ig.beads, self.ig.motion.cell
        if beads.natoms < 2:
            return float("inf")
        h = dstrip(cell.h)
        volume = abs(np.linalg.det(h))
        periodic = volume > 1e-12
        box = h.T.copy() if periodic else np.zeros((3, 3))
        q = dstrip(beads.q)
        # a cell list costs (volume / cutoff^3): search at least half the mean spacing,
        # so that it stays O(N) for a tiny min_distance in a large box
        cutoff = float(self.s.min_distance)
        if periodic:
            cutoff = max(cutoff, 0.5 * (volume / beads.natoms) ** (1.0 / 3.0))
        calc = NeighborList(cutoff=cutoff, full_list=False)
        best = float("inf")
        for b in range(beads.nbeads):
            (d,) = calc.compute(q[b].reshape(-1, 3), box, periodic, quantities="d", copy=True)
            if len(d):
                best = min(best, float(d.min()))
        return best

    # ---------------------------------------------------------------- the check
    def after_step(self, step) -> None:
        s = self.s
        if s.stride == 0:
            return
        from ipi.utils.depend import dstrip

        ig = self.ig
        step = 0 if step is None else int(step)
        reason = None
        q, p = dstrip(ig.beads.q), dstrip(ig.beads.p)
        if not (np.isfinite(q.sum()) and np.isfinite(p.sum())):
            bad = "positions" if not np.isfinite(q).all() else "momenta"
            reason = f"non-finite {bad}"
        target = float(ig.ensemble.temp)
        if reason is None and s.max_temperature_factor > 0 and target > 0:
            t = self.temperature()
            if not t <= s.max_temperature_factor * target:
                reason = (
                    f"kinetic temperature {t * self.u['K']:.4g} K exceeds "
                    f"{s.max_temperature_factor:g} x the target {target * self.u['K']:.4g} K"
                )
        periodic_check = (step + 1) % s.stride == 0
        if reason is None and periodic_check and s.min_distance > 0:
            d = self.min_distance()
            self.last_min_distance = d
            if d < s.min_distance:
                reason = (
                    f"two atoms are {d * self.u['A']:.3g} A apart "
                    f"(closer than min_distance {s.min_distance * self.u['A']:.3g} A)"
                )
        if reason is not None:
            self._stop(step, reason)
        if periodic_check:
            self._record(step)

    def _record(self, step: int) -> None:
        ig = self.ig
        time = float(ig.ensemble.time) + float(ig.dt)  # i-PI adds dt after the integrator step
        econs = float(ig.ensemble.econs)
        self.drift.add(time, econs)
        temps = self.species_temperatures()
        self.ends.add(temps)
        if self.out is not None and self.out.out is not None:
            vals = [
                f"{step + 1:d}",
                f"{time / self.u['ps']:.8g}",
                f"{econs:.12e}",
                f"{self.drift_mev_per_atom_ps():.6g}",
            ]
            vals += [f"{temps[k] * self.u['K']:.6g}" for k in self.species]
            vals += [f"{self.last_min_distance * self.u['A']:.6g}"]
            if self.samples_inner():
                inner = self.inner.interval()
                vals += [f"{inner.get(k, float('nan')) * self.u['K']:.6g}" for k in self.species]
            vals += [f"{v:.6g}" for v in self._columns().values()]
            self.out.out.write(" ".join(vals) + "\n")
            self.out.out.flush()

    def _columns(self) -> dict:
        columns = getattr(self.ig, "monitor_columns", None)
        return columns() if columns is not None else {}

    def _stop(self, step: int, reason: str) -> None:
        from ipi.utils.softexit import softexit

        msg = (
            f"{self.name} dynamics blew up at step {step + 1}: {reason}; stopped, RESTART holds "
            f"the last stored step ({self.hint})"
        )
        self.stopped = msg
        try:
            softexit.cleanup(status="bad", message=msg)
        except SystemExit:  # a cleanup function may end the thread; the message still goes up
            pass
        raise SimulationBlewUp(msg)

    # ---------------------------------------------------------------- summary
    def drift_mev_per_atom_ps(self) -> float:
        # per atom of the conserved energy per bead, as i-PI's `conserved` property
        beads = self.ig.beads
        return self.drift.slope * self.u["ps"] * self.u["meV"] / (beads.natoms * beads.nbeads)

    def summary(self) -> dict:
        """Mean kinetic temperature per species (K), target (K), drift (meV/atom/ps)."""
        target = float(self.ig.ensemble.temp)
        inner = {k: v * self.u["K"] for k, v in self.inner.mean().items()}
        return {
            "samples": self.ends.n,
            "target_K": target * self.u["K"] if target > 0 else float("nan"),
            "species_T_K": {k: v * self.u["K"] for k, v in self.ends.mean().items()},
            "species_T_inner_K": inner or None,
            "drift_meV_per_atom_ps": self.drift_mev_per_atom_ps(),
            "mode": self.name,
            "placement": getattr(self.ig, "thermostat_placement", None),
            "isokinetic_L": self.ig.isokinetic.L if getattr(self.ig, "isokinetic", None) else None,
            "stopped": self.stopped,
            **(self.ig.monitor_summary() if hasattr(self.ig, "monitor_summary") else {}),
        }


def summary(simulation) -> dict | None:
    """The monitor summary of the first system of `simulation` if it runs mode='mts' or
    mode='learned_map'."""
    for system in simulation.syslist:
        integrator = getattr(system.motion, "integrator", None)
        mon = getattr(integrator, "monitor", None)
        if mon is not None:
            return mon.summary()
    return None


def summary_line(simulation) -> str | None:
    """One line for the end of a run: per-species mean kinetic temperature (equipartition
    check) against the target (the launcher's own line has the drift); for a map, also its
    solver iterations and fallbacks. None for other modes."""
    s = summary(simulation)
    if s is None or (s["samples"] == 0 and not s.get("steps")):
        return None
    temps = ", ".join(f"T({k}) {v:.1f} K" for k, v in s["species_T_K"].items())
    target = f" (target {s['target_K']:.1f} K)" if np.isfinite(s["target_K"]) else ""
    if s["mode"] != "mts":
        return f"{s['mode']} monitor ({s['samples']} samples, {s['solver']}): {temps}{target}"
    if s.get("isokinetic_L") and np.isfinite(s["target_K"]):
        L = s["isokinetic_L"]
        target = (f" (isokinetic: T L/(L+1) = {s['target_K'] * L / (L + 1):.1f} K by construction; the positions "
                  f"sample {s['target_K']:.1f} K)")
    if s["species_T_inner_K"]:
        inner = ", ".join(f"T({k}) {v:.1f} K" for k, v in s["species_T_inner_K"].items())
        temps = f"{inner} after the inner O steps; at the outer-step ends {temps}"
    return f"mts monitor ({s['placement']} thermostat, {s['samples']} samples): {temps}{target}"
