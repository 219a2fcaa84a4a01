"""`ipi-mts train`: config validation, the two co-training stages, the baseline, the
smoothness and bond-response penalties, checkpoints and --resume (tiny models on 24-atom water boxes)."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from ipi_mts.cli import main
from ipi_mts.errors import UserError
from ipi_mts.potentials import evaluate
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential
from ipi_mts.potentials.model_file import load_model
from ipi_mts.state import State
from ipi_mts.training import config_from_dict, load_config, train
from ipi_mts.training.batches import FrameSet, covalent_bonds
from ipi_mts.training.config import TrainConfig
from ipi_mts.training.cotrain import Trainer
from ipi_mts.training.losses import bond_displacement, bond_forces, measure_errors, smoothness_penalty
from ipi_mts.training.toy import toy_water_frames, write_toy_water

ROOT = Path(__file__).resolve().parents[2]
TINY_FAST = dict(cutoff=2.0, num_features=4, lmax=1, num_layers=1, num_basis=4, radial_hidden=8, readout_hidden=8)
TINY_SLOW = dict(cutoff=3.0, num_features=4, lmax=1, num_layers=1, num_basis=4, radial_hidden=8, readout_hidden=8)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_toy_water(tmp_path_factory.mktemp("data") / "toy.extxyz", n_segments=6, seed=3)


def tiny_config(data_file, output, **overrides):
    values = {
        "kind": "pair",
        "output": str(output),
        "threads": 1,
        "batch_size": 2,
        "eval_batch_size": 4,
        "checkpoint_every": 3,
        "data": {"files": [str(data_file)], "split": [0.5, 0.25, 0.25]},
        "models": {"fast": dict(TINY_FAST), "slow": dict(TINY_SLOW)},
        "stages": {
            "fast": {"epochs": None, "steps": 6, "lr": 0.02},
            "joint": {"epochs": None, "steps": 6, "lr": 0.01},
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = values[key] | value
        else:
            values[key] = value
    return config_from_dict(values)


@pytest.fixture(scope="module")
def both(data_file, tmp_path_factory):
    """One `kind: both` training: the pair, then the baseline."""
    out = tmp_path_factory.mktemp("both")
    config = tiny_config(data_file, out, kind="both", loss={"slow_smoothness": 0.5})
    summary = train(config, quiet=True)
    return config, out, summary


# --- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 3}, "unknown key epochs"),
        ({"stages": {"fast": {"epoch": 3}}}, "unknown key stages.fast.epoch"),
        ({"batch_size": "four"}, "batch_size: expected an integer"),
        ({"batch_size": 0}, "batch_size: must be >= 1"),
        ({"kind": "triple"}, "kind: one of pair, single, both"),
        ({"data": {"files": ["x.extxyz"], "split": [0.8, 0.1]}}, "data.split: three fractions"),
        ({"data": {"files": ["x.extxyz"], "split": [0.8, 0.1, 0.0501]}}, "add up to 1"),
        ({"data": {"files": []}}, "data.files: give at least one"),
        ({"models": {"fast": {"cutoff": -1.0}, "slow": {}}}, "models.fast: bad equivariant model config"),
        ({"models": {"fast": {"cutof": 2.0}, "slow": {}}}, "models.fast: unknown equivariant model config keys: cutof"),
        ({"models": {"fast": {"cutoff": 5.0}, "slow": {"cutoff": 3.0}}}, "fast model's cutoff"),
        ({"models": {"fast": {"dtype": "float64"}, "slow": {}}}, "set dtype once"),
        ({"stages": {"joint": {"fast": "sleep"}}}, "stages.joint.fast: one of train, frozen"),
        ({"stages": {"fast": {"lr": -0.1}}}, "stages.fast.lr: must be a positive number"),
        ({"stages": {"fast": {"epochs": None, "steps": None, "minutes": None}}}, "stages.fast: give a budget"),
        ({"loss": {"forces": "lots"}}, "loss.forces: expected a number"),
        ({"loss": {"slow_bond_response": 1.0, "bond_displacement": 0.0}}, "loss.bond_displacement: must be > 0"),
        ({"schedule": {"kind": "linear"}}, "schedule.kind: one of cosine, plateau, constant"),
        ({"device": "tpu"}, "device: auto, cpu, cuda"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(change, message):
    values = {"data": {"files": ["x.extxyz"]}} | change
    with pytest.raises(UserError) as info:
        config_from_dict(values)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_config_defaults_and_partial_sections():
    config = config_from_dict({"data": {"files": "a.extxyz"}, "stages": {"joint": {"fast": "frozen"}}})
    assert config.data.files == ["a.extxyz"]
    assert config.data.split == [0.8, 0.1, 0.1]
    assert config.stages.joint.fast == "frozen"
    assert config.stages.joint.lr == 0.005  # the rest of the section keeps its defaults
    assert config.stages.fast.epochs == 10
    single = config.stages.single_budget()
    assert (single.epochs, single.lr) == (10 + 30, 0.005)  # the pair's budget, joint's lr


def test_documented_yaml_matches_the_defaults():
    import ipi_mts.training.config as module

    block = re.search(r"```yaml\n(.*?)```", module.__doc__, re.S).group(1)
    documented = config_from_dict(yaml.safe_load(block))
    default = config_from_dict({"data": {"files": ["water.extxyz"]}})
    assert documented.to_dict() == default.to_dict()


def test_shipped_water_config_is_valid():
    config = load_config(ROOT / "inputs" / "training" / "water-pair.yaml")
    assert config.kind == "both"
    fast = EquivariantConfig.from_dict(config.models.fast | {"species": (1, 8)})
    slow = EquivariantConfig.from_dict(config.models.slow | {"species": (1, 8)})
    assert fast.cutoff < 2.75 < 4.0 <= slow.cutoff  # no intermolecular O-O in the fast model
    pair_minutes = config.stages.fast.minutes + config.stages.joint.minutes
    assert pair_minutes <= 42.0  # the pair in <= 45 min with data loading and evaluation
    assert config.stages.single_budget().minutes == pair_minutes  # the baseline: same budget


def test_dotted_overrides_reach_into_sections(tmp_path):
    path = ROOT / "inputs" / "training" / "water-pair.yaml"
    config = load_config(path, {"loss.slow_smoothness": 0.02, "stages.joint.minutes": 3, "stages.joint.steps": None})
    assert config.loss.slow_smoothness == 0.02 and config.stages.joint.minutes == 3.0
    assert config.stages.joint.steps is None  # None sets null, as --set KEY=null does
    with pytest.raises(UserError, match="cannot set seed.x: seed is not a section"):
        load_config(path, {"seed.x": 1})
    with pytest.raises(UserError, match="unknown key loss.smoothness"):
        load_config(path, {"loss.smoothness": 0.1})


def test_cli_overrides_leave_absent_flags_and_set_null():
    from ipi_mts.cli import _config_overrides, build_parser

    args = build_parser().parse_args(["train-map", "c.yaml", "--set", "energy_pairs=null", "--set", "train.lr=0.01"])
    assert _config_overrides(args) == {"energy_pairs": None, "train.lr": 0.01}


def test_cli_set_overrides_and_its_errors(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"files": ["a.extxyz"]}}))
    assert main(["train", str(path), "--set", "loss.slow_smoothness=fast"]) == 2
    assert "loss.slow_smoothness: expected a number" in capsys.readouterr().err
    assert main(["train", str(path), "--set", "loss.slow_smoothness"]) == 2
    assert "--set takes KEY=VALUE" in capsys.readouterr().err


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {files: [a.extxyz]\nkind: pair\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"files": ["a.extxyz"]}, "stages": {"fast": {"lr": "fast"}}}))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stages.fast.lr: expected a number" in err


# --- training --------------------------------------------------------------------------------
def test_training_lowers_the_loss(both):
    config, out, summary = both
    history = json.loads((out / "history.json").read_text())
    for task, stage in (("pair", "fast"), ("pair", "joint"), ("single", "single")):
        losses = [s[3] for s in history["steps"] if s[1] == task and s[2] == stage]
        assert len(losses) == 6 if stage != "single" else len(losses) == 12
    fast = [s[3] for s in history["steps"] if s[2] == "fast"]
    assert sum(fast[-2:]) < 0.8 * sum(fast[:2])
    epochs = [e for e in history["epochs"] if e["task"] == "pair"]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    single = [e for e in history["epochs"] if e["task"] == "single"]
    assert single[-1]["val_loss"] < single[0]["val_loss"]


def test_outputs_are_written(both):
    config, out, summary = both
    for name in ("pair.pt", "single.pt", "checkpoint.pt", "losses.png", "history.json", "summary.json", "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["results"].keys() == {"pair", "single"}
    assert config_from_dict(yaml.safe_load((out / "config.yaml").read_text())).to_dict() == config.to_dict()
    meta = load_model(out / "pair.pt").metadata
    assert meta["config"] == config.to_dict()
    assert meta["data"]["n_frames"] == {"train": 6, "validation": 2, "test": 4}
    assert set(meta["training_time_s"]) == {"fast", "joint"}
    assert meta["outer_step_fs"] == 2.0
    assert meta["metrics"]["test"]["n_structures"] == 4
    # the energy offset was refitted: no mean energy error left on the training frames
    assert set(meta["energy_offset_refit_eV"]) == {"1", "8"}
    from ipi_mts.data.dataset import read_frames, split

    train_frames = split(read_frames(config.data.files), tuple(config.data.split))[0]
    frames = FrameSet(train_frames)
    batch = frames.collate(range(len(frames)))
    residual = (batch.energy - evaluate(load_model(out / "pair.pt", dtype="float64"), batch.state).energy) / 24
    assert abs(float(residual.mean())) < 1e-5


def test_pair_file_is_fast_plus_slow_and_holds_the_measured_model(both, data_file):
    config, out, summary = both
    pair = load_model(out / "pair.pt", dtype="float64")
    frames = toy_water_frames(n_segments=1, seed=11)
    from ipi_mts.state import State

    state = State.from_ase(frames)
    full = evaluate(pair, state)
    fast, slow = evaluate(pair.fast, state), evaluate(pair.slow, state)
    torch.testing.assert_close(full.energy, fast.energy + slow.energy)
    torch.testing.assert_close(full.forces, fast.forces + slow.forces)
    assert float(slow.forces.abs().max()) > 0  # stage 2 did train the slow model
    # the errors in the file are those of the saved weights
    trainer_val = summary["results"]["pair"]["validation"]
    from ipi_mts.data.dataset import read_frames, split

    val = split(read_frames(data_file), tuple(config.data.split))[1]
    again = measure_errors(load_model(out / "pair.pt"), FrameSet(val), 4)
    assert again["forces_mae_mev_per_A"] == pytest.approx(trainer_val["forces_mae_mev_per_A"], rel=1e-5)
    assert again["energy_mae_mev_per_atom"] == pytest.approx(trainer_val["energy_mae_mev_per_atom"], rel=1e-5, abs=1e-6)


def test_baseline_has_the_slow_architecture(both):
    config, out, summary = both
    single = load_model(out / "single.pt")
    pair = load_model(out / "pair.pt")
    assert single.config.cutoff == pair.slow.config.cutoff == TINY_SLOW["cutoff"]
    assert single.config.num_features == pair.slow.config.num_features
    assert single.metadata["kind"] == "single"
    assert set(single.metadata["training_time_s"]) == {"single"}


def test_smoothness_penalty_records_during_joint_stage(both):
    config, out, summary = both
    history = json.loads((out / "history.json").read_text())
    joint = [s[6] for s in history["steps"] if s[2] == "joint"]
    fast = [s[6] for s in history["steps"] if s[2] == "fast"]
    assert all(v == 0 for v in fast)
    assert all(v > 0 for v in joint[1:])  # the slow model starts at zero force


def test_slow_model_starts_at_zero_output(data_file, tmp_path):
    trainer = Trainer(tiny_config(data_file, tmp_path / "t"), quiet=True)
    models = trainer._new_models("pair")
    trainer.models = models
    trainer._init_slow(models["fast"], models["slow"])
    state = trainer.train_set.collate([0, 1]).state
    assert float(evaluate(models["slow"], state).forces.abs().max()) == 0.0
    assert float(models["slow"].per_atom_scale) > 0


@pytest.mark.parametrize("mode", ["frozen", "train"])
def test_frozen_fast_model_keeps_its_weights(data_file, tmp_path, mode):
    snapshots = {}

    def callback(event):
        if event["stage"] == "joint" and event["stage_step"] == 1:
            snapshots["fast"] = {k: v.clone() for k, v in trainer.models["fast"].state_dict().items()}

    config = tiny_config(data_file, tmp_path / mode, stages={
        "fast": {"epochs": None, "steps": 3, "lr": 0.02},
        "joint": {"epochs": None, "steps": 4, "lr": 0.01, "fast": mode, "fast_lr_factor": 1.0},
    })
    trainer = Trainer(config, quiet=True, callback=callback)
    trainer.run()
    final = load_model(tmp_path / mode / "pair.pt").fast.state_dict()
    same = all(torch.equal(final[k].to(v.dtype), v) for k, v in snapshots["fast"].items())
    assert same == (mode == "frozen")


def test_smoothness_penalty_zero_for_identical_pairs(tmp_path):
    slow = EquivariantPotential(
        EquivariantConfig(species=(1, 8), avg_num_neighbors=8.0, dtype="float64", **TINY_SLOW), seed=0
    )
    slow.set_scale_shift(1.0, 0.0)
    values = {}
    for identical in (True, False):
        frames = toy_water_frames(n_segments=2, seed=5, identical_pairs=identical)
        for a in frames:
            a.info["trajectory"] = "t"
        data = FrameSet(frames, group_pairs=True)
        batch = data.collate(data.batches(range(len(data.groups)), 4)[0])
        assert batch.pair_first.numel() == 2 * 24  # two pairs of 24 atoms
        forces = evaluate(slow, batch.state, create_graph=True).forces
        penalty = smoothness_penalty(forces, batch.pair_first, batch.pair_second)
        values[identical] = penalty
    assert float(values[True].detach()) == 0.0
    assert float(values[False].detach()) > 0.0
    values[False].backward()  # the penalty trains the slow model
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in slow.parameters())


def test_smoothness_needs_frame_pairs(tmp_path):
    import ase.io

    frames = toy_water_frames(n_segments=4, seed=2)
    for k, a in enumerate(frames):
        a.info["segment"] = k  # no two frames share a segment
    path = tmp_path / "nopairs.extxyz"
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(UserError, match="needs frame pairs"):
        Trainer(tiny_config(path, tmp_path / "o", loss={"slow_smoothness": 1.0}), quiet=True)


def test_bond_displacement_moves_each_bond_apart_by_its_random_vector_with_fixed_centre_of_mass():
    from ase import Atoms

    atoms = Atoms("OHOH", positions=[[0, 0, 0], [0.97, 0, 0], [5, 5, 5], [5, 5.6, 5.8]], cell=[12] * 3, pbc=True)
    bonds, weights = covalent_bonds(atoms)
    assert bonds.tolist() == [[0, 1], [2, 3]]  # O–H, O–H; the 7 Å O···H and O···O are not bonds
    shift = bond_displacement(torch.as_tensor(bonds), torch.as_tensor(weights), 4, 0.03, torch.Generator().manual_seed(4))
    d = 0.03 * torch.randn((2, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(shift[[1, 3]] - shift[[0, 2]], d, rtol=0, atol=1e-15)
    masses = torch.as_tensor(atoms.get_masses())
    torch.testing.assert_close((masses[:, None] * shift).sum(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-14)


def test_bond_forces_are_the_forces_on_the_bonds_relative_coordinates():
    """f_b = −∂E/∂(x_j − x_i) at fixed centre of mass: E(x + Δ(d)) − E(x) ≈ −Σ_b f_b·d_b."""
    from ase import Atoms

    atoms = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[10] * 3, pbc=True)
    bonds, weights = (torch.as_tensor(v) for v in covalent_bonds(atoms))
    slow = EquivariantPotential(
        EquivariantConfig(species=(1, 8), avg_num_neighbors=2.0, dtype="float64", **TINY_SLOW), seed=1
    )
    slow.set_scale_shift(1.0, 0.0)
    state = State.from_ase([atoms], dtype=torch.float64)
    out = evaluate(slow, state)
    f = bond_forces(out.forces.detach(), bonds, weights)
    d = 1e-5 * torch.randn((2, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shift = torch.zeros((3, 3), dtype=torch.float64)
    shift.index_add_(0, bonds[:, 0], weights[:, :1] * d).index_add_(0, bonds[:, 1], weights[:, 1:] * d)
    energy = lambda dx: float(evaluate(slow, dataclasses.replace(state, positions=state.positions + dx)).energy)  # noqa: E731
    assert energy(shift) - energy(-shift) == pytest.approx(-2 * float((f * d).sum()), rel=1e-6)


def slow_response(model_file, frames, seed=0):
    """rms change of the pair's slow force when every bond is moved apart at random."""
    slow = load_model(model_file).slow
    data = FrameSet(frames, bonds=True)
    batch = data.collate(list(range(len(data))))
    before = evaluate(slow, batch.state).forces.detach()
    shift = bond_displacement(batch.bonds, batch.bond_weights, len(before), 0.03, torch.Generator().manual_seed(seed))
    moved = evaluate(slow, dataclasses.replace(batch.state, positions=batch.state.positions + shift)).forces.detach()
    return float(((moved - before) ** 2).mean().sqrt())


