"""The midpoint map through its solver: symplectic, time-reversible, E(3)- and
permutation-equivariant; Anderson against the plain iteration; the reported fallback;
the short-stride limit (velocity Verlet to O(τ³)) and the harmonic breakdown at ωτ = π.
All in float64, i-PI atomic units."""

import math

import ase.build
import pytest
import torch

from ipi_mts import units
from ipi_mts.errors import UserError
from ipi_mts.maps import GeneratingFunction, MidpointMap, System, harmonic_action_factor, velocity_verlet
from ipi_mts.potentials import load_potential

from map_helpers import random_orthogonal, water, water_map


def flat(q, p):
    return torch.cat([torch.as_tensor(q).reshape(-1), torch.as_tensor(p).reshape(-1)])


def omega_matrix(n):
    om = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    om[:n, n:] = torch.eye(n, dtype=torch.float64)
    om[n:, :n] = -torch.eye(n, dtype=torch.float64)
    return om


def test_map_is_symplectic():
    """J of (q, p) -> (q', p') by central differences, in the canonical scaled coordinates
    X = √m q / ℓ, Y = τ p / (√m ℓ) (entries O(1)): JᵀΩJ = Ω to the differencing error,
    while an explicit map from the same S (q' = q + ∂S/∂p, p' = p − ∂S/∂q at the start)
    is off by O(τ²)."""
    q, p, masses, h, numbers = water(2)
    step = water_map(1.0, learned=True)
    system = System.from_ipi(masses, h, numbers)
    n = q.numel()
    ell, delta = 0.5, 1e-3
    scale = torch.cat([
        (ell / masses.sqrt())[:, None].expand(-1, 3).reshape(-1),
        (ell * masses.sqrt() / step.tau)[:, None].expand(-1, 3).reshape(-1),
    ])
    z0 = flat(q, p)

    def implicit(z):
        q1, p1, info = step.step_system(z[:n].view(-1, 3), z[n:].view(-1, 3), system)
        assert info["converged"] and not info["fallback"]
        return flat(q1, p1)

    def explicit(z):
        dq, dp = step.generating.gradients(z[:n].view(-1, 3), z[n:].view(-1, 3), system)
        return z + flat(dp, -dq)

    om = omega_matrix(n)
    defects = {}
    for name, phi in (("implicit", implicit), ("explicit", explicit)):
        columns = []
        for k in range(2 * n):
            e = torch.zeros(2 * n, dtype=torch.float64)
            e[k] = delta * scale[k]
            columns.append((phi(z0 + e) - phi(z0 - e)) / (2 * delta))
        jacobian = torch.stack(columns, 1) / scale[:, None]
        defects[name] = float((jacobian.T @ om @ jacobian - om).abs().max())
        assert float((jacobian - torch.eye(2 * n)).abs().max()) > 0.1  # far from the identity
    print(f"max |JᵀΩJ − Ω|: midpoint map {defects['implicit']:.2e}, explicit {defects['explicit']:.2e}")
    assert defects["implicit"] < 1e-8
    assert defects["explicit"] > 1e-2


def test_map_is_time_reversible():
    """Φ(q', −p') = (q, −p): map, flip the momenta, map, flip."""
    q, p, masses, h, numbers = water(2)
    step = water_map(2.0, learned=True)
    q1, p1, info1 = step.step(q, p, masses, h, numbers)
    q2, p2, info2 = step.step(q1, -p1, masses, h, numbers)
    assert info1["converged"] and info2["converged"]
    assert float((torch.as_tensor(q1) - q).abs().max()) > 0.05  # it moved (bohr)
    assert float((torch.as_tensor(q2) - q).abs().max()) < 1e-11
    assert float((torch.as_tensor(-p2) - p).abs().max()) < 1e-11 * float(p.abs().max())


