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

Near the parametrisation's limit (ωτ → π for the stiffest vibration) the plain and the
Anderson iteration diverge: G is strongly expansive along the stiff intramolecular modes.
With `newton=True` the iteration runs preconditioned by the molecules' block of the Jacobian,
a quasi-Newton method (`BlockNewton`): with P = I − ∂G/∂x restricted to the coordinates of
each molecule (q' and τp'/m of its atoms; the couplings between molecules, soft, left out),
from finite differences at the initial guess,

    r̃_k = P⁻¹ r_k,   and Anderson as above on (x_k + r̃_k, r̃_k)

while the stopping test stays on the true residual r_k. P costs 6 × (atoms per molecule)
evaluations of G besides G(x_0), which the solve then starts from (18 for water: every
molecule's same coordinate is perturbed at once, which is exact for the blocks up to the
couplings between molecules); it is kept from step to step
and rebuilt when the extra iterations it costs have added up to a rebuild's
(`MidpointMap._newton_solve`). With `blocks='atoms'` each atom's 6 unknowns are a block
(6 evaluations): for a metal, whose stiffness is collective, the on-site part of it
(al-map-32fs: 26 → 16 iterations). With `guess_substeps` = k the initial guess is k
velocity-Verlet sub-steps of the anchor over τ instead of one.

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

from .direct import LearnedPredictor, VerletPredictor, velocity_verlet
from .generating import GeneratingFunction
from .system import System, as_numpy


# tolerance (bohr), iteration cap, Anderson memory, Verlet sub-steps of the fallback and of the
# initial guess, the molecule-block preconditioner: the defaults of `MidpointMap` and of
# `ipi-mts train-map`'s `solver:`. Memory 20 and 100 iterations solve the q-TIP4P/F implicit
# midpoint map at 4 fs in ~40 iterations (58 with memory 5).
SOLVER_DEFAULTS = {"tol": 1e-9, "max_iter": 100, "memory": 20, "fallback_substeps": 4,
                   "guess_substeps": 1, "newton": False, "blocks": "molecules"}
BLOCKS = ("molecules", "atoms")  # the blocks of `newton`: System.molecules, or each atom alone


@dataclass
class SolveInfo:
    converged: bool
    iterations: int  # evaluations of G
    residual: float  # max |G(x) − x| at the last x tried (bohr); nan if not finite


def fixed_point(g, x0: torch.Tensor, tol: float, max_iter: int = 50, memory: int = 5, precondition=None,
                g0: torch.Tensor | None = None):
    """x = g(x) for a flat float64 tensor, by Anderson acceleration with `memory` past
    steps (0: plain iteration), on the residuals r = g(x) − x or, with `precondition`
    (r -> P⁻¹r), on P⁻¹r; converged when max|r| ≤ tol. `g0`: g(x0) if already known (it
    counts as the first of the `max_iter` evaluations). Returns (x, SolveInfo); x is g of the
    last iterate when converged, else the last iterate."""
    x = x0
    delta_g, delta_r = [], []
    g_prev = r_prev = None
    residual = math.inf
    for k in range(1, max_iter + 1):
        gx = g0 if k == 1 and g0 is not None else g(x)
        r = gx - x
        residual = float(r.abs().max())
        if not math.isfinite(residual):
            return x, SolveInfo(False, k, math.nan)
        if residual <= tol:
            return gx, SolveInfo(True, k, residual)
        if precondition is not None:
            r = precondition(r)
            gx = x + r
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


class BlockNewton:
    """r ↦ P⁻¹ r with P = I − ∂g/∂x on each block's unknowns (module docstring), from
    forward differences of g at x: column c of every block at once, one evaluation of g per
    column (`evaluations`). `groups` (n_blocks, k): the atom indices of each block (a molecule,
    or one atom), −1 padded."""

    EPS = 1e-6  # bohr: the forward-difference step

    def __init__(self, g, x: torch.Tensor, gx: torch.Tensor, groups: torch.Tensor):
        n_atoms = x.numel() // 6
        coordinates = (3 * groups[:, :, None] + torch.arange(3)).reshape(len(groups), -1)
        valid = (groups >= 0)[:, :, None].expand(-1, -1, 3).reshape(len(groups), -1)
        self.mask = torch.cat([valid, valid], 1)  # (n_blocks, w): q' then τp'/m
        self.index = torch.cat([coordinates, coordinates + 3 * n_atoms], 1).clamp(min=0)
        w = self.index.shape[1]
        jacobian = torch.zeros(len(groups), w, w, dtype=x.dtype)
        for c in range(w):
            step = torch.zeros_like(x)
            step[self.index[self.mask[:, c], c]] = self.EPS
            jacobian[:, :, c] = (g(x + step) - gx)[self.index] / self.EPS
        jacobian *= self.mask[:, :, None] & self.mask[:, None, :]
        self.lu = torch.linalg.lu_factor(torch.eye(w, dtype=x.dtype) - jacobian)
        self.evaluations, self.size = w, x.numel()
        self.fresh_iterations = self.excess = 0  # MidpointMap's bookkeeping of a kept one

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        blocks = torch.linalg.lu_solve(*self.lu, (r[self.index] * self.mask)[:, :, None])[:, :, 0]
        out = torch.empty_like(r)
        out[self.index[self.mask]] = blocks[self.mask]
        return out


