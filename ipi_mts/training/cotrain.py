"""Co-training a fast/slow pair of learned potentials, and the single-model baseline.

Fu, Musaelian, Johansson, Jaakkola, Kozinsky, "Learning Interatomic Potentials at Multiple
Scales" (arXiv 2310.13756): E = E_fast + E_slow, the fast model (short cutoff, small) is
evaluated at every inner MTS step, the slow one (long cutoff, larger) at every outer step.

The procedure (`ipi-mts train CONFIG.yaml`, the config in `training.config`):

Stage 1, "fast": the fast model alone is fitted to the *total* reference energies and
  forces. With a cutoff of ~2 Å it sees only the covalent bonds and the closest contacts, so
  it can represent only the stiff short-range part of the surface; that part carries most
  of the force variance and all of the fast (intramolecular) vibrations, so this is what it
  learns. No physical split of the reference (intra/inter, bonded/non-bonded) is needed:
  the split comes from the cutoffs alone, so the same procedure works on DFT data, where
  no such split exists.
Stage 2, "joint": the slow model is added and fast + slow is fitted to the same total
  energies and forces; the fast model keeps learning at `fast_lr_factor` × lr (or stays
  frozen, `stages.joint.fast: frozen`). The slow model starts at exactly zero output (its
  last readout layer is zeroed; its per-atom scale, shift and reference energies are set
  from the residual of the stage-1 fast model), so stage 2 starts where stage 1 ended. With
  `loss.slow_smoothness` λ > 0, λ·mean |F_slow(x_t+Δ) − F_slow(x_t)|² over the data's frame
  pairs (Δ = one outer step) pushes the slow force to vary slowly along trajectories, and
  with `loss.slow_bond_response` λ > 0, λ·mean |F_slow(x + Δ) − F_slow(x)|², Δ moving every
  covalent bond's atoms apart at random (`training.losses`), not to follow the bonded atoms'
  relative motion; with `loss.slow_bond_force` λ > 0, λ·mean |f_b|², f_b its force on each
  bond's relative coordinate, not to act on it.
Baseline, "single": one model with the slow architecture (or `models.single`), the same data
  and, by default, the budget of both pair stages together (`kind: single` or `both`).

Per-species reference energies are fitted by least squares on the training energies, the
per-atom scale is the RMS of the training forces, avg_num_neighbors is measured on the
training structures. Loss: energy per atom + force MSE (`training.losses`), Adam, a cosine
(or plateau) learning-rate schedule per stage. Every epoch is validated; the model file
keeps the weights with the lowest validation loss of the final stage, and (with
`refit_energy_offset`) per-species energies refitted by least squares to the remaining
training-energy residual, since a force-dominated loss pins the constant offset loosely. The output folder
holds `checkpoint.pt` (models, optimizer, schedule, shuffling state and position, every
`checkpoint_every` steps, after every epoch and on Ctrl-C; `--resume` continues from it
exactly), `pair.pt` / `single.pt` (`potentials.model_file`), `history.json`,
`losses.png`, `summary.json` and the resolved `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..potentials import evaluate
from ..potentials.equivariant import (
    EquivariantConfig,
    EquivariantPotential,
    average_num_neighbors,
    fit_reference_energies,
)
from ..potentials.base import pick_device
from ..potentials.model_file import atomic_save, save_model
from ..potentials.pair import LearnedPair
from .batches import FrameSet, spread
from .config import StageConfig, TrainConfig
from .losses import bond_displacement, bond_forces, energy_force_loss, measure_errors, smoothness_penalty

CHECKPOINT_FORMAT = "ipi-mts-checkpoint"
CHECKPOINT_VERSION = 1
TASK_STAGES = {"pair": ("fast", "joint"), "single": ("single",)}
TASK_MODELS = {"pair": ("fast", "slow"), "single": ("single",)}
# config keys that may change between a run and its --resume
RESUMABLE = {"device", "threads", "checkpoint_every", "eval_batch_size", "output"}
RESUMABLE_STAGE_KEYS = {"epochs", "steps", "minutes"}


# --- small helpers ------------------------------------------------------------------------------
def _write_json(path: Path, value):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not key.startswith("models."):
            out |= _flatten(v, key + ".")
        else:
            out[key] = v
    return out


def _state_dict(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def read_checkpoint(path: Path, config: dict, resumable=RESUMABLE, budget_prefix="stages.") -> dict:
    """The training checkpoint at `path`, refused (UserError) if missing, unreadable, newer,
    or written with a config that differs from `config` in a key that may not change on
    --resume (all but `resumable` top-level keys and the budgets under `budget_prefix`)."""
    if not path.exists():
        raise UserError(f"nothing to resume: {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for unreadable files
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an ipi-mts training checkpoint")
    if ck.get("version", 0) > CHECKPOINT_VERSION:
        raise UserError(f"{path} was written by a newer ipi-mts")
    old, new = _flatten(ck["config"]), _flatten(config)
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key) or key.split(".")[0] in resumable:
            continue
        if key.startswith(budget_prefix) and key.split(".")[-1] in RESUMABLE_STAGE_KEYS:
            continue
        raise UserError(
            f"cannot resume {path}: config key {key} changed ({old.get(key)!r} -> {new.get(key)!r})"
        )
    return ck


class Schedule:
    """Learning-rate factor of one stage: linear warm-up, then cosine over the budget (the
    largest used fraction of its epochs, steps or minutes), plateau or constant."""

    def __init__(self, config, budget: StageConfig):
        self.config = config
        self.budget = budget
        self.level = 0  # plateau: times reduced
        self.best = math.inf
        self.bad_epochs = 0

    def progress(self, stage_step, epochs_done, elapsed_s) -> float:
        fractions = [0.0]
        if self.budget.steps:
            fractions.append(stage_step / self.budget.steps)
        if self.budget.epochs:
            fractions.append(epochs_done / self.budget.epochs)
        if self.budget.minutes:
            fractions.append(elapsed_s / (60.0 * self.budget.minutes))
        return min(max(fractions), 1.0)

    def factor(self, stage_step, epochs_done, elapsed_s) -> float:
        c = self.config
        warm = min(1.0, (stage_step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        if c.kind == "cosine":
            p = self.progress(stage_step, epochs_done, elapsed_s)
            f = c.min_lr_factor + (1.0 - c.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * p))
        elif c.kind == "plateau":
            f = max(c.factor**self.level, c.min_lr_factor)
        else:
            f = 1.0
        return warm * f

    def epoch_end(self, val_loss: float):
        if val_loss < self.best * (1.0 - 1e-4):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.config.patience:
                self.level += 1
                self.bad_epochs = 0

    def state_dict(self):
        return {"level": self.level, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, d):
        self.level, self.best, self.bad_epochs = int(d["level"]), float(d["best"]), int(d["bad_epochs"])


# --- the trainer ----------------------------------------------------------------------------
class Trainer:
    """One `ipi-mts train` run: data, models, stages, checkpoints, outputs."""

    def __init__(self, config: TrainConfig, resume: bool = False, quiet: bool = False, callback=None):
        self.config = config
        self.quiet = quiet
        self.callback = callback
        self.out = Path(config.output)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.device = pick_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.checkpoint = self._load_checkpoint() if resume else None
        if not resume and self.checkpoint_path.exists():
            raise UserError(
                f"{self.checkpoint_path} exists: continue it with --resume, or choose another output"
            )
        self._load_data()
        if self.checkpoint is not None and self.checkpoint["data"] != self.data_summary:
            then, now = self.checkpoint["data"], self.data_summary
            what = (
                f"files {then['files']} then, {now['files']} now" if then["files"] != now["files"]
                else f"{then['n_frames']} frames then, {now['n_frames']} now"
            )
            raise UserError(f"the data differ from those of {self.checkpoint_path} ({what})")
        self.history = self.checkpoint["history"] if self.checkpoint else {"steps": [], "epochs": []}
        self.completed = list(self.checkpoint["completed"]) if self.checkpoint else []
        self.results = dict(self.checkpoint.get("results", {})) if self.checkpoint else {}
        self.global_step = int(self.checkpoint["global_step"]) if self.checkpoint else 0
        self.models: dict[str, EquivariantPotential] = {}
        self._plotted_at = time.monotonic()  # losses.png: once a minute, and at the end

    # --- data -----------------------------------------------------------------------------------
    def _load_data(self):
        from ..data.dataset import read_frames, split

        c = self.config
        frames = read_frames(c.data.files)
        train, val, test = split(frames, tuple(c.data.split))
        if not train or not val:
            raise UserError(
                f"the split {c.data.split} of {len(frames)} frames leaves no training or "
                "validation frames: give more data"
            )
        if c.data.max_train_frames is not None and len(train) > c.data.max_train_frames:
            train = self._fewer(train, c.data.max_train_frames)
        self.species = tuple(sorted({int(z) for a in frames for z in a.numbers}))
        pairs = c.loss.slow_smoothness > 0 and c.trains_pair
        bonds = (c.loss.slow_bond_response > 0 or c.loss.slow_bond_force > 0) and c.trains_pair
        self.train_set = FrameSet(train, self.device, group_pairs=pairs, bonds=bonds)
        self.val_set = FrameSet(val, self.device)
        self.test_set = FrameSet(test, self.device) if test else None
        if bonds and not any(len(f.bonds) for f in self.train_set.frames):
            raise UserError("loss.slow_bond_*: the training frames have no covalent bonds")
        if pairs and self.train_set.n_pairs == 0:
            raise UserError(
                "loss.slow_smoothness needs frame pairs (frames sharing an info 'segment', one "
                "outer step apart, as `ipi-mts data generate` writes); the data have none"
            )
        offsets = {float(a.info["pair_offset_fs"]) for a in frames if "pair_offset_fs" in a.info}
        self.pair_offset_fs = offsets.pop() if len(offsets) == 1 else None
        self.data_summary = {
            "files": [str(Path(f).resolve()) for f in c.data.files],
            "split": list(c.data.split),
            "n_frames": {"train": len(train), "validation": len(val), "test": len(test)},
        }

    @staticmethod
    def _fewer(frames, n):
        groups: dict = {}
        for a in frames:
            groups.setdefault((a.info.get("trajectory"), a.info.get("segment", id(a))), []).append(a)
        groups = list(groups.values())
        per_group = max(1.0, len(frames) / len(groups))
        kept = spread(groups, max(1, int(n // per_group)))
        return [a for g in kept for a in g]

    # --- models ---------------------------------------------------------------------------------
    def _model_config(self, values: dict) -> EquivariantConfig:
        values = dict(values)
        given = values.get("species")
        values["species"] = tuple(given) if given else self.species
        values["dtype"] = self.config.dtype
        config = EquivariantConfig.from_dict(values)
        missing = sorted(set(self.species) - set(config.species))
        if missing:
            raise UserError(f"models: species {list(config.species)} lack Z={missing}, present in the data")
        if "avg_num_neighbors" not in values:
            states = [f.state for f in spread(self.train_set.frames, 20)]
            config = dataclasses.replace(
                config, avg_num_neighbors=max(average_num_neighbors(states, config.cutoff), 1e-3)
            )
        return config

    def _architectures(self, task) -> dict[str, EquivariantConfig]:
        m = self.config.models
        if task == "pair":
            return {"fast": self._model_config(m.fast), "slow": self._model_config(m.slow)}
        return {"single": self._model_config(m.single if m.single is not None else m.slow)}

    def _new_models(self, task):
        seeds = {"fast": self.config.seed, "slow": self.config.seed + 1, "single": self.config.seed + 1}
        models = {}
        for name, cfg in self._architectures(task).items():
            models[name] = EquivariantPotential(cfg, seed=seeds[name]).to(self.device)
        first = models["fast"] if task == "pair" else models["single"]
        self._init_statistics(first)
        return models

    def _init_statistics(self, model):
        """Reference energies by least squares, shift = mean residual energy per atom, scale =
        RMS of the training forces."""
        frames = self.train_set.frames
        numbers = [f.state.numbers.cpu().numpy() for f in frames]
        energies = np.array([f.energy for f in frames])
        model.fit_reference_energies(numbers, energies)
        ref = fit_reference_energies(numbers, energies, model.species)
        column = {z: k for k, z in enumerate(model.species)}
        residual = [
            (e - sum(ref[column[int(z)]] for z in n)) / len(n) for e, n in zip(energies, numbers)
        ]
        forces = torch.cat([f.forces for f in frames])
        scale = float(torch.sqrt((forces**2).mean()))
        model.set_scale_shift(scale=max(scale, 1e-6), shift=float(np.mean(residual)))

    def _init_slow(self, fast, slow):
        """The slow model starts at zero output, with scale, shift and reference energies
        from the residual of the fast model on (up to 64) training frames."""
        frames = spread(self.train_set.frames, 64)
        numbers, residual_e, residual_f = [], [], []
        for f in frames:
            out = evaluate(fast, f.state)
            numbers.append(f.state.numbers.cpu().numpy())
            residual_e.append(f.energy - float(out.energy[0]))
            residual_f.append((f.forces - out.forces.detach().double()).cpu())
        ref = fit_reference_energies(numbers, np.array(residual_e), slow.species)
        slow.set_reference_energies(ref)
        column = {z: k for k, z in enumerate(slow.species)}
        shift = np.mean(
            [(e - sum(ref[column[int(z)]] for z in n)) / len(n) for e, n in zip(residual_e, numbers)]
        )
        scale = float(torch.sqrt((torch.cat(residual_f) ** 2).mean()))
        slow.set_scale_shift(scale=max(scale, 1e-6), shift=float(shift))
        with torch.no_grad():
            last = slow.readout[-1]
            last.weight.zero_()
            last.bias.zero_()

    # --- checkpoints ----------------------------------------------------------------------------
    def _load_checkpoint(self):
        return read_checkpoint(self.checkpoint_path, self.config.to_dict())

    def _save_checkpoint(self, task, stage, position, optimizer, schedule, best, generator, stage_done=False):
        ck = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "data": self.data_summary,
            "completed": list(self.completed),
            "results": self.results,
            "global_step": self.global_step,
            "task": task,
            "stage": stage,
            "stage_done": stage_done,
            "models": {
                name: {"config": m.config.to_dict(), "weights": _state_dict(m)}
                for name, m in self.models.items()
            },
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "schedule": schedule.state_dict() if schedule is not None else {},
            "position": position,
            "best": best,
            "generator": generator.get_state() if generator is not None else torch.zeros(0, dtype=torch.uint8),
            "history": self.history,
            "times": dict(getattr(self, "times", {})),
        }
        atomic_save(ck, self.checkpoint_path)

    # --- one step, one validation ---------------------------------------------------------------
    def _predict(self, stage, batch, create_graph, fast_cache=None):
        """(energy, forces, slow forces or None) of the stage's model on a batch."""
        if stage == "fast":
            out = evaluate(self.models["fast"], batch.state, create_graph=create_graph)
            return out.energy, out.forces, None
        if stage == "single":
            out = evaluate(self.models["single"], batch.state, create_graph=create_graph)
            return out.energy, out.forces, None
        slow = evaluate(self.models["slow"], batch.state, create_graph=create_graph)
        if fast_cache is not None:
            e_fast, f_fast = self._cached_fast(batch, fast_cache)
        else:
            out = evaluate(self.models["fast"], batch.state, create_graph=create_graph)
            e_fast, f_fast = out.energy, out.forces
        return e_fast + slow.energy, f_fast + slow.forces, slow.forces

    def _cached_fast(self, batch, cache):
        missing = [k for k in batch.frames if k not in cache]
        if missing:
            part = self.train_set.collate(missing)
            out = evaluate(self.models["fast"], part.state)
            n = [self.train_set.frames[k].state.positions.shape[0] for k in missing]
            for k, e, f in zip(missing, out.energy.detach(), torch.split(out.forces.detach(), n)):
                cache[k] = (e, f)
        return (
            torch.stack([cache[k][0] for k in batch.frames]),
            torch.cat([cache[k][1] for k in batch.frames]),
        )

    def _validation_model(self, stage):
        if stage == "joint":
            return LearnedPair(self.models["fast"], self.models["slow"])
        return self.models[stage]

    def _validate(self, stage) -> dict:
        model = self._validation_model(stage)
        metrics = measure_errors(model, self.val_set, self.config.eval_batch_size)
        metrics["loss"] = self._loss_from(metrics)
        return metrics

    def _loss_from(self, metrics) -> float:
        w = self.config.loss
        return (
            w.energy_per_atom * (metrics["energy_rmse_mev_per_atom"] / 1000.0) ** 2
            + w.forces * (metrics["forces_rmse_mev_per_A"] / 1000.0) ** 2
        )

    # --- a stage --------------------------------------------------------------------------------
    def _stage_budget(self, stage) -> StageConfig:
        s = self.config.stages
        return {"fast": s.fast, "joint": s.joint, "single": s.single_budget()}[stage]

    def _param_groups(self, stage, lr):
        if stage == "fast":
            return [{"params": list(self.models["fast"].parameters()), "lr": lr, "base_lr": lr}]
        if stage == "single":
            return [{"params": list(self.models["single"].parameters()), "lr": lr, "base_lr": lr}]
        joint = self.config.stages.joint
        groups = [{"params": list(self.models["slow"].parameters()), "lr": lr, "base_lr": lr}]
        if joint.fast == "train":
            f_lr = lr * joint.fast_lr_factor
            groups.append({"params": list(self.models["fast"].parameters()), "lr": f_lr, "base_lr": f_lr})
        return groups

    def _run_stage(self, task, stage, resume_state=None):
        c = self.config
        budget = self._stage_budget(stage)
        frozen = stage == "joint" and c.stages.joint.fast == "frozen"
        if "fast" in self.models:
            for p in self.models["fast"].parameters():
                p.requires_grad_(not frozen)
        optimizer = torch.optim.Adam(self._param_groups(stage, budget.lr))
        schedule = Schedule(c.schedule, budget)
        generator = torch.Generator().manual_seed(
            c.seed * 1000 + {"fast": 1, "joint": 2, "single": 3}[stage]
        )
        position = {
            "epoch": 0, "batch": 0, "stage_step": 0, "elapsed_s": 0.0, "order": None,
            "epoch_loss": [0.0, 0], "validated_at": -1,
        }
        best = {"loss": math.inf, "weights": {}, "epoch": -1, "metrics": {}}
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            schedule.load_state_dict(resume_state["schedule"])
            generator.set_state(resume_state["generator"])
            position = dict(resume_state["position"])
            best = resume_state["best"]
        w = c.loss
        smooth_weight = w.slow_smoothness if stage == "joint" else 0.0
        bond_weight = w.slow_bond_response if stage == "joint" else 0.0
        bond_force_weight = w.slow_bond_force if stage == "joint" else 0.0
        fast_cache = {} if frozen else None
        n_groups = len(self.train_set.groups)
        started = time.perf_counter() - float(position["elapsed_s"])

        def elapsed():
            return time.perf_counter() - started

        def out_of_budget(epoch_boundary=False):
            if budget.steps is not None and position["stage_step"] >= budget.steps:
                return True
            if budget.minutes is not None and elapsed() >= 60.0 * budget.minutes:
                return True
            return budget.epochs is not None and position["epoch"] >= budget.epochs

        def save(done=False):
            position["elapsed_s"] = elapsed()
            self._save_checkpoint(task, stage, position, optimizer, schedule, best, generator, done)

        def validate():
            metrics = self._validate(stage)
            position["validated_at"] = position["stage_step"]
            total, count = position["epoch_loss"]
            entry = {
                "task": task, "stage": stage, "epoch": position["epoch"],
                "stage_step": position["stage_step"], "global_step": self.global_step,
                "time_s": round(elapsed(), 3), "lr": optimizer.param_groups[0]["lr"],
                "train_loss": total / count if count else None,
                **{f"val_{k}": v for k, v in metrics.items()},
            }
            self.history["epochs"].append(entry)
            position["epoch_loss"] = [0.0, 0]
            if metrics["loss"] < best["loss"]:
                best.update(
                    loss=metrics["loss"], epoch=position["epoch"], metrics=metrics,
                    weights={n: _state_dict(m) for n, m in self.models.items()},
                )
            schedule.epoch_end(metrics["loss"])
            self._log(
                f"{task}/{stage} epoch {position['epoch']} step {position['stage_step']}: "
                f"train loss {entry['train_loss'] if count else float('nan'):.4g}, val loss {metrics['loss']:.4g}, "
                f"E MAE {metrics['energy_mae_mev_per_atom']:.3f} meV/atom, "
                f"F MAE {metrics['forces_mae_mev_per_A']:.1f} meV/Å, {elapsed():.0f} s"
            )
            return metrics

        def one_step(batch_indices):
            lr_factor = schedule.factor(
                position["stage_step"],
                position["epoch"] + position["batch"] / max(n_batches, 1),
                elapsed(),
            )
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor
            batch = self.train_set.collate(batch_indices)
            energy, forces, slow_forces = self._predict(stage, batch, True, fast_cache)
            loss, l_e, l_f = energy_force_loss(energy, forces, batch, w.energy_per_atom, w.forces)
            smooth = (
                smoothness_penalty(slow_forces, batch.pair_first, batch.pair_second)
                if smooth_weight > 0 and slow_forces is not None
                else torch.zeros((), dtype=torch.float64)
            )
            bonded = torch.zeros((), dtype=torch.float64)  # the bond penalties, weighted
            if bond_weight > 0:
                shift = bond_displacement(
                    batch.bonds, batch.bond_weights, len(slow_forces), w.bond_displacement, generator
                )
                moved = dataclasses.replace(batch.state, positions=batch.state.positions + shift)
                moved_forces = evaluate(self.models["slow"], moved, create_graph=True).forces
                bonded = bonded + bond_weight * ((moved_forces - slow_forces) ** 2).mean().to(torch.float64)
            if bond_force_weight > 0:
                on_bonds = bond_forces(slow_forces, batch.bonds, batch.bond_weights)
                bonded = bonded + bond_force_weight * (on_bonds**2).mean().to(torch.float64)
            total = loss + smooth_weight * smooth + bonded
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            position["batch"] += 1
            position["stage_step"] += 1
            self.global_step += 1
            value = float(total.detach())
            position["epoch_loss"][0] += value
            position["epoch_loss"][1] += 1
            self.history["steps"].append(
                [self.global_step, task, stage, value, float(l_e.detach()), float(l_f.detach()), float(smooth.detach()),
                 optimizer.param_groups[0]["lr"], float(bonded.detach())]
            )
            return value

        from tqdm import tqdm

        n_batches = 0
        done = resume_state is not None and resume_state.get("stage_done")
        try:
            while not done and not out_of_budget():
                if position["order"] is None:
                    position["order"] = torch.randperm(n_groups, generator=generator)
                    position["batch"] = 0
                batches = self.train_set.batches(position["order"].tolist(), c.batch_size)
                n_batches = len(batches)
                bar = tqdm(
                    total=n_batches, initial=position["batch"], leave=False, file=sys.stderr,
                    desc=f"{task}/{stage} epoch {position['epoch'] + 1}", disable=self.quiet,
                )
                stopped = False
                while position["batch"] < n_batches:
                    if out_of_budget():
                        stopped = True
                        break
                    value = one_step(batches[position["batch"]])
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.3g}", refresh=False)
                    if self.callback is not None:
                        self.callback({"task": task, "stage": stage, "global_step": self.global_step,
                                       "stage_step": position["stage_step"], "loss": value})
                    if self.global_step % c.checkpoint_every == 0:
                        save()
                bar.close()
                if not stopped:
                    position["epoch"] += 1
                    position["order"] = None
                validate()
                save()
                self._write_progress(plot="throttled")
                if stopped:
                    break
            if position["validated_at"] != position["stage_step"]:
                validate()
        except KeyboardInterrupt:
            save()
            self._write_progress()
            raise
        position["elapsed_s"] = elapsed()
        save(done=True)
        self._write_progress(plot="throttled")
        return best, position

    # --- the run --------------------------------------------------------------------------------
    def run(self, only: str | None = None) -> dict:
        c = self.config
        tasks = [t for t in ("pair", "single") if (t == "pair" and c.trains_pair) or (t == "single" and c.trains_single)]
        if only is not None:
            if only not in tasks:
                raise UserError(f"--only {only}: the config's kind {c.kind!r} does not train {only!r}")
            tasks = [only]
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_config()
        try:
            for task in tasks:
                if task in self.completed:
                    self._log(f"{task}: already trained ({self.results[task]['model_file']})")
                    continue
                self._run_task(task)
        except KeyboardInterrupt:
            self._log(f"interrupted: continue with `ipi-mts train ... --resume` ({self.checkpoint_path})")
            raise
        summary = {"output": str(self.out), "data": self.data_summary, "results": self.results}
        _write_json(self.out / "summary.json", summary)
        self._write_progress()
        return summary

    def _run_task(self, task):
        ck = self.checkpoint
        resuming = ck is not None and ck.get("task") == task and ck.get("models")
        if resuming:
            self.models = {}
            for name, entry in ck["models"].items():
                model = EquivariantPotential(EquivariantConfig.from_dict(entry["config"])).to(self.device)
                model.load_state_dict(entry["weights"])
                self.models[name] = model
        else:
            self.models = self._new_models(task)
        self.times = dict(ck.get("times", {})) if resuming else {}
        stages = TASK_STAGES[task]
        start = stages.index(ck["stage"]) if resuming else 0
        best = None
        for k, stage in enumerate(stages):
            if k < start:
                continue
            resume_state = ck if (resuming and k == start) else None
            if stage == "joint" and resume_state is None:
                self._init_slow(self.models["fast"], self.models["slow"])
            best, position = self._run_stage(task, stage, resume_state)
            self.times[stage] = position["elapsed_s"]
            self.checkpoint = None  # consumed
        # the weights of the best validation loss of the final stage
        if best is not None and best.get("weights"):
            for name, weights in best["weights"].items():
                self.models[name].load_state_dict(weights)
        self._finish_task(task, best, dict(self.times))

    def _finish_task(self, task, best, times):
        from ase.data import atomic_masses

        c = self.config
        model = LearnedPair(self.models["fast"], self.models["slow"]) if task == "pair" else self.models["single"]
        model.eval()
        offset = self._refit_energy_offset(model, self.models["slow" if task == "pair" else "single"])
        components = {"fast": self.models["fast"], "slow": self.models["slow"]} if task == "pair" else None
        validation = measure_errors(model, self.val_set, c.eval_batch_size, components)
        test = (
            measure_errors(model, self.test_set, c.eval_batch_size, components)
            if self.test_set is not None else None
        )
        n_params = {n: sum(p.numel() for p in m.parameters()) for n, m in self.models.items()}
        metadata = {
            "trained_by": "ipi-mts train",
            "method": "Fu et al., arXiv 2310.13756" if task == "pair" else "single-model baseline",
            "kind": task,
            "config": c.to_dict(),
            "data": self.data_summary,
            "outer_step_fs": self.pair_offset_fs,
            "metrics": {"validation": validation, "test": test},
            "best_epoch": best.get("epoch") if best else None,
            "training_time_s": {k: round(v, 2) for k, v in times.items()},
            "steps": sum(1 for row in self.history["steps"] if row[1] == task),
            "energy_offset_refit_eV": offset,
            "parameters": n_params,
            "reference_energies_eV": {
                n: dict(zip(map(str, m.species), m.reference_energies.tolist())) for n, m in self.models.items()
            },
        }
        path = self.out / f"{task}.pt"
        save_model(path, model, metadata, masses=[float(atomic_masses[z]) for z in model.species])
        self.completed.append(task)
        self.results[task] = {
            "model_file": str(path),
            "validation": validation,
            "test": test,
            "training_time_s": metadata["training_time_s"],
            "parameters": n_params,
        }
        self._save_checkpoint(task, None, {}, None, None, {}, None, stage_done=True)
        t = test or validation
        self._log(
            f"{task}: wrote {path} ({'test' if test else 'validation'}: E MAE "
            f"{t['energy_mae_mev_per_atom']:.3f} meV/atom, F MAE {t['forces_mae_mev_per_A']:.1f} meV/Å, "
            f"{sum(times.values()) / 60:.1f} min)"
        )

    def _refit_energy_offset(self, model, holder):
        """With `refit_energy_offset`, the per-species energies that least-squares fit the
        residual E_ref − E_model on the training frames are added to `holder`'s reference
        energies: the loss, dominated by forces, leaves the constant energy offset loosely
        fixed. Returns them as {Z: eV} (None when off)."""
        if not self.config.refit_energy_offset:
            return None
        numbers, residual = [], []
        for indices in self.train_set.all_batches(self.config.eval_batch_size):
            batch = self.train_set.collate(indices)
            energy = evaluate(model, batch.state).energy.detach().double()
            residual.extend((batch.energy - energy).cpu().tolist())
            numbers.extend(self.train_set.frames[k].state.numbers.cpu().numpy() for k in indices)
        delta = fit_reference_energies(numbers, np.array(residual), holder.species)
        with torch.no_grad():
            holder.reference_energies += torch.as_tensor(delta, dtype=torch.float64, device=holder.reference_energies.device)
        return {str(z): float(d) for z, d in zip(holder.species, delta)}

    # --- outputs --------------------------------------------------------------------------------
    def _log(self, text):
        if not self.quiet:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    def _write_config(self):
        write_resolved_config(self.out, self.config.to_dict(), "ipi-mts train")

    def _write_progress(self, plot=True):
        """history.json always; losses.png when `plot` (at most once a minute otherwise)."""
        self._plotted_at = write_progress(self.out, self.history, plot_losses, self._log, self._plotted_at, plot)


