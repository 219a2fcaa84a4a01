"""The YAML configuration of `ipi-mts train`: schema, defaults and validation.

Every key, its default and its meaning (paths are relative to the directory `ipi-mts train`
runs in; lengths in Å, energies in eV, times as named):

```yaml
kind: pair            # pair: the fast/slow pair (Fu et al., arXiv 2310.13756)
                      # single: the conventional baseline (one model, the slow architecture)
                      # both: the pair, then the baseline, on the same data
output: runs/train    # folder for checkpoint.pt, pair.pt / single.pt, losses.png, summary.json
seed: 0               # model initialisation, shuffling: a run is reproducible from its inputs
device: auto          # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
threads: null         # torch CPU threads (null: torch's default)
dtype: float32        # of the model parameters while training and in the model file
batch_size: 4         # structures per optimizer step (frame pairs stay whole with slow_smoothness)
eval_batch_size: 8    # structures per call when validating
checkpoint_every: 100 # optimizer steps between checkpoints (also written after every epoch)
refit_energy_offset: true  # after training, least-squares per-species energies of the
                      # training residual are added to the model (a force-dominated loss
                      # leaves the constant energy offset loosely fixed)
data:
  files: [water.extxyz]      # extxyz with energy (eV) and forces (eV/Å): `ipi-mts data generate`
  split: [0.8, 0.1, 0.1]     # train/validation/test, contiguous time blocks per trajectory
  max_train_frames: null     # use at most this many training frames (evenly spread)
models:                      # EquivariantConfig fields; species and avg_num_neighbors are
  fast: {cutoff: 2.0, num_features: 8, lmax: 1, num_layers: 1}    # taken from the data
  slow: {cutoff: 4.5, num_features: 16, lmax: 1, num_layers: 2}   # unless given
  single: null               # the baseline's architecture (null: the slow model's)
loss:
  energy_per_atom: 1.0       # weight of mean((E − E_ref)/N)², (eV/atom)⁻²
  forces: 1.0                # weight of mean over atoms and x,y,z of (F − F_ref)², (eV/Å)⁻²
  slow_smoothness: 0.0       # λ of λ·mean |F_slow(x_t+Δ) − F_slow(x_t)|² over frame pairs
  slow_bond_response: 0.0    # λ of λ·mean |F_slow(x + Δ) − F_slow(x)|², Δ moving the atoms of
                             # every covalent bond apart by a random vector (training.losses)
  bond_displacement: 0.03    # ε (Å): standard deviation of each component of that vector
  slow_bond_force: 0.0       # λ of λ·mean |f_b|², f_b the slow force on each covalent bond's
                             # relative coordinate (training.losses)
stages:                      # budgets: a stage ends at the first of epochs, steps, minutes
  fast:   {epochs: 10, steps: null, minutes: null, lr: 0.01}
  joint:  {epochs: 30, steps: null, minutes: null, lr: 0.005, fast: train, fast_lr_factor: 0.1}
  single: {epochs: null, steps: null, minutes: null, lr: null}
                             # baseline: null budgets are the sums of fast + joint (same
                             # budget as the pair), a null lr is joint's lr
schedule:
  kind: cosine               # cosine (to min_lr_factor·lr over the stage's budget) |
                             # plateau (×factor after `patience` epochs without a better
                             # validation loss) | constant
  min_lr_factor: 0.01
  warmup_steps: 0            # linear warm-up at the start of every stage
  patience: 2
  factor: 0.5
```

`stages.joint.fast` is `train` (the fast model keeps learning, at fast_lr_factor × lr) or
`frozen` (its weights stay as stage 1 left them; its outputs are then computed once per
frame). A mistake (unknown key, wrong type, bad value) is one UserError line naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

KINDS = ("pair", "single", "both")
SCHEDULES = ("cosine", "plateau", "constant")
FAST_MODES = ("train", "frozen")
DTYPES = ("float32", "float64")
# EquivariantConfig fields that the trainer fills in from the data when absent
FROM_DATA = ("species", "avg_num_neighbors")


@dataclass
class DataConfig:
    files: list[str] = field(default_factory=list)
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    max_train_frames: int | None = None

    def check(self, where):
        if not self.files:
            raise UserError(f"{where}.files: give at least one extxyz file")
        if len(self.split) != 3:
            raise UserError(f"{where}.split: three fractions (train, validation, test), not {self.split}")
        if min(self.split) < 0 or not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise UserError(f"{where}.split: fractions {self.split} must be >= 0 and add up to 1")
        if self.split[0] <= 0 or self.split[1] <= 0:
            raise UserError(f"{where}.split: training and validation fractions must be positive")
        if self.max_train_frames is not None and self.max_train_frames < 1:
            raise UserError(f"{where}.max_train_frames: must be >= 1 (or null)")


@dataclass
class ModelsConfig:
    fast: dict = field(default_factory=lambda: {"cutoff": 2.0, "num_features": 8, "lmax": 1, "num_layers": 1})
    slow: dict = field(default_factory=lambda: {"cutoff": 4.5, "num_features": 16, "lmax": 1, "num_layers": 2})
    single: dict | None = None

    def check(self, where):
        from ..potentials.equivariant import EquivariantConfig

        for name in ("fast", "slow", "single"):
            values = getattr(self, name)
            if values is None:
                continue
            values = dict(values)
            if "dtype" in values:
                raise UserError(f"{where}.{name}.dtype: set dtype once, at the top level")
            values.setdefault("species", (1,))
            try:
                EquivariantConfig.from_dict(values)
            except UserError as e:
                raise UserError(f"{where}.{name}: {e}") from None
        fast_cutoff = float(self.fast.get("cutoff", 5.0))
        slow_cutoff = float(self.slow.get("cutoff", 5.0))
        if fast_cutoff > slow_cutoff:
            raise UserError(
                f"{where}: the fast model's cutoff ({fast_cutoff} Å) is longer than the slow "
                f"one's ({slow_cutoff} Å); the fast model is the short-range one"
            )


@dataclass
class LossConfig:
    energy_per_atom: float = 1.0
    forces: float = 1.0
    slow_smoothness: float = 0.0
    slow_bond_response: float = 0.0
    bond_displacement: float = 0.03
    slow_bond_force: float = 0.0

    def check(self, where):
        for name in ("energy_per_atom", "forces", "slow_smoothness", "slow_bond_response", "bond_displacement",
                     "slow_bond_force"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise UserError(f"{where}.{name}: must be a finite number >= 0, not {value}")
        if self.energy_per_atom == 0 and self.forces == 0:
            raise UserError(f"{where}: energy_per_atom and forces weights are both 0")
        if self.slow_bond_response > 0 and self.bond_displacement == 0:
            raise UserError(f"{where}.bond_displacement: must be > 0 with slow_bond_response on")


@dataclass
class StageConfig:
    epochs: int | None = None
    steps: int | None = None
    minutes: float | None = None
    lr: float | None = None

    def check(self, where, need_budget=True):
        for name in ("epochs", "steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{where}.{name}: must be >= 1 (or null)")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise UserError(f"{where}.minutes: must be a positive number (or null)")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"{where}.lr: must be a positive number")
        if need_budget and self.epochs is None and self.steps is None and self.minutes is None:
            raise UserError(f"{where}: give a budget (epochs, steps or minutes)")
        if need_budget and self.lr is None:
            raise UserError(f"{where}.lr: give a learning rate")


@dataclass
class JointStageConfig(StageConfig):
    fast: str = "train"
    fast_lr_factor: float = 0.1

    def check(self, where, need_budget=True):
        super().check(where, need_budget)
        if self.fast not in FAST_MODES:
            raise UserError(f"{where}.fast: one of {', '.join(FAST_MODES)}, not {self.fast!r}")
        if not (self.fast_lr_factor > 0 and math.isfinite(self.fast_lr_factor)):
            raise UserError(f"{where}.fast_lr_factor: must be a positive number")


@dataclass
class StagesConfig:
    fast: StageConfig = field(default_factory=lambda: StageConfig(epochs=10, lr=0.01))
    joint: JointStageConfig = field(default_factory=lambda: JointStageConfig(epochs=30, lr=0.005))
    single: StageConfig = field(default_factory=StageConfig)

    def check(self, where):
        self.fast.check(f"{where}.fast")
        self.joint.check(f"{where}.joint")
        self.single.check(f"{where}.single", need_budget=False)

    def single_budget(self) -> StageConfig:
        """The baseline's stage: null budgets are those of fast + joint summed (a budget
        only one of them gives is taken alone), a null lr is joint's."""

        def total(name):
            values = [getattr(self.fast, name), getattr(self.joint, name)]
            given = [v for v in values if v is not None]
            if not given:
                return None
            if len(given) < 2:
                return None  # one stage unbounded on this measure: so is the sum
            return sum(given)

        s = self.single
        own = any(v is not None for v in (s.epochs, s.steps, s.minutes))
        return StageConfig(
            epochs=s.epochs if own else total("epochs"),
            steps=s.steps if own else total("steps"),
            minutes=s.minutes if own else total("minutes"),
            lr=s.lr if s.lr is not None else self.joint.lr,
        )


