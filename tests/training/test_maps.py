"""`ipi-mts train-map`: the generating-function residual loss, a tiny training on fcc Al
(EMT, 32 atoms) at τ = 16 fs, where the implicit midpoint rule is visibly wrong, the map file,
checkpoints and --resume, config errors. The trajectories are velocity Verlet at 1 fs made in
process (the launcher path of `ipi-mts data trajectories` is tested in tests/data)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk

from ipi_mts import units
from ipi_mts.cli import main
from ipi_mts.errors import UserError
from ipi_mts.data.trajectories import Segment, read_trajectories, write_segments
from ipi_mts.maps import GeneratingFunction, LearnedPredictor, MidpointMap, System, velocity_verlet
from ipi_mts.potentials import load_potential
from ipi_mts.potentials.model_file import ipi_masses, load_map
from ipi_mts.training.maps import (
    energy_errors,
    energy_pairs,
    load_map_config,
    make_pairs,
    map_config_from_dict,
    predictor_error,
    relative_energy_error,
    relative_residual,
    split_segments,
    train_map,
)

STRIDE_FS = 16.0
TINY = dict(cutoff=3.0, num_features=4, lmax=1, num_layers=1, num_basis=4, radial_hidden=8, readout_hidden=8)


def aluminium_segments(n_segments=4, frames=51, seed=0, temperature=600.0):
    """NVE segments of a rattled 32-atom Al box with thermal momenta, 1 fs Verlet, a frame
    every 2 fs."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2))
    masses = np.array(ipi_masses(atoms.numbers)) * units.AMU
    h = units.cell_to_wire(np.array(atoms.cell))
    system = System.from_ipi(masses, h, atoms.numbers)
    emt = load_potential("ase:EMT")
    rng = np.random.default_rng(seed)
    kt = units.energy_to_wire(8.617333e-5 * temperature)
    segments = []
    for s in range(n_segments):
        q = torch.as_tensor(units.positions_to_wire(atoms.positions + rng.normal(0, 0.08, (32, 3))))
        p = torch.as_tensor(rng.normal(size=(32, 3)) * np.sqrt(masses * kt)[:, None])
        qs, ps = [q], [p]
        for _ in range(frames - 1):
            q, p = velocity_verlet(q, p, system.masses, 2 * units.FEMTOSECOND, lambda x: system.forces(emt, x), 2)
            qs.append(q), ps.append(p)
        segments.append(Segment(q=torch.stack(qs).numpy(), p=torch.stack(ps).numpy(), masses=masses,
                                numbers=atoms.numbers.copy(), cell=h, frame_dt_fs=2.0,
                                temperature=temperature, segment=s + 1))
    return segments


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("al") / "al-traj.extxyz"
    write_segments(path, aluminium_segments())
    return path


def config_values(data_file, output, **overrides):
    return {
        "output": str(output), "threads": 1, "seed": 0, "stride_fs": STRIDE_FS, "anchor": "ase:EMT",
        "batch_size": 2, "eval_batch_size": 8, "checkpoint_every": 5, "check_map_pairs": 0,
        "data": {"files": [str(data_file)], "split": [0.5, 0.25, 0.25], "pair_every": 2},
        "model": dict(TINY), "train": {"epochs": None, "steps": 40, "lr": 0.01},
    } | overrides


@pytest.fixture(scope="module")
def trained(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config_values(data_file, out / "train", check_map_pairs=3, train={"steps": 150, "lr": 0.02})))
    assert main(["train-map", str(path), "--quiet"]) == 0
    return out / "train"


