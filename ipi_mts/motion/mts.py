"""The integrator of `<dynamics mode='mts'>`: multiple-time-step (RESPA) dynamics with the
thermostat outside the whole step, inside the innermost loop, or isokinetic (SIN(R))."""

from __future__ import annotations

import numpy as np
from ipi.engine.barostats import Barostat
from ipi.engine.motion.dynamics import NVEIntegrator, NVTIntegrator
from ipi.engine.thermostats import ThermoLangevin, Thermostat
from ipi.utils.depend import dstrip
from ipi.utils.units import Constants

from .isokinetic import Isokinetic
from .monitor import GuardSettings, Monitor
from .registration import PLACEMENTS


class MTSIntegrator(NVTIntegrator):
    r"""Multiple-time-step integrator with any number of force levels.

    Levels k = 0 … L-1, outer first, with forces F_k = Σ_c w_{c,k} F_c from `<mts_weights>`
    and n_k = `nmts[k]` iterations; the step of level k is h_k = Δt / (n_0 n_1 … n_k) and the
    innermost step is δ = h_{L-1} = Δt / Π_k n_k. Sub-steps, as operators on (q, p):

        B_k(τ):  p ← p + τ F_k(q)         (level-0 kicks include the bias force)
        A(τ):    centroid q ← q + τ p/m, then exact free ring-polymer propagation of the
                 internal normal modes for τ (i-PI's `qcstep` + `nm.free_qstep`)
        O(τ):    the thermostat for a time τ (Langevin, PILE_L/G, SVR, GLE, … ;
                 its heat goes into `ethermo`, so the conserved energy stays conserved)

    and the nested velocity-Verlet map of level k (R_L denotes the innermost drift):

        R_k = [ B_k(h_k/2) R_{k+1} B_k(h_k/2) ]^{n_k},   k = 0 … L-1
        R_L = A(δ)                                         (no thermostat, or 'outer')

    thermostat_placement='outer' (default) is i-PI's own nve/nvt with the same `nmts`, bit
    for bit:

        no thermostat (NVE):  Φ(Δt) = R_0
        obabo:                Φ(Δt) = O(Δt/2) R_0 O(Δt/2)
        baoab:                Φ(Δt) = R_0^{(ba)} O(Δt) R_0^{(ab)}

    where R_0^{(ba)}, R_0^{(ab)} are the two halves of R_0 split at the middle of its
    innermost drift (i-PI's `mtsprop_ba` / `mtsprop_ab`).

    thermostat_placement='inner' (BAOAB-RESPA, as OpenMM's MTSLangevinIntegrator) moves
    the O step into the innermost loop, with the innermost time step δ:

        baoab:  R_{L-1} = [ B_{L-1}(δ/2) A(δ/2) O(δ) A(δ/2) B_{L-1}(δ/2) ]^{n_{L-1}}
        obabo:  R_{L-1} = [ O(δ/2) B_{L-1}(δ/2) A(δ) B_{L-1}(δ/2) O(δ/2) ]^{n_{L-1}}
        Φ(Δt) = R_0,  with the outer kicks B_k(h_k/2), k < L-1, wrapped around as above.

    The thermostat's time step is piped by i-PI from `tdt`: Δt/2 (obabo) or Δt (baoab)
    for 'outer', δ/2 or δ for 'inner'. With a single level both placements coincide.
    Every O adds the kinetic energy it removes to `ethermo`, wherever it is called, so the
    conserved energy stays the one of i-PI's nvt. Its error is O(Δt²) for 'outer'; for
    'inner' with a strong friction (PILE_L/PILE_G internal modes) it converges only as
    O(Δt): the slow kicks at the ends of the outer step integrate ∫F·v dt by the trapezoid
    rule over a velocity that the O steps have randomised in between (measured on the test
    system, 4 beads, nmts=[1,4]: 5.2e-4 → 2.4e-4 Ha peak-to-peak per bead from Δt = 16 to
    8 fs, against 7.5e-5 → 1.7e-5 for 'outer'; with SVR both are O(Δt²)-like).
    Centre-of-mass and fixed-atom constraints are applied after every kick and every O,
    as i-PI does. Barostats (NPT) are not supported: use i-PI's mode='npt' with `<nmts>`.

    thermostat_placement='isokinetic' (SIN(R), isokinetic.py: classical, one bead, with a
    `<thermostat mode='langevin'>` whose τ sets the thermostat's masses and friction) replaces
    the kicks and the thermostat by the isokinetic sub-steps V_F, N, OU of isokinetic.py:

        R_k = [ V_{F_k}(h_k/2) R_{k+1} V_{F_k}(h_k/2) ]^{n_k},   k < L-1
        R_{L-1} = [ N(δ/2) V_{F_{L-1}}(δ/2) A(δ) OU(δ) V_{F_{L-1}}(δ/2) N(δ/2) ]^{n_{L-1}}
        Φ(Δt) = R_0

    It samples exp(−V/kT) in the positions only, with no resonance between the outer step
    and the fast modes; i-PI's kinetic temperature reads T L/(L+1), and there is no
    conserved energy.

    Kinetic temperature with 'inner': a step end lies between two slow half-kicks, and for
    its momenta p and those just inside the steps on either side, p ∓ (Δt/2) F_slow,
    identically  p²/2m = mean of (p ∓ (Δt/2) F_slow)²/2m − (Δt/2)² F_slow²/2m,
    so the step ends read the kinetic energy low by the slow impulse. For one harmonic mode
    the exact stationary value at the step ends is 0.90 kT for the Ne atoms of the test
    (Δt = 100 fs), and 1.01 kT after the inner O steps. i-PI's `temperature` properties
    read the step ends; the monitor also reads the momenta after every inner O (the
    `T(X)_inner_K` columns and its summary), where OBABO with one level, and 'outer', read
    them too.
    """

    def __init__(self, thermostat_placement="outer", guard=None, isokinetic=None):
        super().__init__()
        if thermostat_placement not in PLACEMENTS:
            raise ValueError(
                f"thermostat_placement must be one of {PLACEMENTS}, not '{thermostat_placement}'"
            )
        self.thermostat_placement = thermostat_placement
        self.guard_settings = GuardSettings.from_dict(guard)
        self.monitor = None
        self._innermost_kicks = 0  # of the current step (`_prefetch`)
        self.isokinetic = None  # the SIN(R) thermostat (placement 'isokinetic'), made in bind
        self._isokinetic_state = isokinetic  # its (v1, v2) from a RESTART, if any

    # ------------------------------------------------------------------ set-up
    def get_tdt(self):
        tdt = super().get_tdt()
        if self.thermostat_placement == "inner":
            tdt = tdt / int(np.prod(self.nmts))
        return tdt

    def bind(self, motion):
        if type(motion.barostat) is not Barostat:
            raise ValueError(
                "<dynamics mode='mts'> does not support barostats (NPT): use mode='npt' with "
                "<nmts> for multiple-time-step NPT, or remove the <barostat>"
            )
        self.motion = motion
        super().bind(motion)
        self.thermostatted = type(self.thermostat) is not Thermostat
        if self.thermostatted and self.ensemble.temp < 0:
            raise ValueError(
                "<dynamics mode='mts'> with a thermostat needs a positive <ensemble><temperature>"
            )
        if self.beads.nbeads > 1 and self.ensemble.temp < 0:
            raise ValueError(
                "path-integral <dynamics mode='mts'> needs a positive <ensemble><temperature> "
                "(it sets the ring-polymer springs), also without a thermostat"
            )
        if self.thermostat_placement == "isokinetic":
            self._bind_isokinetic()
        self.monitor = Monitor(self.guard_settings)
        self.monitor.bind(self, getattr(motion, "output_maker", None))

    def _bind_isokinetic(self):
        why = None
        if self.beads.nbeads > 1:
            why = "is classical only (one bead): use 'inner' for path integrals"
        elif type(self.thermostat) is not ThermoLangevin:
            why = "needs <thermostat mode='langevin'> (its tau sets the isokinetic thermostat)"
        elif self.fixcom:
            why = "thermostats the centre of mass too: set <fixcom>False</fixcom> in <motion>"
        elif len(self.fixatoms_dof) > 0:
            why = "does not support fixed atoms"
        if why:
            raise ValueError(f"thermostat_placement='isokinetic' {why}")
        self.isokinetic = Isokinetic(Constants.kb * self.ensemble.temp, self.thermostat.tau,
                                     dstrip(self.beads.m3)[0], self.prng.gvec, state=self._isokinetic_state)

    # ------------------------------------------------------------------ steps
    def _inner(self, level):
        """R_level with the thermostat in the innermost loop."""
        last = self.nmtslevels - 1
        obabo = self.splitting == "obabo"
        for _ in range(int(self.nmts[level])):
            if level == last and obabo:
                self.tstep()
                self.pconstraints()
            self.pstep(level)
            self.pconstraints()
            if level < last:
                self._inner(level + 1)
            elif obabo:
                self.qcstep()
                self.nm.free_qstep()
                self.qcstep()
                self.nm.free_qstep()
            else:
                self.qcstep()
                self.nm.free_qstep()
                self.tstep()
                self.pconstraints()
                self.monitor.after_thermostat()
                self.qcstep()
                self.nm.free_qstep()
            self.pstep(level)
            self.pconstraints()
            if level == last and obabo:
                self.tstep()
                self.pconstraints()
                self.monitor.after_thermostat()

    def pstep(self, level=0):
        self._prefetch(level)
        super().pstep(level)

    def _prefetch(self, level):
        """Queue the outer levels' forces as soon as the positions they need are reached.

        Every drift A(δ) of the innermost level lies between two innermost kicks, so the
        2a-th innermost kick of a step follows its a-th drift; the next kick of level k uses
        the same positions when a is a multiple of n_{k+1} ⋯ n_{L-1}. Those forces are queued
        before the innermost one is computed: a force field with its own driver (a socket)
        then works on them while the innermost force is evaluated, instead of after it. The
        forces are the same, only computed earlier."""
        last = self.nmtslevels - 1
        if level != last or last == 0:
            return
        self._innermost_kicks += 1
        drifts, odd = divmod(self._innermost_kicks, 2)
        if odd:
            return
        for k in range(last - 1, -1, -1):
            if drifts % int(np.prod(self.nmts[k + 1 :])):
                break
            self.forces.mts_forces[k].queue_mts()

    def _level_force(self, level):
        self._prefetch(level)
        force = dstrip(self.forces.mts_forces[level].f)[0]
        if level == 0 and self.ensemble.has_bias:
            force = force + dstrip(self.bias.f)[0]
        return force

    def _isokinetic_level(self, level, v):
        """R_level of the isokinetic placement, on the velocities v (3N,); returns them."""
        iso, last, half = self.isokinetic, self.nmtslevels - 1, self.pdt[level]
        for _ in range(int(self.nmts[level])):
            if level == last:
                v = iso.nose_hoover(v, half)
            v = iso.kick(v, self._level_force(level), half)
            if level < last:
                v = self._isokinetic_level(level + 1, v)
            else:
                self.beads.q[0] += 2 * half * v
                iso.ornstein_uhlenbeck(2 * half)
            v = iso.kick(v, self._level_force(level), half)
            if level == last:
                v = iso.nose_hoover(v, half)
        return v

    def step(self, step=None):
        """One time step Δt, then the guard."""
        if self.splitting not in ("obabo", "baoab"):
            raise ValueError("Invalid splitting requested. Only OBABO and BAOAB are supported.")
        self._innermost_kicks = 0
        if self.isokinetic is not None:
            m = self.isokinetic.m
            # (v, v1) back onto the isokinetic surface: a no-op but for round-off, except at
            # the start of a run, whose momenta come from elsewhere
            v = self._isokinetic_level(0, self.isokinetic.project(dstrip(self.beads.p)[0] / m))
            self.beads.p[0] = m * v
        elif not self.thermostatted:
            NVEIntegrator.step(self, step)
        elif self.thermostat_placement == "outer":
            NVTIntegrator.step(self, step)
        else:
            self._inner(0)
        self.monitor.after_step(step)
