r"""The integrator of `<dynamics mode='learned_map' model='...'>`: a long-time-step map of
`ipi_mts.maps` in place of the Hamiltonian part of i-PI's step."""

from __future__ import annotations

import math

import numpy as np
import torch
from ipi.engine.barostats import Barostat
from ipi.engine.motion.dynamics import NVTIntegrator
from ipi.engine.thermostats import Thermostat
from ipi.utils.depend import dstrip

from .. import units
from ..errors import UserError
from .monitor import GuardSettings, Monitor

MIDPOINT_PREFIX = "midpoint:"  # model='midpoint:POTENTIAL': the implicit midpoint rule of POTENTIAL
DIRECT_PREFIX = "direct:"  # model='direct:MAP': MAP's direct predictor alone, no solve
STRIDE_RTOL = 1e-9  # i-PI's <timestep> against the map's stride
MASS_RTOL = 1e-6  # i-PI's masses against the map file's
ANCHOR_TOL = 1e-6  # Hartree per atom: i-PI's potential against the map's anchor V
PIMD_REASON = (
    "the map propagates one replica's physical Hamiltonian p²/2m + V(q) over its whole "
    "stride, but a ring polymer's propagator also needs the stiff harmonic springs between "
    "beads, which the map does not contain (splitting them off would tie the stride to the "
    "spring periods); use nbeads=1, or mode='nvt'/'mts' for path integrals"
)


def load(model: str, timestep_fs: float):
    """The MidpointMap that `model` names: a map file or shipped map (`load_map`);
    'direct:MAP', that map's direct predictor alone (its learned predictor, or one Verlet step
    of its anchor; explicit, not symplectic: the yardstick of the benchmarks); or
    'midpoint:POTENTIAL', the implicit midpoint rule of a reference potential (no learned
    correction; valid for any stride and masses, so it takes i-PI's `timestep_fs`)."""
    from ..maps import GeneratingFunction, MidpointMap
    from ..potentials import load_potential
    from ..potentials.model_file import load_map

    if model.startswith(DIRECT_PREFIX):
        direct = load_map(model[len(DIRECT_PREFIX) :])
        direct.solve = False
        return direct
    if not model.startswith(MIDPOINT_PREFIX):
        return load_map(model)
    anchor = model[len(MIDPOINT_PREFIX) :]
    midpoint = MidpointMap(GeneratingFunction(load_potential(anchor).eval(), timestep_fs))
    midpoint.species = midpoint.masses = midpoint.model_file = None
    midpoint.metadata, midpoint.anchor = {}, anchor
    return midpoint


