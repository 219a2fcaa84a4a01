"""A test kit that every energy model reuses (in the spirit of nequip's and e3nn's).

Each `assert_*` evaluates a model through `ipi_mts.potentials.evaluate`, as every caller
does, and raises AssertionError with the worst offender when a check fails:

* `assert_forces_match_finite_differences`: F = −∂E/∂r against central differences;
* `assert_virial_matches_finite_strain`: W = −∂E/∂ε against central differences in a
  homogeneous strain of positions and cell, r → r (1 + ε)ᵀ, cell → cell (1 + ε)ᵀ;
* `assert_batch_matches_single`: B structures in one State give what each gives alone;
* `assert_translation_invariant`, `assert_rotation_equivariant`: E invariant, F and W
  rotating as vectors and tensors; `assert_equivariant` adds improper rotations
  (reflections) and translations;
* `assert_permutation_equivariant`: relabelled atoms give the same E and W, permuted F;
* `assert_smooth_at_cutoff`: a dimer crossing the cutoff has a continuous energy and a
  force that vanishes there.

Differences are in float64 whatever the model's dtype. Small builders of test systems
(`water_box`, `lattice_state`) and `concatenate` (States into one batch) come with it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .data.water import oriented_waters, random_rotation
from .potentials.base import EnergyModel, Evaluation, evaluate
from .state import State


# --- building states ------------------------------------------------------------------------
def concatenate(states) -> State:
    """One State holding all the structures of `states`, in order."""
    states = list(states)
    offsets = np.cumsum([0] + [s.n_structures for s in states])[:-1]
    return State(
        positions=torch.cat([s.positions for s in states]),
        numbers=torch.cat([s.numbers for s in states]),
        cell=torch.cat([s.cell for s in states]),
        pbc=torch.cat([s.pbc for s in states]),
        batch=torch.cat([s.batch + int(o) for s, o in zip(states, offsets, strict=True)]),
    )


def split(state: State) -> list[State]:
    """The structures of a batched State, one State each."""
    out = []
    for b in range(state.n_structures):
        mask = state.batch == b
        out.append(
            State(
                positions=state.positions[mask],
                numbers=state.numbers[mask],
                cell=state.cell[b : b + 1],
                pbc=state.pbc[b : b + 1],
                batch=torch.zeros(int(mask.sum()), dtype=torch.long, device=state.batch.device),
            )
        )
    return out


def water_box(
    n_per_side: int = 2,
    spacing: float = 3.1,
    tilt=None,
    jitter: float = 0.05,
    seed: int = 0,
    dtype=torch.float64,
) -> State:
    """n_per_side³ water molecules (O,H,H) on a grid of `spacing` Å (3.1 Å ≈ 1 g/cm³),
    randomly oriented, at the q-TIP4P/F-like geometry r_OH = 0.96 Å, θ = 104.5°, every atom
    then displaced by up to `jitter` Å. `tilt` (3, 3), if given, is added to the identity
    to make a triclinic cell (molecules stay rigid; their centres follow the cell)."""
    rng = np.random.default_rng(seed)
    length = n_per_side * spacing
    cell = length * (
        np.eye(3) + (np.zeros((3, 3)) if tilt is None else np.asarray(tilt, dtype=float))
    )
    grid = np.stack(np.meshgrid(*[np.arange(n_per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    frac = (grid + 0.5 + rng.uniform(-0.1, 0.1, size=grid.shape)) / n_per_side
    positions = oriented_waters(frac @ cell, rng, r_oh=0.96, angle_deg=104.5)
    positions = positions + rng.uniform(-jitter, jitter, size=(3 * len(grid), 3))
    n = len(positions)
    return State(
        positions=torch.as_tensor(positions, dtype=dtype),
        numbers=torch.as_tensor(np.tile([8, 1, 1], n // 3), dtype=torch.long),
        cell=torch.as_tensor(cell[None], dtype=dtype),
        pbc=torch.ones(1, 3, dtype=torch.bool),
        batch=torch.zeros(n, dtype=torch.long),
    )


def lattice_state(
    cell,
    fractional,
    repeat=(1, 1, 1),
    jitter: float = 0.0,
    number: int = 0,
    seed: int = 0,
    dtype=torch.float64,
) -> State:
    """A periodic crystal: atoms at `fractional` coordinates of `cell` (Å, rows), repeated
    `repeat` times, every atom displaced by up to `jitter` Å."""
    rng = np.random.default_rng(seed)
    cell = np.asarray(cell, dtype=float)
    fractional = np.asarray(fractional, dtype=float).reshape(-1, 3)
    images = np.stack(np.meshgrid(*[np.arange(n) for n in repeat], indexing="ij"), -1).reshape(
        -1, 3
    )
    frac = (images[:, None, :] + fractional[None]).reshape(-1, 3)
    positions = frac @ cell + rng.uniform(-jitter, jitter, size=frac.shape)
    n = len(positions)
    return State(
        positions=torch.as_tensor(positions, dtype=dtype),
        numbers=torch.full((n,), number, dtype=torch.long),
        cell=torch.as_tensor((np.diag(repeat) @ cell)[None], dtype=dtype),
        pbc=torch.ones(1, 3, dtype=torch.bool),
        batch=torch.zeros(n, dtype=torch.long),
    )


def replicate(state: State, repeat) -> State:
    """The supercell of a one-structure State: `repeat` (3 ints) copies along the cell
    vectors, atoms ordered image by image (each image keeps the original order)."""
    cell = state.cell[0]
    images = np.stack(np.meshgrid(*[np.arange(n) for n in repeat], indexing="ij"), -1).reshape(
        -1, 3
    )
    shifts = torch.as_tensor(images, dtype=cell.dtype, device=cell.device) @ cell
    positions = (state.positions[None] + shifts[:, None, :]).reshape(-1, 3)
    n = len(positions)
    return State(
        positions=positions,
        numbers=state.numbers.repeat(len(images)),
        cell=(torch.diag(torch.as_tensor(repeat, dtype=cell.dtype, device=cell.device)) @ cell)[
            None
        ],
        pbc=state.pbc[:1].clone(),
        batch=torch.zeros(n, dtype=torch.long, device=state.batch.device),
    )


# --- checks -----------------------------------------------------------------------------------
def _as64(state: State) -> State:
    return replace(state, positions=state.positions.double(), cell=state.cell.double())


def _energy(model: EnergyModel, state: State) -> torch.Tensor:
    with torch.no_grad():
        return model.energy(state).double()


def _report(name: str, got, want, atol: float, rtol: float, where=None):
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    error = (got - want).abs()
    bound = atol + rtol * want.abs()
    if bool((error > bound).any()):
        worst = int(torch.argmax(error - bound))
        label = where[worst] if where is not None else worst
        raise AssertionError(
            f"{name}: {int((error > bound).sum())} of {error.numel()} entries differ; worst at {label}: "
            f"got {got.reshape(-1)[worst].item():.10g}, expected {want.reshape(-1)[worst].item():.10g} "
            f"(|diff| {error.reshape(-1)[worst].item():.3g} > {bound.reshape(-1)[worst].item():.3g})"
        )


def assert_forces_match_finite_differences(
    model: EnergyModel,
    state: State,
    delta: float = 1e-4,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    atoms=None,
    max_atoms: int = 12,
    seed: int = 0,
) -> Evaluation:
    """Forces from `evaluate` against −(E(r + δ) − E(r − δ)) / 2δ (δ in Å) for every
    Cartesian component of `atoms` (default: up to `max_atoms` atoms drawn at random).
    Returns the evaluation."""
    state = _as64(state)
    out = evaluate(model, state)
    n = state.positions.shape[0]
    if atoms is None:
        rng = np.random.default_rng(seed)
        atoms = np.sort(rng.choice(n, size=min(n, max_atoms), replace=False))
    atoms = [int(a) for a in atoms]
    numeric, analytic, where = [], [], []
    for a in atoms:
        b = int(state.batch[a])
        for x in range(3):
            energies = []
            for sign in (1.0, -1.0):
                positions = state.positions.clone()
                positions[a, x] += sign * delta
                energies.append(_energy(model, replace(state, positions=positions))[b])
            numeric.append(-(energies[0] - energies[1]) / (2 * delta))
            analytic.append(out.forces[a, x].detach().double())
            where.append(f"atom {a} axis {'xyz'[x]}")
    _report(
        "forces vs finite differences",
        torch.stack(analytic),
        torch.stack(numeric),
        atol,
        rtol,
        where,
    )
    return out


def strained(state: State, strain: torch.Tensor) -> State:
    """r -> r (1 + ε)ᵀ and cell -> cell (1 + ε)ᵀ, ε (B, 3, 3) per structure."""
    deformation = torch.eye(3, dtype=state.cell.dtype, device=state.cell.device) + strain
    return replace(
        state,
        positions=torch.einsum("ni,nji->nj", state.positions, deformation[state.batch]),
        cell=torch.einsum("bki,bji->bkj", state.cell, deformation),
    )


def assert_virial_matches_finite_strain(
    model: EnergyModel, state: State, delta: float = 1e-5, atol: float = 1e-5, rtol: float = 1e-5
) -> Evaluation:
    """Virial from `evaluate` against −(E(ε_ab = δ) − E(ε_ab = −δ)) / 2δ for all nine
    components of every structure. Returns the evaluation."""
    state = _as64(state)
    out = evaluate(model, state)
    numeric = torch.zeros_like(state.cell)
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1.0, -1.0):
                strain = torch.zeros_like(state.cell)
                strain[:, a, b] = sign * delta
                energies.append(_energy(model, strained(state, strain)))
            numeric[:, a, b] = -(energies[0] - energies[1]) / (2 * delta)
    where = [
        f"structure {s} component {'xyz'[a]}{'xyz'[b]}"
        for s in range(state.n_structures)
        for a in range(3)
        for b in range(3)
    ]
    _report("virial vs finite strain", out.virial.detach().double(), numeric, atol, rtol, where)
    return out


def assert_batch_matches_single(
    model: EnergyModel, states, atol: float = 1e-9, rtol: float = 1e-9
) -> Evaluation:
    """Evaluating `states` (a list of one-structure States, or one batched State) in one
    batch gives each structure's energy, forces and virial alone. Returns the batch's."""
    singles = split(states) if isinstance(states, State) else list(states)
    batch = concatenate(singles)
    together = evaluate(model, batch)
    start = 0
    for b, single in enumerate(singles):
        alone = evaluate(model, single)
        n = single.positions.shape[0]
        _report(
            f"structure {b} energy, batched vs alone",
            together.energy[b : b + 1].detach(),
            alone.energy.detach(),
            atol,
            rtol,
        )
        _report(
            f"structure {b} forces, batched vs alone",
            together.forces[start : start + n].detach(),
            alone.forces.detach(),
            atol,
            rtol,
        )
        _report(
            f"structure {b} virial, batched vs alone",
            together.virial[b : b + 1].detach(),
            alone.virial.detach(),
            atol,
            rtol,
        )
        start += n
    return together


def assert_translation_invariant(
    model: EnergyModel,
    state: State,
    shift=(0.37, -1.21, 2.53),
    atol: float = 1e-8,
    rtol: float = 1e-8,
) -> None:
    """Moving every atom by `shift` (Å) changes neither energy, forces nor virial."""
    before = evaluate(model, state)
    moved = replace(
        state, positions=state.positions + torch.as_tensor(shift, dtype=state.positions.dtype)
    )
    after = evaluate(model, moved)
    _report("energy after a translation", after.energy.detach(), before.energy.detach(), atol, rtol)
    _report("forces after a translation", after.forces.detach(), before.forces.detach(), atol, rtol)
    _report("virial after a translation", after.virial.detach(), before.virial.detach(), atol, rtol)


def assert_rotation_equivariant(
    model: EnergyModel, state: State, seed: int = 0, atol: float = 1e-8, rtol: float = 1e-8
) -> None:
    """Rotating positions and cell by R leaves E unchanged, rotates F to F Rᵀ and the
    virial to R W Rᵀ."""
    rotation = torch.as_tensor(
        random_rotation(np.random.default_rng(seed)), dtype=state.positions.dtype
    )
    before = evaluate(model, state)
    turned = replace(state, positions=state.positions @ rotation.T, cell=state.cell @ rotation.T)
    after = evaluate(model, turned)
    _report("energy after a rotation", after.energy.detach(), before.energy.detach(), atol, rtol)
    _report(
        "forces after a rotation",
        after.forces.detach(),
        (before.forces @ rotation.T).detach(),
        atol,
        rtol,
    )
    _report(
        "virial after a rotation",
        after.virial.detach(),
        (rotation @ before.virial @ rotation.T).detach(),
        atol,
        rtol,
    )


def _random_orthogonal(rng, reflect: bool) -> np.ndarray:
    q = random_rotation(rng)
    return -q if reflect else q  # −R: a rotation times the inversion (det −1)


def assert_equivariant(
    model: EnergyModel,
    state: State,
    seed: int = 0,
    reflect: bool = True,
    atol: float = 1e-8,
    rtol: float = 1e-8,
) -> None:
    """E(3) equivariance: for a random rotation R and, if `reflect`, an improper one −R
    (a reflection combined with a rotation), transforming positions and cell by Q leaves E
    unchanged and gives forces F Qᵀ and virial Q W Qᵀ; a translation changes nothing."""
    rng = np.random.default_rng(seed)
    before = evaluate(model, state)
    for improper in (False, True) if reflect else (False,):
        q = torch.as_tensor(
            _random_orthogonal(rng, improper), dtype=state.positions.dtype, device=state.positions.device
        )
        what = "an improper rotation" if improper else "a rotation"
        after = evaluate(model, replace(state, positions=state.positions @ q.T, cell=state.cell @ q.T))
        _report(f"energy after {what}", after.energy.detach(), before.energy.detach(), atol, rtol)
        _report(f"forces after {what}", after.forces.detach(), (before.forces @ q.T).detach(), atol, rtol)
        _report(
            f"virial after {what}", after.virial.detach(), (q @ before.virial @ q.T).detach(), atol, rtol
        )
    assert_translation_invariant(model, state, atol=atol, rtol=rtol)


def assert_permutation_equivariant(
    model: EnergyModel, state: State, seed: int = 0, atol: float = 1e-8, rtol: float = 1e-8
) -> None:
    """Relabelling the atoms within each structure (a random permutation) leaves energies
    and virials unchanged and permutes the forces alike."""
    gen = torch.Generator().manual_seed(seed)
    order = []
    for b in range(state.n_structures):
        members = (state.batch == b).nonzero().squeeze(-1).cpu()
        order.append(members[torch.randperm(len(members), generator=gen)])
    order = torch.cat(order).to(state.positions.device)
    before = evaluate(model, state)
    after = evaluate(
        model,
        replace(
            state,
            positions=state.positions[order],
            numbers=state.numbers[order],
            batch=state.batch[order],
        ),
    )
    _report("energy after a permutation", after.energy.detach(), before.energy.detach(), atol, rtol)
    _report("forces after a permutation", after.forces.detach(), before.forces[order].detach(), atol, rtol)
    _report("virial after a permutation", after.virial.detach(), before.virial.detach(), atol, rtol)


def dimer(distance: float, numbers=(0, 0), direction=(1.0, 0.0, 0.0), dtype=torch.float64) -> State:
    """Two atoms `distance` Å apart along `direction`, in vacuum (no cell, no pbc)."""
    direction = np.asarray(direction, dtype=float)
    direction = direction / np.linalg.norm(direction)
    return State(
        positions=torch.as_tensor(np.stack([np.zeros(3), distance * direction]), dtype=dtype),
        numbers=torch.as_tensor(list(numbers), dtype=torch.long),
        cell=torch.zeros(1, 3, 3, dtype=dtype),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        batch=torch.zeros(2, dtype=torch.long),
    )


def assert_smooth_at_cutoff(
    model: EnergyModel,
    cutoff: float,
    numbers=(0, 0),
    eps: float = 1e-3,
    atol_energy: float = 1e-7,
    atol_force: float = 1e-5,
    dtype=torch.float64,
) -> None:
    """A dimer of `numbers` crossing the cutoff: the energy is continuous (E(r_c − eps) ≈
    E(r_c + eps) = E at 2 r_c, the atoms apart), the force vanishes as r -> r_c from inside
    (|F(r_c − eps)| ≤ atol_force) and is exactly zero outside; and, so that the check can
    fail, the pair does interact well inside (r = 0.6 r_c)."""
    def run(r):
        out = evaluate(model, dimer(r, numbers, direction=(0.3, -0.5, 0.8), dtype=dtype))
        return out.energy.detach().double().sum(), out.forces.detach().double()

    e_far, _ = run(2.0 * cutoff)
    e_in, f_in = run(cutoff - eps)
    e_out, f_out = run(cutoff + eps)
    e_mid, f_mid = run(0.6 * cutoff)
    _report(f"energy at r_c - {eps:g} Å vs atoms apart", e_in, e_far, atol_energy, 0.0)
    _report(f"energy at r_c + {eps:g} Å vs atoms apart", e_out, e_far, atol_energy, 0.0)
    _report(f"forces at r_c - {eps:g} Å", f_in, torch.zeros_like(f_in), atol_force, 0.0)
    _report(f"forces at r_c + {eps:g} Å", f_out, torch.zeros_like(f_out), 0.0, 0.0)
    if not float(f_mid.abs().max()) > 10 * atol_force or not abs(float(e_mid - e_far)) > 10 * atol_energy:
        raise AssertionError(
            f"the dimer does not interact at 0.6 r_c (|F| {float(f_mid.abs().max()):.3g}, "
            f"ΔE {float(e_mid - e_far):.3g}): the smoothness check would be vacuous"
        )


__all__ = [
    "assert_batch_matches_single",
    "assert_equivariant",
    "assert_permutation_equivariant",
    "assert_smooth_at_cutoff",
    "assert_forces_match_finite_differences",
    "assert_rotation_equivariant",
    "assert_translation_invariant",
    "assert_virial_matches_finite_strain",
    "concatenate",
    "dimer",
    "lattice_state",
    "replicate",
    "split",
    "strained",
    "water_box",
]