def test_bond_response_penalty_makes_the_slow_force_flat_along_the_bonds(data_file, tmp_path):
    frames = toy_water_frames(n_segments=2, seed=11)
    response = {}
    for weight in (0.0, 3000.0):  # the toy's force errors are tens of (eV/Å)², the response's 0.03
        stages = {"fast": {"epochs": None, "steps": 6, "lr": 0.02}, "joint": {"epochs": None, "steps": 40, "lr": 0.01}}
        config = tiny_config(data_file, tmp_path / f"w{weight}", stages=stages, loss={"slow_bond_response": weight})
        summary = train(config, quiet=True)
        response[weight] = slow_response(summary["results"]["pair"]["model_file"], frames)
    assert response[3000.0] < 0.5 * response[0.0], response


def test_bond_force_penalty_keeps_the_slow_force_off_the_bonds(data_file, tmp_path):
    frames = FrameSet(toy_water_frames(n_segments=2, seed=11), bonds=True)
    batch = frames.collate(list(range(len(frames))))
    on_bonds = {}
    for weight in (0.0, 100.0):
        stages = {"fast": {"epochs": None, "steps": 6, "lr": 0.02}, "joint": {"epochs": None, "steps": 40, "lr": 0.01}}
        config = tiny_config(data_file, tmp_path / f"w{weight}", stages=stages, loss={"slow_bond_force": weight})
        slow = load_model(train(config, quiet=True)["results"]["pair"]["model_file"]).slow
        f = bond_forces(evaluate(slow, batch.state).forces.detach(), batch.bonds, batch.bond_weights)
        on_bonds[weight] = float((f**2).mean().sqrt())
    assert on_bonds[100.0] < 0.3 * on_bonds[0.0], on_bonds