def test_map_is_equivariant():
    """Rotating (proper and improper), translating, or relabelling the molecules of the
    input transforms the output alike."""
    q, p, masses, h, numbers = water(2)
    step = water_map(1.0, learned=True)
    q1, p1, _ = step.step(q, p, masses, h, numbers)
    q1, p1 = torch.as_tensor(q1), torch.as_tensor(p1)
    pscale = float(p.abs().max())
    for improper in (False, True):
        r = random_orthogonal(5, improper)
        qr, pr, _ = step.step(q @ r.T, p @ r.T, masses, r @ h, numbers)
        assert float((torch.as_tensor(qr) - q1 @ r.T).abs().max()) < 1e-10
        assert float((torch.as_tensor(pr) - p1 @ r.T).abs().max()) < 1e-10 * pscale
    shift = torch.tensor([1.3, -0.4, 2.2], dtype=torch.float64)
    qt, pt, _ = step.step(q + shift, p, masses, h, numbers)
    assert float((torch.as_tensor(qt) - (q1 + shift)).abs().max()) < 1e-10
    assert float((torch.as_tensor(pt) - p1).abs().max()) < 1e-10 * pscale
    order = torch.tensor([3, 4, 5, 0, 1, 2])  # the two molecules swapped (O,H,H order kept)
    order = order[torch.tensor([0, 2, 1, 3, 5, 4])]  # and the H atoms of each swapped
    qp, pp, _ = step.step(q[order], p[order], masses[order], h, numbers[order])
    assert float((torch.as_tensor(qp) - q1[order]).abs().max()) < 1e-10
    assert float((torch.as_tensor(pp) - p1[order]).abs().max()) < 1e-10 * pscale


def test_anderson_needs_fewer_iterations_than_plain_fixed_point():
    q, p, masses, h, numbers = water(2)
    counts = {}
    for timestep in (1.0, 2.0, 3.0):
        for memory in (5, 0):
            step = water_map(timestep, learned=False, tol=1e-12, max_iter=150, memory=memory)
            _, _, info = step.step(q, p, masses, h, numbers)
            counts[timestep, memory] = info["iterations"] if info["converged"] else None
    print("iterations (fs, memory):", counts)
    for timestep in (1.0, 2.0):
        assert counts[timestep, 5] < counts[timestep, 0]
    assert counts[3.0, 5] is not None and counts[3.0, 0] is None  # plain diverges at 3 fs


def test_molecule_newton_solves_where_anderson_diverges():
    """The implicit midpoint rule of q-TIP4P/F water: at 4 fs both solvers reach the same
    solution; at 6 fs (ωτ ≈ 4.4 for the O–H stretch, where Anderson's iterates run away) the
    molecule-block preconditioner converges, and its answer solves the equations."""
    q, p, masses, h, numbers = water(2)
    system = System.from_ipi(masses, h, numbers)
    anderson = water_map(4.0, learned=False, tol=1e-12, memory=20)
    newton = water_map(4.0, learned=False, tol=1e-12, memory=20, newton=True)
    qa, pa, info_a = anderson.step(q, p, masses, h, numbers)
    qn, pn, info_n = newton.step(q, p, masses, h, numbers)
    assert info_a["converged"] and info_n["converged"]
    assert abs(qa - qn).max() < 1e-10 and abs(pa - pn).max() < 1e-10 * float(p.abs().max())
    anderson = water_map(6.0, learned=False, tol=1e-12, memory=20)
    newton = water_map(6.0, learned=False, tol=1e-12, memory=20, newton=True)
    assert not anderson.step(q, p, masses, h, numbers)[2]["converged"]
    qn, pn, info = newton.step(q, p, masses, h, numbers)
    assert info["converged"] and not info["fallback"]
    assert info["iterations"] > 18 + 1  # the Jacobian's 18 columns and at least one iteration count
    g, pack, _ = newton.equations(q, p, system)
    x = pack(torch.as_tensor(qn), torch.as_tensor(pn))
    assert float((g(x) - x).abs().max()) < 1e-11


def test_kept_newton_blocks_save_the_jacobian_and_give_the_same_steps():
    """Three 4 fs steps of q-TIP4P/F water: the block Jacobian is built at the first step
    and kept for the next ones, which then cost fewer evaluations of g in all, and the
    trajectory is Anderson's to the tolerance."""
    q, p, masses, h, numbers = water(2)
    newton = water_map(4.0, learned=False, tol=1e-12, memory=20, newton=True, guess_substeps=4)
    anderson = water_map(4.0, learned=False, tol=1e-12, memory=20)
    qa, pa, qn, pn, counts = q, p, q, p, []
    for _ in range(3):
        qa, pa, _ = anderson.step(qa, pa, masses, h, numbers)
        qn, pn, info = newton.step(qn, pn, masses, h, numbers)
        assert info["converged"]
        counts.append(info["iterations"])
    print("evaluations of g per step:", counts)
    assert counts[0] > 18 + 1 and max(counts[1:]) < 18  # a rebuild alone costs 18
    assert abs(qa - qn).max() < 1e-10 and abs(pa - pn).max() < 1e-10 * float(p.abs().max())