def test_segments_round_trip_through_extxyz(data_file):
    segments = read_trajectories(data_file)
    made = aluminium_segments()
    assert len(segments) == 4
    np.testing.assert_allclose(segments[1].q, made[1].q, atol=1e-7)  # extxyz keeps 8 decimals in Å
    np.testing.assert_allclose(segments[1].p, made[1].p, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(segments[1].masses, made[1].masses, rtol=1e-12)


def test_split_is_by_segment(data_file):
    train, val, test = split_segments(read_trajectories(data_file), [0.5, 0.25, 0.25])
    assert [len(x) for x in (train, val, test)] == [2, 1, 1]
    assert not {s.segment for s in train} & {s.segment for s in val + test}


def test_residual_of_the_anchor_is_the_implicit_midpoint_error(data_file):
    """With H_θ = 0 the loss is 1 by construction; and a pair made by the implicit midpoint
    map itself has zero residual (the loss measures the generating-function equations)."""
    segment = read_trajectories(data_file)[0]
    emt = load_potential("ase:EMT")
    pairs = make_pairs([segment], STRIDE_FS, emt, pair_every=10)
    assert relative_residual(pairs, None, STRIDE_FS * units.FEMTOSECOND) == pytest.approx(1.0)
    assert float(pairs.r0_p.abs().max()) > 1e-3  # the midpoint rule is visibly wrong at 16 fs
    midpoint = MidpointMap(GeneratingFunction(emt, STRIDE_FS), tol=1e-12, max_iter=200)
    system = pairs.system[0]
    q2, p2, info = midpoint.step_system(pairs.q[0], pairs.p[0], system)
    assert info["converged"]
    segment.q, segment.p = np.stack([pairs.q[0].numpy(), q2.numpy()]), np.stack([pairs.p[0].numpy(), p2.numpy()])
    segment.frame_dt_fs = STRIDE_FS
    exact = make_pairs([segment], STRIDE_FS, emt)
    assert float(exact.r0_q.abs().max()) < 1e-9 and float(exact.r0_p.abs().max()) < 1e-8


def test_training_lowers_the_loss_and_writes_a_map(trained):
    history = json.loads((trained / "history.json").read_text())
    losses = [row[1] for row in history["steps"]]
    assert len(losses) == 150
    assert np.mean(losses[-20:]) < 0.8 * np.mean(losses[:5])
    assert (trained / "losses.png").stat().st_size > 1000
    midpoint_map = load_map(trained / "map.pt")
    assert midpoint_map.generating.timestep_fs == STRIDE_FS
    assert midpoint_map.generating.correction is not None
    assert midpoint_map.anchor == "ase:EMT" and midpoint_map.species == [13]
    assert midpoint_map.masses[13] == pytest.approx(ipi_masses([13])[0])


def test_learned_correction_beats_the_implicit_midpoint_on_held_out_pairs(trained, data_file):
    """Held-out (test) segment: the learned S has a smaller generating-function residual and
    the solved map lands closer to the reference than the pure anchor S = τH."""
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["test_relative_residual"] < 0.85
    assert summary["test_map_error"]["relative"] < 0.85
    assert summary["test_map_error"]["learned"]["fallbacks"] == 0
    # again from the map file, on the test segment
    learned = load_map(trained / "map.pt")
    test = split_segments(read_trajectories(data_file), [0.5, 0.25, 0.25])[2]
    pairs = make_pairs(test, STRIDE_FS, learned.generating.potential, pair_every=4)
    tau = STRIDE_FS * units.FEMTOSECOND
    ratio = relative_residual(pairs, learned.generating.correction, tau)
    assert ratio == pytest.approx(summary["test_relative_residual"], rel=0.2)
    assert ratio < 0.85


def test_resume_continues_exactly(data_file, tmp_path):
    """A run stopped by Ctrl-C at step 13 (mid-epoch) and resumed ends with the weights of
    an uninterrupted run; a larger budget on --resume trains on."""

    def values(out, steps=24):
        return map_config_from_dict(config_values(data_file, tmp_path / out, train={"steps": steps, "lr": 0.01}))

    def stop(info):
        if info["step"] == 13:
            raise KeyboardInterrupt

    straight = train_map(values("a"), quiet=True)
    with pytest.raises(KeyboardInterrupt):
        train_map(values("b"), quiet=True, callback=stop)
    resumed = train_map(values("b"), resume=True, quiet=True)
    assert resumed["steps"] == straight["steps"] == 24
    a = load_map(tmp_path / "a" / "map.pt").generating.correction.state_dict()
    b = load_map(tmp_path / "b" / "map.pt").generating.correction.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)
    assert train_map(values("b", steps=30), resume=True, quiet=True)["steps"] == 30
    with pytest.raises(UserError, match="exists: continue it with --resume"):
        train_map(values("b"), quiet=True)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stride_fs": 5.0}, "not a positive multiple of the data's frame spacing"),
        ({"stride_fs": 0.0}, "stride_fs: give the map's stride"),
        ({"epochs": 3}, "unknown key epochs"),
        ({"solver": {"tolerance": 1.0}}, "solver: unknown keys tolerance"),
        ({"model": {"cutof": 3.0}}, "model: unknown equivariant model config keys: cutof"),
        ({"energy_weight": -1.0}, "energy_weight: must be >= 0"),
        ({"energy_jacobian": "learned"}, "energy_jacobian: start or anchor, not 'learned'"),
    ],
)
def test_config_errors_are_one_line(data_file, tmp_path, capsys, change, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_values(data_file, tmp_path / "out") | change))
    assert main(["train-map", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_learned_predictor_beats_verlet_and_cuts_solver_iterations(data_file, tmp_path):
    """A finished run resumed with a `predictor:` section trains the direct predictor: on the
    held-out pairs it is closer to the reference than Verlet at the stride, the map file
    carries it, and the map solved from its guess is the map solved from Verlet's (the
    solution does not depend on the guess; the iterations it saves are measured, not
    asserted: at this tolerance ~13 per step either way)."""
    values = config_values(data_file, tmp_path / "run", check_map_pairs=3, train={"steps": 10, "lr": 0.01})
    first = train_map(map_config_from_dict(values), quiet=True)
    assert "predictor" not in first and load_map(tmp_path / "run" / "map.pt").predictor.__class__.__name__ == "VerletPredictor"
    values["predictor"] = {"model": dict(TINY), "steps": 400, "lr": 0.02}
    summary = train_map(map_config_from_dict(values), resume=True, quiet=True)
    assert summary["steps"] == 10  # H_θ was not trained again
    assert summary["predictor"]["steps"] == 400
    assert summary["predictor"]["test_relative_error"] < 0.85
    check = summary["test_map_error"]
    assert check["learned"]["fallbacks"] == check["learned_from_verlet_guess"]["fallbacks"] == 0
    assert check["learned"]["error"] == pytest.approx(check["learned_from_verlet_guess"]["error"], rel=1e-6)
    midpoint_map = load_map(tmp_path / "run" / "map.pt")
    assert isinstance(midpoint_map.predictor, LearnedPredictor)
    assert midpoint_map.predictor.potential is midpoint_map.generating.potential
    test = split_segments(read_trajectories(data_file), [0.5, 0.25, 0.25])[2]
    pairs = make_pairs(test, STRIDE_FS, midpoint_map.generating.potential, pair_every=4)
    error = predictor_error(pairs, midpoint_map.predictor, STRIDE_FS * units.FEMTOSECOND)
    assert error == pytest.approx(summary["predictor"]["test_relative_error"], rel=0.3)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["predictor"]["steps"]) == 400 and history["predictor"]["validation"]


def test_energy_term_follows_the_solved_maps_energy_error(data_file):
    """δH̃ = H(x' + P⁻¹r) − H(x'), with P's atom blocks at the exact end state, tracks the
    energy error of the solved implicit midpoint map across pairs, without a solve."""
    emt = load_potential("ase:EMT")
    pairs = make_pairs(read_trajectories(data_file)[:1], STRIDE_FS, emt, pair_every=5)
    generating = GeneratingFunction(emt, STRIDE_FS)
    energy = energy_pairs(pairs, list(range(len(pairs))), generating, emt, blocks="atoms")
    predicted = energy_errors(pairs, energy, range(len(pairs)), None, generating.tau, emt).numpy()
    np.testing.assert_allclose(predicted, energy.start.numpy(), rtol=1e-12)
    midpoint = MidpointMap(generating, tol=1e-12, max_iter=200, newton=True, blocks="atoms")
    solved = []
    for k in range(len(pairs)):
        system = pairs.system[k]
        q2, p2, info = midpoint.step_system(pairs.q[k], pairs.p[k], system)
        assert info["converged"]
        solved.append(float(system.hamiltonian(emt, q2, p2) - system.hamiltonian(emt, pairs.q_next[k], pairs.p_next[k])))
    assert np.std(solved) > 1e-5  # Hartree: the 16 fs steps' energy errors differ from pair to pair
    assert np.corrcoef(predicted, solved)[0, 1] > 0.9


def test_energy_term_lowers_the_energy_error(trained, data_file, tmp_path):
    """Started from a trained map (`init`), training with a heavy energy term lowers the
    energy errors of held-out pairs; an `init` made for another stride is refused."""
    values = config_values(data_file, tmp_path / "e", init=str(trained / "map.pt"), energy_weight=1.0,
                           energy_pairs=16, solver={"newton": True, "blocks": "atoms"}, train={"steps": 60, "lr": 0.01})
    summary = train_map(map_config_from_dict(values), quiet=True)
    start, end = load_map(trained / "map.pt"), load_map(summary["map_file"])
    emt, tau = start.generating.potential, start.generating.tau
    test = split_segments(read_trajectories(data_file), [0.5, 0.25, 0.25])[2]
    pairs = make_pairs(test, STRIDE_FS, emt, pair_every=4)
    energy = energy_pairs(pairs, list(range(len(pairs))), start.generating, emt, blocks="atoms")
    before = relative_energy_error(pairs, energy, start.generating.correction, tau, emt)
    after = relative_energy_error(pairs, energy, end.generating.correction, tau, emt)
    assert after < 0.7 * before, (before, after)
    # energy_jacobian: anchor, P from τH: the δH̃ is still the learned map's, near the one with P from its S
    anchor = GeneratingFunction(emt, STRIDE_FS)
    anchor_p = energy_pairs(pairs, list(range(len(pairs))), start.generating, emt, blocks="atoms", jacobian=anchor)
    own = energy_pairs(pairs, list(range(len(pairs))), anchor, emt, blocks="atoms").start
    assert (anchor_p.start - energy.start).norm() < 0.1 * (own - energy.start).norm()
    history = json.loads((tmp_path / "e" / "history.json").read_text())["epochs"]
    best = min(history, key=lambda entry: entry["val_loss"])  # its energy share, again from the map
    assert summary["validation_relative_energy_error"] == pytest.approx(best["val_energy"], rel=1e-9)
    assert summary["validation_relative_residual"] == best["val_residual"] < best["val_loss"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_values(data_file, tmp_path / "f", init=str(trained / "map.pt"), stride_fs=8.0)))
    with pytest.raises(UserError, match="stride_fs 8.0 against its 16.0"):
        train_map(map_config_from_dict(yaml.safe_load(path.read_text())), quiet=True)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "inputs" / "training").glob("*-map-*.yaml")),
                         ids=lambda p: p.name)
def test_the_shipped_map_configs_are_valid(path):
    config = load_map_config(path)
    assert config.stride_fs > 0 and config.data.files