def test_bond_penalties_need_covalent_bonds(tmp_path):
    import ase.io

    frames = toy_water_frames(n_segments=4, seed=2)
    for a in frames:
        a.set_cell(a.cell * 3, scale_atoms=True)  # O–H 2.9 Å: no bonds
    path = tmp_path / "nobonds.extxyz"
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(UserError, match="have no covalent bonds"):
        Trainer(tiny_config(path, tmp_path / "o", loss={"slow_bond_force": 1.0}), quiet=True)


# --- checkpoints ------------------------------------------------------------------------------
def test_interrupted_run_resumes_exactly(data_file, tmp_path):
    straight = tiny_config(data_file, tmp_path / "straight")
    train(straight, quiet=True)

    def interrupt(event):
        if event["global_step"] == 8:  # in stage 2, between two checkpoints
            raise KeyboardInterrupt

    config = tiny_config(data_file, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train(config, quiet=True, callback=interrupt)
    ck = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert (ck["stage"], ck["global_step"]) == ("joint", 8)
    with pytest.raises(UserError, match="use --resume|with --resume"):
        train(config, quiet=True)
    train(config, resume=True, quiet=True)

    a = json.loads((tmp_path / "straight" / "history.json").read_text())
    b = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [s[0] for s in b["steps"]] == list(range(1, 13))  # same step count, no repeats
    assert [s[2] for s in b["steps"]] == [s[2] for s in a["steps"]]
    for sa, sb in zip(a["steps"], b["steps"]):
        assert sb[3] == pytest.approx(sa[3], rel=1e-6)  # the loss continues where it was
    wa = load_model(tmp_path / "straight" / "pair.pt").state_dict()
    wb = load_model(tmp_path / "resumed" / "pair.pt").state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_resume_refuses_a_changed_config_or_missing_checkpoint(data_file, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        train(tiny_config(data_file, tmp_path / "none"), resume=True, quiet=True)
    config = tiny_config(data_file, tmp_path / "c", stages={"fast": {"epochs": None, "steps": 2, "lr": 0.02},
                                                          "joint": {"epochs": None, "steps": 1, "lr": 0.01}})
    train(config, quiet=True)
    changed = tiny_config(data_file, tmp_path / "c", stages={"fast": {"epochs": None, "steps": 2, "lr": 0.05},
                                                           "joint": {"epochs": None, "steps": 1, "lr": 0.01}})
    with pytest.raises(UserError, match="stages.fast.lr changed"):
        train(changed, resume=True, quiet=True)
    # a longer budget may be given on resume; a finished task is not trained again
    summary = train(config, resume=True, quiet=True)
    assert summary["results"]["pair"]["model_file"].endswith("pair.pt")


def test_cli_trains(data_file, tmp_path, capsys):
    config = tiny_config(data_file, tmp_path / "cli", stages={"fast": {"epochs": None, "steps": 1, "lr": 0.02},
                                                             "joint": {"epochs": None, "steps": 1, "lr": 0.01}})
    path = tmp_path / "config.yaml"
    values = config.to_dict()
    values["output"] = "ignored"
    path.write_text(yaml.safe_dump(values))
    assert main(["train", str(path), "--output", str(tmp_path / "cli"), "--quiet"]) == 0
    assert "pair.pt" in capsys.readouterr().out
    assert (tmp_path / "cli" / "pair.pt").is_file()
    assert isinstance(load_config(path), TrainConfig)


def test_only_pair_then_the_baseline_on_resume(data_file, tmp_path):
    budget = {"fast": {"epochs": None, "steps": 2, "lr": 0.02}, "joint": {"epochs": None, "steps": 2, "lr": 0.01}}
    config = tiny_config(data_file, tmp_path / "o", kind="both", stages=budget)
    first = train(config, only="pair", quiet=True)
    assert set(first["results"]) == {"pair"} and not (tmp_path / "o" / "single.pt").exists()
    with pytest.raises(UserError, match="--resume"):
        train(config, only="single", quiet=True)
    second = train(config, only="single", resume=True, quiet=True)
    assert set(second["results"]) == {"pair", "single"}
    assert load_model(tmp_path / "o" / "single.pt").metadata["steps"] == 2 + 2  # its own budget
    assert load_model(tmp_path / "o" / "pair.pt").metadata["steps"] == 2 + 2
    with pytest.raises(UserError, match="does not train"):
        train(tiny_config(data_file, tmp_path / "p"), only="single", quiet=True)