def test_atom_blocks_cut_the_iterations_of_a_metal():
    """The implicit midpoint map of EMT aluminium (32 atoms) at 32 fs: with each atom's block of
    the Jacobian (built once, 6 evaluations) the later steps need fewer evaluations than
    Anderson's, and the trajectory is the same to the tolerance."""
    atoms = ase.build.bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    gen = torch.Generator().manual_seed(11)
    atoms.positions += 0.05 * torch.randn(atoms.positions.shape, generator=gen, dtype=torch.float64).numpy()
    masses = torch.as_tensor(atoms.get_masses()) * units.AMU
    kt = units.energy_to_wire(0.0517)  # 600 K
    p = torch.randn(len(atoms), 3, generator=gen, dtype=torch.float64) * torch.sqrt(masses * kt)[:, None]
    q = torch.as_tensor(units.positions_to_wire(atoms.positions))
    h = torch.as_tensor(units.cell_to_wire(atoms.cell.array))
    potential = load_potential("ase:EMT")
    anderson = MidpointMap(GeneratingFunction(potential, 32.0), tol=1e-10, memory=20)
    blocks = MidpointMap(GeneratingFunction(potential, 32.0), tol=1e-10, memory=20, newton=True, blocks="atoms")
    qa, pa, qb, pb, counts = q, p, q, p, {"anderson": [], "atoms": []}
    for _ in range(3):
        qa, pa, info_a = anderson.step(qa, pa, masses, h, atoms.numbers)
        qb, pb, info_b = blocks.step(qb, pb, masses, h, atoms.numbers)
        assert info_a["converged"] and info_b["converged"]
        counts["anderson"].append(info_a["iterations"])
        counts["atoms"].append(info_b["iterations"])
    print("evaluations of g per step:", counts)
    assert all(b < a for a, b in zip(counts["anderson"][1:], counts["atoms"][1:]))
    assert abs(qa - qb).max() < 1e-8


def test_molecules_are_the_covalently_bonded_groups():
    q, p, masses, h, numbers = water(4)
    order = torch.tensor([4, 0, 11, 2, 7, 1, 9, 3, 6, 10, 5, 8])
    system = System.from_ipi(masses[order], h, numbers[order])
    found = system.molecules(q[order])
    found = {frozenset(order[i].item() for i in row if i >= 0) for row in found}
    assert found == {frozenset(range(3 * k, 3 * k + 3)) for k in range(4)}
    metal = ase.build.bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 1, 1))  # 2.86 Å apart
    aluminium = System.from_ipi(metal.get_masses() * units.AMU, units.cell_to_wire(metal.cell.array), metal.numbers)
    with pytest.raises(UserError, match="covalent bonds join 8 atoms"):
        aluminium.molecules(torch.as_tensor(units.positions_to_wire(metal.positions)), max_atoms=4)


def test_nonconvergence_is_reported_and_falls_back_to_verlet_substeps():
    q, p, masses, h, numbers = water(2)
    step = water_map(1.0, learned=True, max_iter=2, fallback_substeps=4)
    q1, p1, info = step.step(q, p, masses, h, numbers)
    assert info == {"converged": False, "iterations": 2, "residual": info["residual"], "fallback": True}
    assert info["residual"] > step.tol
    assert (step.steps, step.fallbacks) == (1, 1)
    system = System.from_ipi(masses, h, numbers)
    potential = step.generating.potential
    qv, pv = velocity_verlet(q, p, masses, step.tau, lambda x: system.forces(potential, x), 4)
    assert torch.equal(torch.as_tensor(q1), qv) and torch.equal(torch.as_tensor(p1), pv)
    step.max_iter = 100
    step.step(q, p, masses, h, numbers)
    assert (step.steps, step.fallbacks) == (2, 1)


def test_short_stride_limit_agrees_with_velocity_verlet_to_third_order():
    """S = τH (implicit midpoint) and velocity Verlet differ by O(τ³) per step: halving τ
    divides the difference by about 8."""
    q, p, masses, h, numbers = water(2)
    differences = []
    for timestep in (0.4, 0.2, 0.1):
        step = water_map(timestep, learned=False)
        q1, p1, info = step.step(q, p, masses, h, numbers)
        assert info["converged"]
        system = System.from_ipi(masses, h, numbers)
        potential = step.generating.potential
        qv, pv = velocity_verlet(q, p, masses, step.tau, lambda x: system.forces(potential, x))
        # positions in bohr, momenta as the displacement τ_ref p/m they cause over 1 fs
        dp = (torch.as_tensor(p1) - pv) * units.FEMTOSECOND / masses[:, None]
        differences.append(max(float((torch.as_tensor(q1) - qv).abs().max()), float(dp.abs().max())))
    ratios = [a / b for a, b in zip(differences, differences[1:])]
    print("midpoint − Verlet per step:", differences, "ratios", ratios)
    for ratio in ratios:
        assert 6.5 < ratio < 9.5


