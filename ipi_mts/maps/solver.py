r"""The implicit solve of a midpoint generating-function map, and the map's `step`.

Given S (`generating.GeneratingFunction`), (q', p') solve the fixed-point equations

    q' = q + ∂S/∂p̄ (q̄, p̄),   p' = p − ∂S/∂q̄ (q̄, p̄),   q̄ = (q + q')/2, p̄ = (p + p')/2

written as x = G(x) in the scaled unknowns x = (q', τ p'/m) (both in bohr, so that one
tolerance serves both). `fixed_point` iterates with Anderson acceleration (type II, Walker &
Ni, SIAM J. Numer. Anal. 49, 1715 (2011)): with the residuals r_k = G(x_k) − x_k and the
differences ΔR, ΔG of the last m residuals and G values,

    γ = argmin ‖r_k − ΔR γ‖₂,    x_{k+1} = G(x_k) − ΔG γ

(m = 0 is the plain iteration x_{k+1} = G(x_k), which converges only while ½‖∇²S‖ < 1 in
these units, about ωτ < 2 for the fastest vibration; Anderson also beyond). It stops when
max|r_k| ≤ tol (bohr), and reports non-convergence after `max_iter` evaluations of G or on a
non-finite residual: never silently.

`MidpointMap.step` starts from the direct predictor's guess (one velocity-Verlet step of V
by default, or a map file's learned predictor, `direct.LearnedPredictor`) and, if the solve
does not converge, falls back to `fallback_substeps` velocity-Verlet sub-steps of τ/k with the
anchor potential V alone (symplectic and reversible too, but without the learned correction),
and counts it. With `solve=False` it returns the direct prediction itself (no solve: neither
symplectic nor reversible; the yardstick the maps are compared with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .direct import VerletPredictor, velocity_verlet
from .generating import GeneratingFunction
from .system import System, as_numpy


# tolerance (bohr), iteration cap, Anderson memory, Verlet sub-steps of the fallback: the
# defaults of `MidpointMap` and of `ipi-mts train-map`'s `solver:`. Memory 20 and 100 iterations
# solve the q-TIP4P/F implicit midpoint map at 4 fs in ~40 iterations (58 with memory 5).
SOLVER_DEFAULTS = {"tol": 1e-9, "max_iter": 100, "memory": 20, "fallback_substeps": 4}


@dataclass
class SolveInfo:
    converged: bool
    iterations: int  # evaluations of G
    residual: float  # max |G(x) − x| at the last x tried (bohr); nan if not finite


def fixed_point(g, x0: torch.Tensor, tol: float, max_iter: int = 50, memory: int = 5):
    """x = g(x) for a flat float64 tensor, by Anderson acceleration with `memory` past
    steps (0: plain iteration). Returns (x, SolveInfo); x is g of the last iterate when
    converged, else the last iterate."""
    x = x0
    delta_g, delta_r = [], []
    g_prev = r_prev = None
    residual = math.inf
    for k in range(1, max_iter + 1):
        gx = g(x)
        r = gx - x
        residual = float(r.abs().max())
        if not math.isfinite(residual):
            return x, SolveInfo(False, k, math.nan)
        if residual <= tol:
            return gx, SolveInfo(True, k, residual)
        if memory == 0:
            x = gx
            continue
        if g_prev is not None:
            delta_g.append(gx - g_prev)
            delta_r.append(r - r_prev)
            if len(delta_g) > memory:
                delta_g.pop(0)
                delta_r.pop(0)
        g_prev, r_prev = gx, r
        if delta_g:
            gamma = torch.linalg.lstsq(torch.stack(delta_r, 1), r[:, None]).solution[:, 0]
            x = gx - torch.stack(delta_g, 1) @ gamma
        else:
            x = gx
    return x, SolveInfo(False, max_iter, residual)


class MidpointMap:
    """The map of a generating function S over its stride τ, with solver and fallback.

    `step(q, p, masses, cell, numbers) -> (q', p', info)`, all in i-PI atomic units, float64:
    q, p (n, 3) bohr and a.u. momenta (numpy or torch), masses (n,) electron masses, cell
    i-PI's h (3, 3) bohr with vectors as columns (zeros: no periodicity), numbers (n,) atomic
    numbers. Returns numpy (n, 3) arrays and info = {"converged", "iterations", "residual",
    "fallback"}. `steps` and `fallbacks` count calls and fallbacks. `solve=False`: the direct
    prediction alone (module docstring).
    """

    def __init__(
        self,
        generating: GeneratingFunction,
        predictor=None,
        tol: float = SOLVER_DEFAULTS["tol"],
        max_iter: int = SOLVER_DEFAULTS["max_iter"],
        memory: int = SOLVER_DEFAULTS["memory"],
        fallback_substeps: int = SOLVER_DEFAULTS["fallback_substeps"],
        solve: bool = True,
    ):
        self.generating = generating
        self.solve = bool(solve)
        self.predictor = predictor if predictor is not None else VerletPredictor(generating.potential)
        self.tol, self.max_iter, self.memory = float(tol), int(max_iter), int(memory)
        self.fallback_substeps = int(fallback_substeps)
        self.steps = 0
        self.fallbacks = 0

    @property
    def tau(self) -> float:
        return self.generating.tau

    def step(self, q, p, masses, cell, numbers):
        system = System.from_ipi(masses, cell, numbers)
        q, p = (torch.as_tensor(as_numpy(x), dtype=torch.float64).reshape(-1, 3) for x in (q, p))
        q_new, p_new, info = self.step_system(q, p, system)
        return q_new.numpy(), p_new.numpy(), info

    def equations(self, q: torch.Tensor, p: torch.Tensor, system: System):
        """The implicit equations x = g(x) of one step from (q, p), in the scaled unknowns
        x = (q', τp'/m) (flat, bohr): returns (g, pack, unpack) with pack(q', p') -> x and
        unpack(x) -> (q', p')."""
        scale = self.tau / system.masses[:, None]  # p -> τ p / m, bohr
        n = q.numel()

        def pack(q_new, p_new):
            return torch.cat([q_new.reshape(-1), (p_new * scale).reshape(-1)])

        def unpack(x):
            return x[:n].view_as(q), x[n:].view_as(p) / scale

        def g(x):
            q_new, p_new = unpack(x)
            ds_dq, ds_dp = self.generating.gradients(0.5 * (q + q_new), 0.5 * (p + p_new), system)
            return pack(q + ds_dp, p - ds_dq)

        return g, pack, unpack

    def step_system(self, q: torch.Tensor, p: torch.Tensor, system: System):
        """`step` on float64 tensors and a prepared System; returns tensors."""
        tau = self.tau
        guess = tuple(x.detach() for x in self.predictor(q, p, system, tau))
        if not self.solve:
            self.steps += 1
            return *guess, {"converged": True, "iterations": 0, "residual": math.nan, "fallback": False}
        g, pack, unpack = self.equations(q, p, system)
        x0 = pack(*guess)
        x, solve = fixed_point(g, x0, self.tol, self.max_iter, self.memory)
        self.steps += 1
        info = {"converged": solve.converged, "iterations": solve.iterations, "residual": solve.residual}
        if solve.converged:
            info["fallback"] = False
            return *unpack(x), info
        self.fallbacks += 1
        info["fallback"] = True
        potential = self.generating.potential
        q_new, p_new = velocity_verlet(
            q, p, system.masses, tau, lambda y: system.forces(potential, y), self.fallback_substeps
        )
        return q_new, p_new, info


__all__ = ["MidpointMap", "SOLVER_DEFAULTS", "SolveInfo", "fixed_point"]
