"""MOLLY's rigid averaging A(q) (potentials/mollified.py): rigid molecules with the same
centre of mass, blind to symmetric stretch and bend, moving with the molecule; its forces are
−∇E(A(q)); bad settings are refused."""

import math
from dataclasses import replace

import pytest
import torch
from ipi.utils.units import Elements

from ipi_mts.benchmarking import MOLLY_WATER, method_xml
from ipi_mts.errors import UserError
from ipi_mts.evaluation import read_trajectory
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.potentials.mollified import RigidMollified, parse_mollify
from ipi_mts.state import State, symbols

WATER = "inputs/water-64/init.xyz"
M_O, M_H = Elements.mass_list["O"], Elements.mass_list["H"]


@pytest.fixture(scope="module")
def water():
    """water-64 with every molecule displaced by a random few hundredths of an Å, and one
    molecule's hydrogens put across the cell's boundary (the nearest image must join them)."""
    state = State.from_ase(read_trajectory(WATER)[:1])
    g = torch.Generator().manual_seed(1)
    positions = state.positions + 0.03 * torch.randn(state.positions.shape, generator=g, dtype=torch.float64)
    positions[1:3] += state.cell[0, 0]
    return replace(state, positions=positions)


def mollified(model="lj", spec=MOLLY_WATER):
    return RigidMollified(load_potential(model) if model == "lj" else load_potential(model, "slow", dtype="float64"),
                          *parse_mollify(spec))


def test_molecules_are_rigid_with_the_same_centre_of_mass(water):
    """Each molecule keeps its own centre of mass: one of them made H2S here."""
    numbers = water.numbers.clone()
    numbers[9] = 16
    water = replace(water, numbers=numbers)
    a = mollified().averaged(water).reshape(-1, 3, 3)
    d = a[:, 1:] - a[:, :1]
    r = torch.linalg.vector_norm(d, dim=-1)
    angle = torch.acos((d[:, 0] * d[:, 1]).sum(-1) / (r[:, 0] * r[:, 1]))
    torch.testing.assert_close(r, torch.full_like(r, 0.963), rtol=0, atol=1e-12)
    torch.testing.assert_close(angle, torch.full_like(angle, math.radians(104.9)), rtol=0, atol=1e-10)
    mass = torch.tensor([Elements.mass_list[s] for s in symbols(numbers.tolist())], dtype=torch.float64)
    mass = mass.reshape(-1, 3, 1)
    q = water.positions.reshape(-1, 3, 3).clone()
    q[0, 1:] -= water.cell[0, 0]  # the split molecule made whole
    torch.testing.assert_close((a * mass).sum(1), (q * mass).sum(1), rtol=0, atol=1e-10)


def test_blind_to_symmetric_stretch_and_bend_and_moves_with_the_molecule(water):
    model = mollified()
    a = model.averaged(water).reshape(-1, 3, 3)
    q = water.positions.reshape(-1, 3, 3)
    d = q[5, 1:] - q[5, :1]
    u = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    n = torch.linalg.cross(u[0], u[1])
    n = n / torch.linalg.vector_norm(n)
    stretch = torch.stack([torch.zeros(3, dtype=torch.float64), 0.04 * u[0], 0.03 * u[1]])
    phi = 0.1  # each bond turned by φ in the plane, the two opposite ways: HOH opens by 2φ
    turned = [dk * math.cos(s) + torch.linalg.cross(n, dk) * math.sin(s) for dk, s in zip(d, (-phi, phi))]
    bend = torch.stack([torch.zeros(3, dtype=torch.float64), turned[0] - d[0], turned[1] - d[1]])
    for move in (stretch, bend):
        move = move - (M_H * (move[1] + move[2]) / (M_O + 2 * M_H))  # the centre of mass kept
        moved = q.clone()
        moved[5] += move
        b = model.averaged(replace(water, positions=moved.reshape(-1, 3))).reshape(-1, 3, 3)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    angle = 0.3  # a rigid motion of molecule 5 moves its rigid image alike
    rot = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]],
                       dtype=torch.float64)
    shift = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    moved = q.clone()
    moved[5] = (q[5] - q[5, 0]) @ rot.T + q[5, 0] + shift
    b = model.averaged(replace(water, positions=moved.reshape(-1, 3))).reshape(-1, 3, 3)
    torch.testing.assert_close(b[5], (a[5] - q[5, 0]) @ rot.T + q[5, 0] + shift, rtol=0, atol=1e-12)
    torch.testing.assert_close(b[6:], a[6:], rtol=0, atol=0)


def test_forces_are_minus_the_gradient_of_the_mollified_energy(water):
    model = load_potential("water-pair-resplit", "slow", dtype="float64", mollify=MOLLY_WATER)
    out = evaluate(model, water)
    g = torch.Generator().manual_seed(2)
    for _ in range(2):
        v = torch.randn(water.positions.shape, generator=g, dtype=torch.float64)
        v /= torch.linalg.vector_norm(v)
        h = 1e-4
        e = [evaluate(model, replace(water, positions=water.positions + s * h * v)).energy.sum() for s in (1, -1)]
        fd = -(e[0] - e[1]) / (2 * h)
        assert float((out.forces * v).sum()) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
    plain = evaluate(load_potential("water-pair-resplit", "slow", dtype="float64"), water)
    assert not torch.allclose(out.forces, plain.forces, atol=1e-3)


@pytest.mark.parametrize("spec", ["rigid:0.96", "rigid:-1:104", "rigid:0.96:190", "flexible:0.96:104", "rigid:a:b"])
def test_bad_settings_are_refused(spec):
    with pytest.raises(UserError, match="mollify takes 'rigid:R0:THETA0'"):
        parse_mollify(spec)


def test_molecules_must_be_central_atom_first_triples(water):
    model = mollified()
    with pytest.raises(UserError, match="X-Y2 in consecutive triples"):
        model.averaged(replace(water, numbers=water.numbers.roll(1)))


def test_molly_methods_mollify_the_slow_forcefield_only():
    models = {"pair": "water-pair-resplit", "reference": "qtip4pf", "conventional": "water-baseline"}
    xml, dt = method_xml("pair:4/0.8:isokinetic:molly", models, WATER, 0.01, "nvt")
    assert dt == 4.0 and xml.count("mollify") == 1
    assert f"component: slow, mollify: {MOLLY_WATER}" in xml
    assert "mollify" not in method_xml("pair:4/0.8:isokinetic", models, WATER, 0.01, "nvt")[0]