# --- harmonic oscillator: the midpoint map's phase and its breakdown at ωτ = π -----------------
K_EV = 10.0  # eV/Å², with the mass of H: period ≈ 20 fs
MASS = 1.008 * units.AMU
OMEGA = math.sqrt(K_EV * units.HARTREE_PER_EV / units.BOHR_PER_ANGSTROM**2 / MASS)  # a.u.


def harmonic_phase(omega_tau, timestep_factor=1.0, memory=5):
    """One step of the midpoint map of S = (τ·timestep_factor) H for an isotropic harmonic
    atom; returns (rotation angle in the (√(mω) q, p/√(mω)) plane, info)."""
    tau = omega_tau / OMEGA
    timestep_fs = timestep_factor * tau / units.FEMTOSECOND
    generating = GeneratingFunction(load_potential("harmonic", k=K_EV), timestep_fs)
    step = MidpointMap(generating, tol=1e-12, max_iter=60, memory=memory)
    q = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    p = torch.tensor([[0.5, 0.8, -1.2]], dtype=torch.float64) * MASS * OMEGA * 0.2
    q1, p1, info = step.step(q, p, torch.tensor([MASS], dtype=torch.float64), torch.zeros(3, 3), [1])
    s = math.sqrt(MASS * OMEGA)
    x, y, x1, y1 = q * s, p / s, torch.as_tensor(q1) * s, torch.as_tensor(p1) / s
    angle = math.atan2(float(-(x * y1 - y * x1).sum()), float((x * x1 + y * y1).sum()))
    norm_change = abs(float((x1**2 + y1**2).sum() / (x**2 + y**2).sum()) - 1.0)
    return angle, norm_change, info


def test_implicit_midpoint_rotates_by_twice_arctan_half_omega_tau():
    """S = τH turns phase space by 2 arctan(ωτ/2) per step (the Cayley transform), never
    by π: at ωτ = π it lags the true flow by 36%."""
    for omega_tau in (0.5, 2.0, math.pi):
        angle, norm_change, info = harmonic_phase(omega_tau)
        assert info["converged"]
        assert angle == pytest.approx(2 * math.atan(omega_tau / 2), abs=1e-9)
        assert norm_change < 1e-10
    assert angle / math.pi == pytest.approx(0.639, abs=1e-3)  # the last one, at ωτ = π


def test_exact_harmonic_action_reproduces_the_flow_and_diverges_at_half_a_period():
    """S* = τ · tan(ωτ/2)/(ωτ/2) · H gives the exact flow (rotation by ωτ); its factor grows
    without bound as ωτ -> π, and the plain fixed point gives up long before (ωτ' > 2)."""
    factors = {}
    for omega_tau in (0.5, 1.5, 2.5, 3.0, 3.1):
        factors[omega_tau] = harmonic_action_factor(omega_tau)
        angle, _, info = harmonic_phase(omega_tau, factors[omega_tau])
        assert info["converged"]
        assert angle == pytest.approx(omega_tau, abs=1e-9)
    _, _, plain = harmonic_phase(2.5, factors[2.5], memory=0)
    assert not plain["converged"]
    print("S*/τH at ωτ = 0.5, 1.5, 2.5, 3.0, 3.1:", factors)
    assert factors[0.5] < 1.03 and factors[3.0] > 9 and factors[3.1] > 30


def test_water_oh_stretch_sets_the_breakdown_near_4_fs():
    """ω of q-TIP4P/F's O–H Morse stretch, a √(2D/μ): period ≈ 8.6 fs, so the exact map has
    no midpoint generating function beyond τ = T/2 ≈ 4.3 fs."""
    model = load_potential("qtip4pf")
    k = 2 * model.morse_d * model.morse_a**2 * units.HARTREE_PER_EV / units.BOHR_PER_ANGSTROM**2
    mu = 15.999 * 1.008 / (15.999 + 1.008) * units.AMU
    period_fs = 2 * math.pi / math.sqrt(k / mu) / units.FEMTOSECOND
    print(f"q-TIP4P/F O–H stretch: period {period_fs:.2f} fs, ωτ = π at τ = {period_fs / 2:.2f} fs")
    assert 8.0 < period_fs < 9.5
    with pytest.raises(ValueError):
        harmonic_action_factor(2 * math.pi / period_fs * (period_fs / 2 + 0.01))