def write_resolved_config(out: Path, values: dict, command: str):
    """`out`/config.yaml: the config as run, defaults filled in."""
    import yaml

    (out / "config.yaml").write_text(
        f"# resolved by {command} (defaults filled in)\n" + yaml.safe_dump(values, sort_keys=False)
    )


def write_progress(out: Path, history, plot_fn, log, plotted_at: float, plot=True) -> float:
    """`out`/history.json always; `out`/losses.png by `plot_fn(history, path)` when `plot` is
    True, or when "throttled" and a minute has passed since `plotted_at`. Returns the time
    of the last plot (time.monotonic())."""
    _write_json(out / "history.json", history)
    now = time.monotonic()
    if plot is not True and now - plotted_at < 60.0:
        return plotted_at
    try:
        plot_fn(history, out / "losses.png")
    except Exception as e:  # a plot must never stop a training
        log(f"could not plot the losses: {type(e).__name__}: {e}")
    return now


def plot_losses(history, path):
    """Training loss per step (running mean) and validation loss and force MAE per epoch,
    one column per task, stage boundaries marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = history["steps"]
    epochs = history["epochs"]
    tasks = [t for t in ("pair", "single") if any(s[1] == t for s in steps) or any(e["task"] == t for e in epochs)]
    if not tasks:
        return
    fig, axes = plt.subplots(2, len(tasks), figsize=(6 * len(tasks), 7), squeeze=False, sharex="col")
    for col, task in enumerate(tasks):
        ax, ax2 = axes[0, col], axes[1, col]
        rows = [s for s in steps if s[1] == task]
        if rows:
            plot_train_steps(ax, [r[0] for r in rows], [r[3] for r in rows])
            for stage in TASK_STAGES[task][1:]:
                first = [r[0] for r in rows if r[2] == stage]
                if first:
                    ax.axvline(first[0], color="k", ls=":", lw=0.8)
                    ax2.axvline(first[0], color="k", ls=":", lw=0.8)
                    ax.text(first[0], 1.0, f" {stage}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        ev = [e for e in epochs if e["task"] == task]
        if ev:
            x = [e["global_step"] for e in ev]
            ax.plot(x, [e["val_loss"] for e in ev], "o-", color="C3", ms=3, label="validation")
            ax2.plot(x, [e["val_forces_mae_mev_per_A"] for e in ev], "o-", color="C2", ms=3, label="force MAE (meV/Å)")
            ax2b = ax2.twinx()
            ax2b.plot(x, [e["val_energy_mae_mev_per_atom"] for e in ev], "s--", color="C1", ms=3, label="energy MAE (meV/atom)")
            ax2b.set_ylabel("validation energy MAE (meV/atom)", color="C1")
            ax2b.set_yscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("loss")
        ax.set_title(f"{task}")
        ax.legend(fontsize=8)
        ax2.set_yscale("log")
        ax2.set_xlabel("optimizer step")
        ax2.set_ylabel("validation force MAE (meV/Å)", color="C2")
    fig.subplots_adjust(left=0.14, right=0.86, top=0.95, bottom=0.08, wspace=0.5, hspace=0.08)
    save_figure(fig, path)


def plot_train_steps(ax, steps, losses):
    """The training loss per optimizer step, light, and its running mean over ~1/100 of them."""
    x, y = np.asarray(steps), np.asarray(losses)
    window = max(1, len(y) // 100)
    smooth = np.convolve(y, np.ones(window) / window, mode="valid")
    ax.plot(x, y, color="0.8", lw=0.5, label="train (per step)")
    ax.plot(x[window - 1 :], smooth, color="C0", lw=1.2, label=f"train (mean of {window})")


def save_figure(fig, path):
    """Write a matplotlib figure as PNG through a temporary file and a rename, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def train(config: TrainConfig, resume: bool = False, only: str | None = None, quiet: bool = False, callback=None) -> dict:
    """Run the training that `config` describes; returns the summary (also summary.json)."""
    return Trainer(config, resume=resume, quiet=quiet, callback=callback).run(only)


__all__ = ["Schedule", "Trainer", "plot_losses", "plot_train_steps", "read_checkpoint", "save_figure", "train"]