class MidpointMap:
    """The map of a generating function S over its stride τ, with solver and fallback.

    `step(q, p, masses, cell, numbers) -> (q', p', info)`, all in i-PI atomic units, float64:
    q, p (n, 3) bohr and a.u. momenta (numpy or torch), masses (n,) electron masses, cell
    i-PI's h (3, 3) bohr with vectors as columns (zeros: no periodicity), numbers (n,) atomic
    numbers. Returns numpy (n, 3) arrays and info = {"converged", "iterations", "residual",
    "fallback"}. `steps` and `fallbacks` count calls and fallbacks. `solve=False`: the direct
    prediction alone (module docstring). Without a `predictor`, the guess is `guess_substeps`
    velocity-Verlet sub-steps of the anchor; `newton`: the block preconditioner, with `blocks`
    'molecules' or 'atoms'.
    """

    def __init__(
        self,
        generating: GeneratingFunction,
        predictor=None,
        tol: float = SOLVER_DEFAULTS["tol"],
        max_iter: int = SOLVER_DEFAULTS["max_iter"],
        memory: int = SOLVER_DEFAULTS["memory"],
        fallback_substeps: int = SOLVER_DEFAULTS["fallback_substeps"],
        guess_substeps: int = SOLVER_DEFAULTS["guess_substeps"],
        newton: bool = SOLVER_DEFAULTS["newton"],
        blocks: str = SOLVER_DEFAULTS["blocks"],
        solve: bool = True,
    ):
        self.generating = generating
        self.solve = bool(solve)
        if predictor is None:
            predictor = VerletPredictor(generating.potential, guess_substeps)
        self.predictor = predictor
        self.tol, self.max_iter, self.memory = float(tol), int(max_iter), int(memory)
        self.fallback_substeps = int(fallback_substeps)
        self.newton = bool(newton)
        if blocks not in BLOCKS:
            raise ValueError(f"blocks {blocks!r}: choose {' or '.join(BLOCKS)}")
        self.blocks = blocks
        self._newton = None  # the BlockNewton kept from the last step
        self.steps = 0
        self.fallbacks = 0

    @property
    def guess_substeps(self) -> int:
        """Velocity-Verlet sub-steps of the anchor in the initial guess: the predictor's."""
        return self.predictor.substeps

    @guess_substeps.setter
    def guess_substeps(self, substeps: int) -> None:
        if int(substeps) < 1:
            raise ValueError(f"substeps must be >= 1, not {substeps}")
        if isinstance(self.predictor, LearnedPredictor) and int(substeps) != self.predictor.substeps:
            raise ValueError("a learned predictor's Verlet sub-steps are part of its training")
        self.predictor.substeps = int(substeps)

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

    def _newton_solve(self, g, x0, q, system):
        """`fixed_point` preconditioned by a `BlockNewton`, kept from step to step: the
        blocks change slowly, so a kept one costs a few more iterations than a fresh one,
        far fewer than a rebuild. It is rebuilt at x0 when the iterations spent beyond those
        of the solve right after the last rebuild add up to the cost of a rebuild (so that
        neither costs more than twice what the best schedule would), or when a solve with a
        kept one does not converge within the fresh solve's iterations plus a rebuild's cost
        (the step is then solved again from x0 with a fresh one). Returns (x, SolveInfo) with
        every evaluation of g counted."""
        kept = self._newton
        spent = 0
        if kept is not None and kept.size == x0.numel() and kept.excess <= kept.evaluations:
            cap = min(self.max_iter, kept.fresh_iterations + kept.evaluations)
            x, solve = fixed_point(g, x0, self.tol, cap, self.memory, kept)
            if solve.converged:
                kept.excess += max(solve.iterations - kept.fresh_iterations, 0)
                return x, solve
            spent = solve.iterations
        groups = system.molecules(q) if self.blocks == "molecules" else torch.arange(system.n_atoms)[:, None]
        g0 = g(x0)
        fresh = BlockNewton(g, x0, g0, groups)
        x, solve = fixed_point(g, x0, self.tol, self.max_iter, self.memory, fresh, g0)
        fresh.fresh_iterations, fresh.excess = solve.iterations, 0
        self._newton = fresh if solve.converged else None
        return x, SolveInfo(solve.converged, spent + fresh.evaluations + solve.iterations, solve.residual)

    def step_system(self, q: torch.Tensor, p: torch.Tensor, system: System):
        """`step` on float64 tensors and a prepared System; returns tensors."""
        tau = self.tau
        guess = tuple(x.detach() for x in self.predictor(q, p, system, tau))
        if not self.solve:
            self.steps += 1
            return *guess, {"converged": True, "iterations": 0, "residual": math.nan, "fallback": False}
        g, pack, unpack = self.equations(q, p, system)
        x0 = pack(*guess)
        if self.newton:
            x, solve = self._newton_solve(g, x0, q, system)
        else:
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


__all__ = ["BLOCKS", "BlockNewton", "MidpointMap", "SOLVER_DEFAULTS", "SolveInfo", "fixed_point"]