@dataclass
class ScheduleConfig:
    kind: str = "cosine"
    min_lr_factor: float = 0.01
    warmup_steps: int = 0
    patience: int = 2
    factor: float = 0.5

    def check(self, where):
        if self.kind not in SCHEDULES:
            raise UserError(f"{where}.kind: one of {', '.join(SCHEDULES)}, not {self.kind!r}")
        if not 0 <= self.min_lr_factor <= 1:
            raise UserError(f"{where}.min_lr_factor: must be in [0, 1]")
        if self.warmup_steps < 0 or self.patience < 1:
            raise UserError(f"{where}: warmup_steps must be >= 0 and patience >= 1")
        if not 0 < self.factor < 1:
            raise UserError(f"{where}.factor: must be in (0, 1)")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    kind: str = "pair"
    output: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    dtype: str = "float32"
    batch_size: int = 4
    eval_batch_size: int = 8
    checkpoint_every: int = 100
    refit_energy_offset: bool = True
    models: ModelsConfig = field(default_factory=ModelsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def check(self):
        if self.kind not in KINDS:
            raise UserError(f"kind: one of {', '.join(KINDS)}, not {self.kind!r}")
        check_run_keys(self)
        self.data.check("data")
        self.models.check("models")
        self.loss.check("loss")
        self.stages.check("stages")
        self.schedule.check("schedule")
        if self.kind in ("single", "both"):
            budget = self.stages.single_budget()
            if budget.epochs is None and budget.steps is None and budget.minutes is None:
                raise UserError("stages.single: give the baseline a budget (epochs, steps or minutes)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def trains_pair(self) -> bool:
        return self.kind in ("pair", "both")

    @property
    def trains_single(self) -> bool:
        return self.kind in ("single", "both")


def check_run_keys(config) -> None:
    """The keys every training config has: dtype, output, device, threads, batch_size,
    eval_batch_size, checkpoint_every, seed."""
    if config.dtype not in DTYPES:
        raise UserError(f"dtype: one of {', '.join(DTYPES)}, not {config.dtype!r}")
    if not config.output:
        raise UserError("output: give a folder")
    if config.device != "auto" and not (config.device == "cpu" or config.device.startswith("cuda")):
        raise UserError(f"device: auto, cpu, cuda or cuda:N, not {config.device!r}")
    if config.threads is not None and config.threads < 1:
        raise UserError("threads: must be >= 1 (or null)")
    for name in ("batch_size", "eval_batch_size", "checkpoint_every"):
        if getattr(config, name) < 1:
            raise UserError(f"{name}: must be >= 1")
    if config.seed < 0:
        raise UserError("seed: must be >= 0")


# --- dict -> dataclasses, with one-line errors ------------------------------------------------
def _convert(value, hint, where):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
            raise UserError(f"{where}: expected an integer, not {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{where}: expected a number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, not {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, not {value!r}")
        return dict(value)
    if origin is list:
        if isinstance(value, str) and args and args[0] is str:
            value = [value]  # one file given as a plain string
        if not isinstance(value, list | tuple):
            raise UserError(f"{where}: expected a list, not {value!r}")
        return [_convert(v, args[0], f"{where}[{k}]") for k, v in enumerate(value)]
    raise TypeError(f"no converter for {hint}")  # a bug in the schema, not the user's


def _build(cls, values, where="", base=None):
    """`cls` from `values`; keys not given keep the value in `base` (default: cls()), so a
    section given in part keeps its other defaults."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UserError(f"{where or 'config'}: expected a mapping of keys, not {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise UserError(f"unknown key {prefix}{unknown[0]} (known here: {', '.join(names)})")
    obj = dataclasses.replace(base) if base is not None else cls()
    for name in names:
        if name not in values:
            continue
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hints[name]):
            value = _build(hints[name], values[name], key, getattr(obj, name))
        else:
            value = _convert(values[name], hints[name], key)
        setattr(obj, name, value)
    return obj


def config_from_dict(values: dict) -> TrainConfig:
    """A validated TrainConfig from a plain dict (as read from YAML)."""
    # model sections (architectures) replace the defaults wholesale; other sections merge
    return _build(TrainConfig, values).check()


def load_config(path, overrides: dict | None = None, from_dict=None) -> TrainConfig:
    """Read and validate a YAML config; `overrides` win over the file ({key: value}, a dotted
    key such as 'loss.slow_smoothness' reaches into a section; a None value sets null);
    `from_dict` builds it (default `config_from_dict`; `training.maps` passes its own)."""
    values = read_yaml(path)
    for key, value in (overrides or {}).items():
        _set_key(values, key, value)
    try:
        return (from_dict or config_from_dict)(values)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _set_key(values: dict, key: str, value) -> None:
    *sections, last = key.split(".")
    where = values
    for depth, name in enumerate(sections):
        where = where.setdefault(name, {})
        if not isinstance(where, dict):
            raise UserError(f"cannot set {key}: {'.'.join(sections[: depth + 1])} is not a section")
    where[last] = value


def read_yaml(path) -> dict:
    """The mapping in a YAML config file (empty file: {}), or a one-line UserError."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"{path} is not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: the config must be a mapping of keys")
    return dict(values)


__all__ = [
    "DataConfig",
    "JointStageConfig",
    "LossConfig",
    "ModelsConfig",
    "ScheduleConfig",
    "StageConfig",
    "StagesConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "read_yaml",
]
