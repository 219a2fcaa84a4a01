r"""The stochastic isokinetic Nosé–Hoover thermostat of `thermostat_placement='isokinetic'`
(SIN(R): Leimkuhler, Margul, Tuckerman, Mol. Phys. 111, 3579 (2013)).

Every degree of freedom (a Cartesian component of an atom) with velocity v and mass m carries
L thermostat velocities v1_k (mass Q1) and v2_k (mass Q2), and stays on the isokinetic surface

    m v² + L/(L+1) Σ_k Q1 v1_k² = L kT                                                   (1)

under the equations of motion

    q̇ = v,   v̇ = F/m − λ v,   v̇1_k = −λ v1_k − v2_k v1_k,
    v̇2_k = (Q1 v1_k² − kT)/Q2 − γ v2_k + √(2γ kT/Q2) η_k(t),

with λ = [F v − L/(L+1) Σ_k Q1 v1_k² v2_k] / (L kT), the multiplier that keeps (1). The
positions are distributed as exp(−V/kT); the velocities are not Maxwell–Boltzmann (⟨m v²⟩ =
kT L/(L+1), so i-PI's kinetic temperature reads T L/(L+1)), and no degree of freedom can hold
more kinetic energy than L kT. That bound is what removes the resonance of multiple time steps:
the slow force's impulses cannot pump a fast mode, so the outer step is limited by how well the
slow force is integrated, not by the fast vibrations. Dynamical properties (diffusion, spectra)
are not those of Newton's equations; static ones (structure, free energies) are.

Each sub-step is the exact flow of part of the equations:

    V_F(t):  v ← (v + s F/m)/ṡ,  v1_k ← v1_k/ṡ,   with a = F v/(L kT), b = F²/(m L kT),
             s = sinh(√b t)/√b + a (cosh(√b t) − 1)/b,  ṡ = a sinh(√b t)/√b + cosh(√b t)
    N(t):    T(t/2) then v1_k ← v1_k e^{−v2_k t} H, v ← v H with H = √(L kT / [m v² +
             L/(L+1) Σ_k Q1 v1_k² e^{−2 v2_k t}]), then T(t/2);  T(τ): v2_k += τ (Q1 v1_k² − kT)/Q2
    OU(t):   v2_k ← v2_k e^{−γ t} + √(kT/Q2 (1 − e^{−2γ t})) ξ
    A(t):    q ← q + t v

and mts.py composes them. Q1 = Q2 = kT τ² and γ = 1/τ, with τ the `<tau>` of the
`<thermostat mode='langevin'>` that such a run must have.
"""

from __future__ import annotations

import numpy as np

L_DEFAULT = 4  # thermostat variables per degree of freedom
_SERIES = 1e-4  # below this √b t, s and ṡ from their Taylor series (no 0/0)


class Isokinetic:
    """State (v1, v2), each (L, n) for n degrees of freedom, and the sub-steps above; all in
    atomic units. `gaussian(shape)` draws standard normal numbers (i-PI's prng); the state is
    drawn from the thermostat's stationary distribution unless `state` (2L, n) is given."""

    def __init__(self, kT: float, tau: float, masses: np.ndarray, gaussian, L: int = L_DEFAULT, state=None):
        if kT <= 0 or tau <= 0:
            raise ValueError("the isokinetic thermostat needs a positive temperature and tau")
        self.kT, self.L, self.m = float(kT), int(L), np.asarray(masses, dtype=float)
        self.Q1 = self.Q2 = self.kT * tau**2
        self.gamma = 1.0 / tau
        self.gaussian = gaussian
        if state is not None:  # drawing nothing, so a resumed run sees the same random numbers
            self.state = state
        else:
            self.v1 = np.sqrt(self.kT / self.Q1) * gaussian((self.L, self.m.size))
            self.v2 = np.sqrt(self.kT / self.Q2) * gaussian((self.L, self.m.size))

    @property
    def state(self) -> np.ndarray:
        """(2L, n): v1 then v2, as stored in RESTART files."""
        return np.concatenate([self.v1, self.v2])

    @state.setter
    def state(self, value) -> None:
        value = np.asarray(value, dtype=float)
        if value.size == 2 * self.L * self.m.size:  # RESTART files keep arrays flat
            value = value.reshape(2 * self.L, self.m.size)
        if value.shape != (2 * self.L, self.m.size):
            raise ValueError(
                f"isokinetic thermostat state of shape {value.shape}, expected {(2 * self.L, self.m.size)}"
            )
        self.v1, self.v2 = value[: self.L].copy(), value[self.L :].copy()

    def constraint(self, v: np.ndarray) -> np.ndarray:
        """The left-hand side of (1) over L kT, per degree of freedom (1 on the surface)."""
        return (self.m * v**2 + self.L / (self.L + 1) * self.Q1 * (self.v1**2).sum(0)) / (self.L * self.kT)

    def project(self, v: np.ndarray) -> np.ndarray:
        """(v, v1) scaled onto (1) together; returns the new v."""
        h = 1.0 / np.sqrt(self.constraint(v))
        self.v1 *= h
        return v * h

    def kick(self, v: np.ndarray, force: np.ndarray, t: float) -> np.ndarray:
        """V_F(t); returns the new v. With c = cosh(√b t): v ← (v/c + (s/c) F/m)/(ṡ/c), v1 ←
        (v1/c)/(ṡ/c), where 1/(ṡ/c) is the factor that puts (v, v1) back on (1), applied as
        such (`project`): nothing overflows for large √b t."""
        lkt = self.L * self.kT
        a = force * v / lkt
        b = force**2 / (self.m * lkt)
        x = np.sqrt(b) * t
        small = x < _SERIES
        sqb = np.where(small, 1.0, np.sqrt(b))  # no division by zero in the branch not taken
        tanh, sech = np.tanh(x), 2 * np.exp(-x) / (1 + np.exp(-2 * x))
        s = np.where(small, t * (1 + a * t / 2 + b * t**2 / 6 + a * b * t**3 / 24),
                     tanh / sqb + a * (1 - sech) / sqb**2)
        scale = np.where(small, 1.0, sech)
        self.v1 *= scale
        return self.project(v * scale + s * force / self.m)

    def _t(self, tau: float) -> None:
        self.v2 += tau * (self.Q1 * self.v1**2 - self.kT) / self.Q2

    def nose_hoover(self, v: np.ndarray, t: float) -> np.ndarray:
        """N(t); returns the new v."""
        self._t(t / 2)
        self.v1 *= np.exp(-self.v2 * t)
        v = self.project(v)
        self._t(t / 2)
        return v

    def ornstein_uhlenbeck(self, t: float) -> None:
        """OU(t) on v2."""
        decay = np.exp(-self.gamma * t)
        self.v2 = self.v2 * decay + np.sqrt(self.kT / self.Q2 * (1 - decay**2)) * self.gaussian(self.v2.shape)