class LearnedMapIntegrator(NVTIntegrator):
    r"""A map Φ_τ: (q, p) ↦ (q', p') over its stride τ (`maps.MidpointMap`, from the midpoint
    generating function S = τ [H(q̄, p̄) + H_θ(q̄, p̄)]) in place of the Hamiltonian part of
    the step; i-PI's time step Δt must equal τ. With i-PI's thermostat as O(h):

        NVE (no thermostat):   Φ(Δt) = Φ_τ
        NVT (splitting obabo): Φ(Δt) = O(Δt/2) Φ_τ O(Δt/2)

    i.e. OBABO with Φ_τ in place of B(Δt/2) A(Δt) B(Δt/2) (velocity Verlet), which it
    becomes for τ → 0 without H_θ. Any i-PI thermostat acts as O (tested: Langevin, SVR,
    PILE_L); its heat goes into `ethermo`, so i-PI's conserved energy stays meaningful.
    BAOAB is refused (its O sits in the middle of the stride, which a map of the whole
    stride cannot be split at), and so are path integrals (`PIMD_REASON`), barostats,
    fixed atoms, bias forces and more than one MTS level. Centre-of-mass constraints are
    applied after the map and after each O, as i-PI does.

    Forces and properties. The map evaluates its anchor potential V itself, in this process
    (the solver needs ∂V/∂q at the midpoints, which i-PI never asks for). i-PI's `<forces>`
    are not used to move the atoms: they serve i-PI's properties (potential, conserved,
    forces, pressure), evaluated lazily only when an output asks. They must therefore be the
    anchor V: at the first step i-PI's potential is compared with the map's V at the same
    positions (to `ANCHOR_TOL` per atom), and a mismatch stops the run with one line.

    Optional energy rescaling (`energy_rescaling='true'`), a projection onto the energy shell
    of the anchor Hamiltonian H = K + V after each map step (as FlashMD does for its direct
    predictions):

        p' ← s p',   s = √[(K(p) + V(q) − V(q')) / K(p')]

    so that H(q', s p') = H(q, p) exactly (the O steps still exchange heat with the bath).
    It costs one energy evaluation per step (V(q') is reused as the next step's V(q)). It is
    not symplectic and not time-reversible (s depends on the state), and it is skipped and
    counted when K(p) + V(q) − V(q') ≤ 0. It is useful for learned maps whose H_θ lets H
    drift; for the pure midpoint map it only removes bounded O(τ²) energy fluctuations.

    Checks when bound (one line each): the stride equals i-PI's time step, every atom's
    species is one of the map file's, and i-PI's masses are the file's (the map was made for
    them; `midpoint:` maps take any stride and masses).
    """

    def __init__(self, model: str = "", energy_rescaling: bool = False, guard=None):
        super().__init__()
        self.model = str(model)
        self.energy_rescaling = bool(energy_rescaling)
        self.guard_settings = GuardSettings.from_dict(guard)
        if self.guard_settings.file == GuardSettings().file:  # <mts_guard>'s default file name
            self.guard_settings.file = "map_monitor"
        self.monitor = None
        self.map = None
        self.iterations = self.max_iterations = self.fallbacks = self.steps = 0
        self.rescale_sum = self.rescale_max = 0.0
        self.rescale_skipped = 0
        self._potential_cache = None  # (q, V(q) Hartree) of the last map step
        self._anchor_checked = False

    # ------------------------------------------------------------------ set-up
    def bind(self, motion):
        mode = "<dynamics mode='learned_map'>"
        if type(motion.barostat) is not Barostat:
            raise ValueError(f"{mode} does not support barostats (NPT): remove the <barostat>")
        self.motion = motion
        super().bind(motion)
        beads = self.beads
        if beads.nbeads > 1:
            raise ValueError(f"{mode} refuses path integrals (nbeads={beads.nbeads}): {PIMD_REASON}")
        if not self.model:
            raise ValueError(
                f"{mode} needs the map: model='FILE', a shipped map's name, 'direct:MAP' or 'midpoint:POTENTIAL'"
            )
        self.thermostatted = type(self.thermostat) is not Thermostat
        if self.thermostatted and self.ensemble.temp < 0:
            raise ValueError(f"{mode} with a thermostat needs a positive <ensemble><temperature>")
        if self.thermostatted and self.splitting != "obabo":
            raise ValueError(
                f"{mode} needs splitting='obabo' with a thermostat: baoab puts the thermostat in "
                "the middle of the stride, where a map of the whole stride cannot be split"
            )
        if [int(n) for n in self.nmts] != [1]:
            raise ValueError(f"{mode} takes no <nmts> (the map covers the whole stride), not {list(self.nmts)}")
        if len(self.fixatoms_dof) > 0:
            raise ValueError(f"{mode} does not support fixed atoms (the map moves every atom)")
        if self.ensemble.has_bias:
            raise ValueError(f"{mode} does not support bias forces (the map knows only its own Hamiltonian)")
        timestep_fs = float(self.dt) / units.FEMTOSECOND
        self.map = load(self.model, timestep_fs)
        stride_fs = self.map.generating.timestep_fs
        if abs(timestep_fs - stride_fs) > STRIDE_RTOL * stride_fs:
            raise ValueError(
                f"i-PI's <timestep> is {timestep_fs:.6g} fs but the map {self.model!r} was made for "
                f"a stride of {stride_fs:.6g} fs: set <timestep units='femtosecond'>{stride_fs:.6g}</timestep>"
            )
        from ..state import numbers_from_symbols, symbols

        self.numbers = numbers_from_symbols(beads.names)
        self.map.generating.potential.check(self.numbers)
        if self.map.species is not None:
            unknown = sorted(set(int(z) for z in self.numbers) - set(self.map.species))
            if unknown:
                raise ValueError(
                    f"the map {self.model!r} knows the species {', '.join(symbols(self.map.species))}, "
                    f"the system also has {', '.join(symbols(unknown))}"
                )
            amu = dstrip(beads.m) / units.AMU
            want = np.array([self.map.masses[int(z)] for z in self.numbers])
            bad = np.flatnonzero(np.abs(amu - want) > MASS_RTOL * want)
            if len(bad):
                i = int(bad[0])
                raise ValueError(
                    f"atom {i} ({beads.names[i]}) has mass {amu[i]:.6g} amu in i-PI, but the map "
                    f"{self.model!r} was made for {want[i]:.6g} amu ({len(bad)} atoms differ)"
                )
        self.monitor = Monitor(self.guard_settings, "learned_map", "check the map and its stride")
        self.monitor.bind(self, getattr(motion, "output_maker", None))

    # ------------------------------------------------------------------ steps
    def _system(self):
        from ..maps import System

        return System.from_ipi(dstrip(self.beads.m), dstrip(self.motion.cell.h), self.numbers)

    def _potential(self, q: np.ndarray, system) -> float:
        """V(q) Hartree of the map's anchor (the last map step's value when q is its q')."""
        cached = self._potential_cache
        if cached is not None and np.array_equal(cached[0], q):
            return cached[1]
        with torch.no_grad():
            v = float(system.potential_energy(self.map.generating.potential, torch.as_tensor(q).reshape(-1, 3)))
        self._potential_cache = (q.copy(), v)
        return v

    def _check_anchor(self) -> None:
        """i-PI's potential (its <forces>) against the map's V at the current positions."""
        self._anchor_checked = True
        served = float(self.forces.pot)
        v = self._potential(dstrip(self.beads.q)[0].copy(), self._system())
        natoms = self.beads.natoms
        if not abs(served - v) <= ANCHOR_TOL * natoms:
            from ipi.utils.softexit import softexit

            msg = (
                f"i-PI's <forces> give the potential {served:.10g} Ha but the map's anchor "
                f"{self.map.anchor!r} gives {v:.10g} Ha at the same positions: serve the anchor in "
                "<forces> (i-PI's potential and conserved energy come from there)"
            )
            try:
                softexit.cleanup(status="bad", message=msg)
            except SystemExit:
                pass
            raise UserError(msg)

    def mapstep(self) -> None:
        """(q, p) ← Φ_τ(q, p) (then the energy rescaling, if asked)."""
        beads = self.beads
        q, p = dstrip(beads.q)[0].copy(), dstrip(beads.p)[0].copy()
        masses = dstrip(beads.m)
        q1, p1, info = self.map.step(q, p, masses, dstrip(self.motion.cell.h), self.numbers)
        q1, p1 = q1.reshape(-1), p1.reshape(-1)
        if self.energy_rescaling:
            p1 = self._rescale(q, p, q1, p1, np.repeat(masses, 3))
        beads.q[:] = q1[None, :]
        beads.p[:] = p1[None, :]
        self.steps += 1
        self.iterations += int(info["iterations"])
        self.max_iterations = max(self.max_iterations, int(info["iterations"]))
        self.fallbacks += int(bool(info["fallback"]))

    def _rescale(self, q, p, q1, p1, m3):
        """p' s with s = √[(K(p) + V(q) − V(q')) / K(p')] (class docstring)."""
        system = self._system()
        target = 0.5 * np.sum(p * p / m3) + self._potential(q, system) - self._potential(q1, system)
        k1 = 0.5 * np.sum(p1 * p1 / m3)
        if not (target > 0 and k1 > 0):
            self.rescale_skipped += 1
            return p1
        s = math.sqrt(target / k1)
        self.rescale_sum += abs(s - 1.0)
        self.rescale_max = max(self.rescale_max, abs(s - 1.0))
        return p1 * s

    def step(self, step=None):
        """One stride: Φ_τ, or O(Δt/2) Φ_τ O(Δt/2) with a thermostat; then the guard."""
        if not self._anchor_checked:
            self._check_anchor()
        if self.thermostatted:
            self.tstep()
            self.pconstraints()
        self.mapstep()
        self.pconstraints()
        if self.thermostatted:
            self.tstep()
            self.pconstraints()
        self.monitor.after_step(step)

    # ------------------------------------------------------------------ reports
    def monitor_columns(self) -> dict:
        """Extra columns of the monitor file: the solver's work so far."""
        columns = {"map_iterations_per_step": self.iterations / max(self.steps, 1), "map_fallbacks": self.fallbacks}
        if self.energy_rescaling:
            columns["rescale_mean_abs_s_minus_1"] = self.rescale_sum / max(self.steps - self.rescale_skipped, 1)
        return columns

    def monitor_summary(self) -> dict:
        n = max(self.steps, 1)
        text = (
            f"{self.steps} map steps, {self.iterations / n:.1f} solver iterations per step "
            f"(max {self.max_iterations}), {self.fallbacks} fallbacks"
        )
        if self.energy_rescaling:
            text += (
                f", energy rescaling |s-1| mean {self.rescale_sum / max(self.steps - self.rescale_skipped, 1):.2e}"
                f" max {self.rescale_max:.2e}, skipped {self.rescale_skipped}"
            )
        return {
            "steps": self.steps,
            "iterations": self.iterations,
            "max_iterations": self.max_iterations,
            "fallbacks": self.fallbacks,
            "rescale_skipped": self.rescale_skipped,
            "solver": text,
        }
