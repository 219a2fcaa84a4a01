r"""Training long-time-step maps: `ipi-mts train-map CONFIG.yaml`.

The map is `maps.GeneratingFunction(anchor V, τ, H_θ)`, S = τ [Σ p̄²/2m + V(q̄) + H_θ(q̄, p̄)]
(Bigi, Spies, Ceriotti, arXiv 2508.01068), with V a reference potential (the physics anchor)
and H_θ a `MomentumCorrection`. The data are pairs of states (q, p) -> (q', p') one stride
τ = k · frame_dt apart along the fine-step NVE segments of `ipi-mts data trajectories`.

The loss is the residual of the generating-function equations on the TRUE pairs. With both
ends known, q̄ = (q + q')/2 and p̄ = (p + p')/2 are known, and a perfect S satisfies
q' − q = ∂S/∂p̄, p' − p = −∂S/∂q̄ exactly, so

    r_q = (q' − q) − ∂S/∂p̄ = r⁰_q − τ ∂H_θ/∂p̄,   r⁰_q = (q' − q) − τ p̄/m
    r_p = (p' − p) + ∂S/∂q̄ = r⁰_p + τ ∂H_θ/∂q̄,   r⁰_p = (p' − p) − τ F(q̄)

    loss = Σ_i [ m_i |r_q,i|² + (τ²/m_i) |r_p,i|² ]  /  Σ_i [ m_i |r⁰_q,i|² + (τ²/m_i) |r⁰_p,i|² ]

(sums over the atoms of a batch; the denominator is the same sum for the pure anchor S = τH,
averaged over the training pairs, so the loss starts at 1 with H_θ = 0 and 0 is exact). The
weights are the solver's metric made mass-invariant: x = (q', τp'/m) scaled by √m. No
implicit solve is needed, so a step costs one H_θ evaluation with its double backward, and the
anchor residuals r⁰ are computed once. Why not the solved map's error: the solve costs ~10
H_θ evaluations per pair and its gradient needs implicit differentiation, while the residual
bounds the map error to first order, δx ≈ (1 − ½ΩA)⁻¹ r (A = ∇²S, the Cayley-transform
Jacobian of maps/generating.py), and the two vanish together. The map error itself is
measured at the end on a few held-out pairs (`check_map_pairs`), solved by `MidpointMap`.

The residual weighs every direction of the map's error alike, but what heats a long NVE run
is the error's component along ∇H. Near the stride's limit the implicit midpoint rule's large
errors are mostly phase errors of the stiff modes, along the energy shells, while a learned
map's far smaller ones need not be (`benchmarks/map_step_energy.py`: for water at 3 fs, 0.032
of the midpoint rule's error per step, but 1.2x its energy error, and along rollouts from
reference states H rises by about 0.03 meV/atom per step where the midpoint rule's stays level).
With `energy_weight` λ > 0 the loss gains

    λ · mean δH̃²  /  mean δH̃²(S₀),    δH̃ = H(x' + P⁻¹r) − H(x')

with r = G(x') − x' the solver's residual at the exact end state x' = (q', τp'/m) and P =
I − ∂G/∂x in the molecule (or atom) blocks of `maps.BlockNewton`: the energy error of the
solution after one Newton step from x', no solve needed (for water at 3 fs it follows the
solved map's energy error to a correlation of 0.999 with P from the learned S, 0.89 from the
anchor's: `benchmarks/map_step_energy.py --estimate`). P is built once per pair, on
`energy_pairs` training pairs (all with null) and a quarter as many validation pairs, whose term
then joins the validation loss: from the S₀ that training starts with (τH, or `init`'s;
`energy_jacobian: start`) or from τH (`anchor`, several times cheaper with a learned S₀), 19
evaluations of G each for water. S₀'s δH̃ under the same P is the term's unit. `init` starts
H_θ from a map file of the same stride, anchor and model: a fine-tuning of a map trained on
the residual alone.

Optionally (`predictor:` with a budget), a learned direct predictor is trained next on the same
pairs (maps/direct.py): (q', p') ≈ Φ^VV_τ(q, p) + τ (∂g_θ/∂p, −∂g_θ/∂q) at the start (q, p), with
the loss Σ_i m_i |δq_i|² + (τ²/m_i) |δp_i|² of its error, relative to the same for Verlet alone
(1 at the start, g_θ = 0). It is stored in the map file as the solver's initial guess, and its
effect on the solver's iterations is measured on the held-out pairs. That stage is not
checkpointed (minutes, not hours): `--resume` of a finished run with a `predictor:` section
added trains it, and redoes it if it was interrupted.

Pairs are split by NVE segment (never frames of one segment in two splits): segments in start
order, temperatures interleaved, the last ones are validation and test. Adam, the shared
cosine/plateau schedule (`cotrain.Schedule`), a budget in epochs, steps or minutes,
checkpoints (`checkpoint.pt`, --resume continues exactly), tqdm progress, `losses.png`,
`history.json`, `summary.json` and the map file `map.pt` (`model_file.save_map`) with the
weights of the best validation loss.

The YAML config (lengths Å, energies eV, times fs; paths relative to the working directory):

```yaml
output: runs/train-map   # checkpoint.pt, map.pt, losses.png, history.json, summary.json
seed: 0
device: auto             # auto | cpu | cuda | cuda:N
threads: null            # torch CPU threads (null: torch's default)
dtype: float64           # of H_θ while training and in the map file
stride_fs: 2.0           # τ; a multiple of the data's frame spacing
anchor: qtip4pf          # V: a reference potential name (qtip4pf, ase:EMT, ...)
anchor_params: {}
kinetic_scale_eV: 0.025852   # E₀ of H_θ's momentum features u = p/√(m E₀)
batch_size: 2            # pairs per optimizer step
eval_batch_size: 4
checkpoint_every: 50     # optimizer steps (also after every epoch and on Ctrl-C)
check_map_pairs: 4       # test pairs solved with the final map (0: skip)
data:
  files: [water-traj.extxyz]   # `ipi-mts data trajectories`
  split: [0.8, 0.1, 0.1]       # train/validation/test, by segment
  pair_every: 1                # a pair starts every this many frames
  max_train_pairs: null        # at most this many training pairs (evenly spread)
model: {cutoff: 3.0, num_features: 8, lmax: 1, num_layers: 2}   # EquivariantConfig fields
train: {epochs: 10, steps: null, minutes: null, lr: 0.005}      # the first budget reached ends it
schedule: {kind: cosine, min_lr_factor: 0.01, warmup_steps: 0, patience: 2, factor: 0.5}
solver: {tol: 1.0e-9, max_iter: 100, memory: 20, fallback_substeps: 4,   # stored in the map file
         guess_substeps: 1, newton: false, blocks: molecules}   # maps/solver.py: Verlet guess, block Newton
init: null               # a map file (or shipped name) whose H_θ training starts from
energy_weight: 0.0       # λ of the energy term (0: none)
energy_pairs: 256        # training pairs that carry it (null: all)
energy_jacobian: start   # P from the starting S (start) or from τH (anchor)
predictor:               # the learned direct predictor: trained only when given a budget
  model: {cutoff: 3.0, num_features: 8, lmax: 1, num_layers: 2}   # g_θ's EquivariantConfig fields
  substeps: 1            # Verlet sub-steps of the anchor that g_θ corrects
  steps: null            # budget: optimizer steps and/or minutes (both null: no predictor)
  minutes: null
  lr: 0.005              # cosine to 1 % over the budget; batch_size as above
```
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import units
from ..errors import UserError
from ..maps.generating import network_gradients
from ..maps.solver import SOLVER_DEFAULTS
from .config import ScheduleConfig, StageConfig, _build, check_run_keys

# solver: only the final check and the map file use it; predictor: trained after the checkpointed stage
RESUMABLE = {"device", "threads", "checkpoint_every", "eval_batch_size", "output", "check_map_pairs", "solver", "predictor"}


# --- config -----------------------------------------------------------------------------------
@dataclass
class MapDataConfig:
    files: list[str] = field(default_factory=list)
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    pair_every: int = 1
    max_train_pairs: int | None = None

    def check(self, where):
        if not self.files:
            raise UserError(f"{where}.files: give at least one trajectory file (ipi-mts data trajectories)")
        if len(self.split) != 3 or min(self.split) < 0 or not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise UserError(f"{where}.split: three fractions >= 0 adding up to 1, not {self.split}")
        if self.split[0] <= 0 or self.split[1] <= 0:
            raise UserError(f"{where}.split: training and validation fractions must be positive")
        if self.pair_every < 1 or (self.max_train_pairs is not None and self.max_train_pairs < 1):
            raise UserError(f"{where}: pair_every and max_train_pairs must be >= 1")


@dataclass
class PredictorConfig:
    model: dict = field(default_factory=lambda: {"cutoff": 3.0, "num_features": 8, "lmax": 1, "num_layers": 2})
    substeps: int = 1
    steps: int | None = None
    minutes: float | None = None
    lr: float = 0.005

    @property
    def enabled(self) -> bool:
        return self.steps is not None or self.minutes is not None

    def check(self, where):
        StageConfig(steps=self.steps, minutes=self.minutes, lr=self.lr).check(where, need_budget=False)
        if self.substeps < 1:
            raise UserError(f"{where}.substeps: must be >= 1")
        _check_model(self.model, f"{where}.model")


def _check_model(values: dict, where: str) -> None:
    from ..potentials.equivariant import EquivariantConfig

    values = dict(values)
    if "dtype" in values:
        raise UserError(f"{where}.dtype: set dtype once, at the top level")
    try:
        EquivariantConfig.from_dict(values | {"species": values.get("species", (1,))})
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


@dataclass
class MapTrainConfig:
    data: MapDataConfig = field(default_factory=MapDataConfig)
    output: str = "runs/train-map"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    dtype: str = "float64"
    stride_fs: float = 0.0
    anchor: str = "qtip4pf"
    anchor_params: dict = field(default_factory=dict)
    kinetic_scale_eV: float = 0.025852
    batch_size: int = 2
    eval_batch_size: int = 4
    checkpoint_every: int = 50
    check_map_pairs: int = 4
    model: dict = field(default_factory=lambda: {"cutoff": 3.0, "num_features": 8, "lmax": 1, "num_layers": 2})
    train: StageConfig = field(default_factory=lambda: StageConfig(epochs=10, lr=0.005))
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    solver: dict = field(default_factory=lambda: dict(SOLVER_DEFAULTS))
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    init: str | None = None  # a map file (or name) whose H_θ training starts from
    energy_weight: float = 0.0  # λ of the energy term (module docstring)
    energy_pairs: int | None = 256  # training pairs that carry it (evenly spread; None: all)
    energy_jacobian: str = "start"  # the S that P comes from: start (S₀) or anchor (τH)

    def check(self):
        if not (self.stride_fs > 0 and math.isfinite(self.stride_fs)):
            raise UserError("stride_fs: give the map's stride τ in fs (a positive multiple of the data's frame spacing)")
        check_run_keys(self)
        if self.check_map_pairs < 0:
            raise UserError("check_map_pairs: must be >= 0")
        if not (self.kinetic_scale_eV > 0 and math.isfinite(self.kinetic_scale_eV)):
            raise UserError("kinetic_scale_eV: must be a positive energy (eV)")
        unknown = sorted(set(self.solver) - set(SOLVER_DEFAULTS))
        if unknown:
            raise UserError(f"solver: unknown keys {', '.join(unknown)} (known: {', '.join(SOLVER_DEFAULTS)})")
        self.solver = SOLVER_DEFAULTS | self.solver
        _check_model(self.model, "model")
        self.predictor.check("predictor")
        if not (self.energy_weight >= 0 and math.isfinite(self.energy_weight)):
            raise UserError(f"energy_weight: must be >= 0, not {self.energy_weight}")
        if self.energy_pairs is not None and self.energy_pairs < 1:
            raise UserError("energy_pairs: must be >= 1, or null for all training pairs")
        if self.energy_jacobian not in ("start", "anchor"):
            raise UserError(f"energy_jacobian: start or anchor, not {self.energy_jacobian!r}")
        self.data.check("data")
        self.train.check("train")
        self.schedule.check("schedule")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def map_config_from_dict(values: dict) -> MapTrainConfig:
    """A validated MapTrainConfig from a plain dict (as read from YAML)."""
    return _build(MapTrainConfig, values).check()


def load_map_config(path, overrides: dict | None = None) -> MapTrainConfig:
    """Read and validate a YAML map-training config; `overrides` win (see `config.load_config`)."""
    from .config import load_config

    return load_config(path, overrides, map_config_from_dict)


# --- pairs ------------------------------------------------------------------------------------
@dataclass
class PairSet:
    """Pairs (q, p) -> (q', p') one stride apart, with their anchor residuals; i-PI atomic
    units, float64, each tensor (n_pairs, n_atoms, 3) unless said."""

    q: torch.Tensor  # bohr
    p: torch.Tensor  # a.u.
    q_next: torch.Tensor
    p_next: torch.Tensor
    r0_q: torch.Tensor  # (q' − q) − τ p̄/m, bohr
    r0_p: torch.Tensor  # (p' − p) − τ F(q̄), a.u.
    system: list  # maps.System per pair (masses, numbers, cell)
    segment: list  # the segment index of each pair

    def __len__(self):
        return self.q.shape[0]


def split_segments(segments, fractions):
    """Train/validation/test lists of segments: in start order with temperatures interleaved
    (the k-th segment of every temperature, then the (k+1)-th, ...), cut by `fractions`."""
    by_temperature: dict = {}
    for s in segments:
        by_temperature.setdefault(s.temperature, []).append(s)
    ordered = [s for k in range(max(len(v) for v in by_temperature.values()))
               for v in by_temperature.values() if k < len(v) for s in [v[k]]]
    cuts = np.round(np.cumsum(fractions)[:-1] * len(ordered)).astype(int)
    return [[ordered[i] for i in chunk] for chunk in np.split(np.arange(len(ordered)), cuts)]


def stride_frames(segment, stride_fs: float) -> int:
    """k = τ / frame spacing, a positive integer (UserError otherwise)."""
    k = stride_fs / segment.frame_dt_fs
    if k < 1 or abs(k - round(k)) > 1e-6:
        raise UserError(
            f"stride_fs {stride_fs} is not a positive multiple of the data's frame spacing "
            f"({segment.frame_dt_fs} fs)"
        )
    return int(round(k))


def make_pairs(segments, stride_fs, potential, pair_every=1, max_pairs=None, quiet=True, desc="pairs") -> PairSet:
    """All pairs (frame i, frame i + k) of each segment, i = 0, pair_every, ..., with the
    anchor residuals r⁰ (module docstring); at most `max_pairs`, evenly spread."""
    from tqdm import tqdm

    from ..maps import System
    from .batches import spread

    tau = stride_fs * units.FEMTOSECOND
    index = []
    for s in segments:
        k = stride_frames(s, stride_fs)
        index += [(s, i, i + k) for i in range(0, s.q.shape[0] - k, pair_every)]
    index = spread(index, max_pairs)
    if not index:
        return None
    systems: dict = {}
    fields = {name: [] for name in ("q", "p", "q_next", "p_next", "r0_q", "r0_p")}
    for s, i, j in tqdm(index, desc=desc, disable=quiet, file=sys.stderr, leave=False):
        system = systems.setdefault(id(s), System.from_ipi(s.masses, s.cell, s.numbers))
        q, p, q2, p2 = (torch.as_tensor(x, dtype=torch.float64) for x in (s.q[i], s.p[i], s.q[j], s.p[j]))
        m = system.masses[:, None]
        fields["q"].append(q), fields["p"].append(p), fields["q_next"].append(q2), fields["p_next"].append(p2)
        fields["r0_q"].append((q2 - q) - tau * 0.5 * (p + p2) / m)
        fields["r0_p"].append((p2 - p) - tau * system.forces(potential, 0.5 * (q + q2)))
    stacked = {name: torch.stack(v) for name, v in fields.items()}
    return PairSet(**stacked, system=[systems[id(s)] for s, _, _ in index], segment=[s.segment for s, _, _ in index])


# --- the loss ---------------------------------------------------------------------------------
def residuals(pairs: PairSet, index, correction, tau, create_graph=False):
    """(r_q, r_p) (B, n, 3) of the pairs `index` (module docstring): the anchor's r⁰ if
    `correction` is None."""
    sel = torch.as_tensor(index)
    r_q, r_p = pairs.r0_q[sel], pairs.r0_p[sel]
    if correction is None:
        return r_q, r_p
    qbar = 0.5 * (pairs.q[sel] + pairs.q_next[sel])
    pbar = 0.5 * (pairs.p[sel] + pairs.p_next[sel])
    gq, gp = network_gradients(correction, qbar, pbar, [pairs.system[k] for k in index], create_graph)
    return r_q - tau * gp, r_p + tau * gq


def residual_terms(pairs: PairSet, index, correction, tau, create_graph=False):
    """Per pair Σ_i m|r_q|² + (τ²/m)|r_p|² for the pairs `index`: (model, anchor) (B,) each."""
    masses = torch.stack([pairs.system[k].masses for k in index])[..., None]  # (B, n, 1)

    def weigh(a, b):
        return (masses * a**2 + tau**2 / masses * b**2).sum(dim=(1, 2))

    anchor = weigh(*residuals(pairs, index, None, tau))
    if correction is None:
        return anchor, anchor
    return weigh(*residuals(pairs, index, correction, tau, create_graph)), anchor


def relative_residual(pairs: PairSet, correction, tau, batch_size=4) -> float:
    """Σ over pairs of the model's weighted residual / the anchor's (1: no better than S = τH)."""
    model = anchor = 0.0
    for start in range(0, len(pairs), batch_size):
        index = list(range(start, min(start + batch_size, len(pairs))))
        a, b = residual_terms(pairs, index, correction, tau)
        model += float(a.detach().sum())
        anchor += float(b.sum())
    return model / anchor


# --- the energy term ----------------------------------------------------------------------------
@dataclass
class EnergyPairs:
    """The pairs of a PairSet that carry the energy term (module docstring): `index` into it,
    per pair the molecule blocks of P = I − ∂G/∂x at the exact end state (`maps.BlockNewton`),
    H(q', p') (Hartree), and the δH̃ of the S that training starts with."""

    index: list
    blocks: list
    exact: torch.Tensor
    start: torch.Tensor | None = None


def energy_pairs(pairs: PairSet, index, generating, potential, blocks="molecules", quiet=True,
                 desc="energy pairs", jacobian=None) -> EnergyPairs:
    """`EnergyPairs` of the pairs `index`: the δH̃ to compare with of `generating` (an S = τ[H + H_θ]),
    under P from the S `jacobian` (None: `generating`)."""
    from tqdm import tqdm

    from ..maps import BlockNewton, MidpointMap

    mapping = MidpointMap(jacobian or generating)
    found, exact = [], []
    for k in tqdm(index, desc=desc, disable=quiet, file=sys.stderr, leave=False):
        system = pairs.system[k]
        g, pack, _ = mapping.equations(pairs.q[k], pairs.p[k], system)
        x = pack(pairs.q_next[k], pairs.p_next[k])
        groups = system.molecules(pairs.q_next[k]) if blocks == "molecules" else torch.arange(system.n_atoms)[:, None]
        found.append(BlockNewton(g, x, g(x), groups))
        exact.append(system.hamiltonian(potential, pairs.q_next[k], pairs.p_next[k]).detach())
    result = EnergyPairs(list(index), found, torch.stack(exact))
    result.start = all_energy_errors(pairs, result, generating.correction, generating.tau, potential)
    return result


def energy_errors(pairs: PairSet, energy: EnergyPairs, positions, correction, tau, potential, create_graph=False):
    """δH̃ = H(x' + P⁻¹r) − H(x') (Hartree, (len(positions),)) of the `energy` pairs at
    `positions`: the energy error of the map's solution after one Newton step from the
    exact end state x', r = G(x') − x' the residual of S = τ[H + H_θ] (H_θ = `correction`)."""
    index = [energy.index[i] for i in positions]
    r_q, r_p = residuals(pairs, index, correction, tau, create_graph)
    out = []
    for b, (i, k) in enumerate(zip(positions, index)):
        system = pairs.system[k]
        m = system.masses[:, None]
        # G(x') − x' in the solver's unknowns x = (q', τp'/m)
        r = -torch.cat([r_q[b].reshape(-1), (tau / m * r_p[b]).reshape(-1)])
        d = energy.blocks[i](r)
        n = r_q[b].numel()
        q = pairs.q_next[k] + d[:n].view(-1, 3)
        p = pairs.p_next[k] + d[n:].view(-1, 3) * m / tau
        out.append(system.hamiltonian(potential, q, p) - energy.exact[i])
    return torch.stack(out)


def all_energy_errors(pairs: PairSet, energy: EnergyPairs, correction, tau, potential, batch_size=4):
    """δH̃ of every `energy` pair (detached), `batch_size` pairs at a time."""
    n = len(energy.index)
    return torch.cat([energy_errors(pairs, energy, range(a, min(a + batch_size, n)), correction, tau, potential).detach()
                      for a in range(0, n, batch_size)])


def relative_energy_error(pairs: PairSet, energy: EnergyPairs, correction, tau, potential, batch_size=4) -> float:
    """Σ δH̃² of the model / Σ δH̃² of the S that training starts with, over the `energy` pairs."""
    errors = all_energy_errors(pairs, energy, correction, tau, potential, batch_size)
    return float((errors**2).sum() / (energy.start**2).sum())


def map_error(pairs: PairSet, midpoint_map, n: int) -> dict:
    """Solve the map from (q, p) of `n` pairs (evenly spread) and compare with (q', p'):
    Σ m|Δq|² + (τ²/m)|Δp|² summed over them, with the solver's iterations and fallbacks."""
    from .batches import spread

    tau = midpoint_map.tau
    total, iterations, fallbacks = 0.0, 0, 0
    for k in spread(list(range(len(pairs))), n):
        system = pairs.system[k]
        q2, p2, info = midpoint_map.step_system(pairs.q[k], pairs.p[k], system)
        m = system.masses[:, None]
        total += float((m * (q2 - pairs.q_next[k]) ** 2 + tau**2 / m * (p2 - pairs.p_next[k]) ** 2).sum())
        iterations += info["iterations"]
        fallbacks += int(info["fallback"])
    return {"error": total, "iterations": iterations, "fallbacks": fallbacks}


def verlet_errors(pairs: PairSet, predictor, tau, quiet=True, desc="Verlet steps"):
    """(δq, δp) = (q', p') − Φ^VV_τ(q, p) of every pair, (n_pairs, n, 3) each: what the
    learned predictor's g_θ must supply (Verlet with `predictor`'s potential and sub-steps,
    a `VerletPredictor` or a `LearnedPredictor`)."""
    from tqdm import tqdm

    from ..maps.direct import VerletPredictor

    verlet = VerletPredictor(predictor.potential, predictor.substeps)
    dq, dp = [], []
    with torch.no_grad():
        for k in tqdm(range(len(pairs)), desc=desc, disable=quiet, file=sys.stderr, leave=False):
            q1, p1 = verlet(pairs.q[k], pairs.p[k], pairs.system[k], tau)
            dq.append(pairs.q_next[k] - q1)
            dp.append(pairs.p_next[k] - p1)
    return torch.stack(dq), torch.stack(dp)


def _predictor_terms(pairs: PairSet, errors, index, network, tau, create_graph=False):
    """Per pair Σ_i m|δq − τ∂g/∂p|² + (τ²/m)|δp + τ∂g/∂q|² for the pairs `index` (all when
    None); with `network` None, g = 0 (Verlet alone)."""
    index = list(range(len(pairs))) if index is None else index
    sel = torch.as_tensor(index)
    dq, dp = errors[0][sel], errors[1][sel]
    masses = torch.stack([pairs.system[k].masses for k in index])[..., None]
    if network is not None:
        gq, gp = network_gradients(network, pairs.q[sel], pairs.p[sel], [pairs.system[k] for k in index], create_graph)
        dq, dp = dq - tau * gp, dp + tau * gq
    return (masses * dq**2 + tau**2 / masses * dp**2).sum(dim=(1, 2))


def _relative_predictor_error(pairs, errors, network, tau, batch_size=4) -> float:
    model = verlet = 0.0
    for start in range(0, len(pairs), batch_size):
        index = list(range(start, min(start + batch_size, len(pairs))))
        model += float(_predictor_terms(pairs, errors, index, network, tau).detach().sum())
        verlet += float(_predictor_terms(pairs, errors, index, None, tau).sum())
    return model / verlet


def predictor_error(pairs: PairSet, predictor, tau, batch_size=4) -> float:
    """The learned predictor's mass-scaled error on `pairs` relative to Verlet's alone (1: no
    better than Verlet, 0: exact)."""
    return _relative_predictor_error(pairs, verlet_errors(pairs, predictor, tau), predictor.network, tau, batch_size)


# --- the trainer ------------------------------------------------------------------------------
class MapTrainer:
    """One `ipi-mts train-map` run (module docstring)."""

    def __init__(self, config: MapTrainConfig, resume=False, quiet=False, callback=None):
        from ..potentials import load_potential
        from ..potentials.base import pick_device
        from .cotrain import read_checkpoint

        self.config, self.quiet, self.callback = config, quiet, callback
        self.out = Path(config.output)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.device = pick_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if not resume and self.checkpoint_path.exists():
            raise UserError(f"{self.checkpoint_path} exists: continue it with --resume, or choose another output")
        self.checkpoint = (
            read_checkpoint(self.checkpoint_path, config.to_dict(), RESUMABLE, "train.") if resume else None
        )
        self.tau = config.stride_fs * units.FEMTOSECOND
        self.anchor = load_potential(config.anchor, **config.anchor_params).eval()
        self._load_data()
        if self.checkpoint is not None and self.checkpoint["data"] != self.data_summary:
            raise UserError(f"the data differ from those of {self.checkpoint_path}")
        self.history = self.checkpoint["history"] if self.checkpoint else {"steps": [], "epochs": []}
        self._plotted_at = time.monotonic()

    def _load_data(self):
        from ..data.trajectories import read_trajectories

        c = self.config
        segments = read_trajectories(c.data.files)
        train, val, test = split_segments(segments, c.data.split)
        if not train or not val:
            raise UserError(f"the split {c.data.split} of {len(segments)} segments leaves no training or validation segment: give more segments")
        self.species = tuple(sorted({int(z) for s in segments for z in s.numbers}))
        self.numbers = segments[0].numbers
        masses = {}
        for s in segments:
            for z, m in zip(s.numbers, s.masses / units.AMU):
                if abs(masses.setdefault(int(z), float(m)) - m) > 1e-6 * m:
                    raise UserError(f"the data have two masses for Z={z}: a map is made for one set")
        self.masses = masses
        make = dict(potential=self.anchor, quiet=self.quiet)
        self.train_set = make_pairs(train, c.stride_fs, pair_every=c.data.pair_every,
                                    max_pairs=c.data.max_train_pairs, desc="training pairs", **make)
        self.val_set = make_pairs(val, c.stride_fs, desc="validation pairs", **make)
        self.test_set = make_pairs(test, c.stride_fs, desc="test pairs", **make) if test else None
        if self.train_set is None or self.val_set is None:
            raise UserError(f"segments shorter than the stride ({c.stride_fs} fs): no pairs")
        self.anchor_norm = float(residual_terms(self.train_set, list(range(len(self.train_set))), None, self.tau)[0].mean())
        self.data_summary = {
            "files": [str(Path(f).resolve()) for f in c.data.files],
            "segments": {"train": len(train), "validation": len(val), "test": len(test)},
            "pairs": {"train": len(self.train_set), "validation": len(self.val_set),
                      "test": len(self.test_set) if self.test_set else 0},
        }

    def _new_network(self, model: dict, momentum_error):
        """A `MomentumCorrection` of the EquivariantConfig fields `model` that is exactly 0 at
        the start, with a per-atom scale of the RMS `momentum_error` (a.u.) over τ as a force
        (eV/Å): H_θ's or the predictor's g_θ."""
        from ..maps import MomentumCorrection
        from ..potentials.equivariant import EquivariantConfig, average_num_neighbors
        from .batches import spread

        c = self.config
        values = dict(model) | {"dtype": c.dtype}
        values["species"] = tuple(values.get("species") or self.species)
        config = EquivariantConfig.from_dict(values)
        if "avg_num_neighbors" not in model:
            states = [self.train_set.system[k].state(self.train_set.q[k])
                      for k in spread(list(range(len(self.train_set))), 10)]
            config = dataclasses.replace(config, avg_num_neighbors=max(average_num_neighbors(states, config.cutoff), 1e-3))
        network = MomentumCorrection(config, seed=c.seed, kinetic_scale=c.kinetic_scale_eV)
        scale = float(units.forces_from_wire(momentum_error / self.tau).pow(2).mean().sqrt())
        network.set_scale_shift(scale=max(scale, 1e-6))
        with torch.no_grad():
            network.readout[-1].weight.zero_()
            network.readout[-1].bias.zero_()
        return network

    def _new_correction(self):
        return self._new_network(self.config.model, self.train_set.r0_p)

    def _initial_correction(self):
        """The H_θ of the `init` map, as loaded from its file (None without one), checked
        against this run."""
        from ..potentials.model_file import load_map

        c = self.config
        if c.init is None:
            return None
        mapping = load_map(c.init, dtype=c.dtype)
        correction, generating = mapping.generating.correction, mapping.generating
        problems = []
        if correction is None:
            problems.append("it has no learned correction")
        else:
            problems += [f"model.{k} {v!r} against its {getattr(correction.config, k)!r}" for k, v in c.model.items()
                         if hasattr(correction.config, k) and getattr(correction.config, k) != v]
            if float(correction.kinetic_scale) != c.kinetic_scale_eV:
                problems.append(f"kinetic_scale_eV {c.kinetic_scale_eV} against its {float(correction.kinetic_scale)}")
        if abs(generating.timestep_fs - c.stride_fs) > 1e-9:
            problems.append(f"stride_fs {c.stride_fs} against its {generating.timestep_fs}")
        if mapping.anchor != c.anchor:
            problems.append(f"anchor {c.anchor!r} against its {mapping.anchor!r}")
        if problems:
            raise UserError(f"init {c.init}: {'; '.join(problems)}")
        return correction

    def _energy_pairs(self, start):
        """The energy term's pairs: `energy_pairs` training pairs and a quarter as many
        validation pairs, with P from `energy_jacobian`'s S and δH̃ relative to the S that
        training starts with (H_θ = `start`, init's, or None: τH), so that a resumed run
        rebuilds the same."""
        from ..maps import GeneratingFunction
        from .batches import spread

        c = self.config
        generating = GeneratingFunction(self.anchor, c.stride_fs, start)
        jacobian = GeneratingFunction(self.anchor, c.stride_fs) if c.energy_jacobian == "anchor" else None
        make = dict(generating=generating, potential=self.anchor, blocks=c.solver["blocks"], quiet=self.quiet,
                    jacobian=jacobian)
        n = len(self.train_set) if c.energy_pairs is None else c.energy_pairs
        self.train_energy = energy_pairs(self.train_set, spread(list(range(len(self.train_set))), n),
                                         desc="energy term: training pairs", **make)
        self.val_energy = energy_pairs(self.val_set, spread(list(range(len(self.val_set))), max(n // 4, 1)),
                                       desc="energy term: validation pairs", **make)

    # --- checkpoints ----------------------------------------------------------------------------
    def _save(self, position, optimizer, schedule, generator, best, done=False):
        from ..potentials.model_file import atomic_save
        from .cotrain import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, _state_dict

        atomic_save({
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": "map",
            "config": self.config.to_dict(), "data": self.data_summary,
            "model": {"config": self.correction.config.to_dict(), "weights": _state_dict(self.correction)},
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "generator": generator.get_state(), "position": position, "best": best,
            "history": self.history, "done": done,
        }, self.checkpoint_path)

    # --- training -------------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm import tqdm

        from ..maps import MomentumCorrection
        from ..potentials.equivariant import EquivariantConfig
        from .cotrain import Schedule, _state_dict, _write_json

        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_config()
        ck = self.checkpoint
        start = self._initial_correction()
        if ck is not None:
            self.correction = MomentumCorrection(EquivariantConfig.from_dict(ck["model"]["config"]),
                                                 kinetic_scale=c.kinetic_scale_eV)
            self.correction.load_state_dict(ck["model"]["weights"])
        else:
            self.correction = self._new_correction() if start is None else copy.deepcopy(start)
        self.correction.to(self.device)
        if c.energy_weight > 0:
            self._energy_pairs(start)
        optimizer = torch.optim.Adam(self.correction.parameters(), lr=c.train.lr)
        schedule = Schedule(c.schedule, c.train)
        generator = torch.Generator().manual_seed(c.seed * 1000 + 7)
        position = {"epoch": 0, "batch": 0, "step": 0, "elapsed_s": 0.0, "order": None, "epoch_loss": [0.0, 0]}
        best = {"loss": math.inf, "epoch": -1, "weights": {}}
        if ck is not None:
            optimizer.load_state_dict(ck["optimizer"])
            schedule.load_state_dict(ck["schedule"])
            generator.set_state(ck["generator"])
            position, best = dict(ck["position"]), ck["best"]
        started = time.perf_counter() - float(position["elapsed_s"])
        budget = c.train

        def elapsed():
            return time.perf_counter() - started

        def out_of_budget():
            return (
                (budget.steps is not None and position["step"] >= budget.steps)
                or (budget.minutes is not None and elapsed() >= 60.0 * budget.minutes)
                or (budget.epochs is not None and position["epoch"] >= budget.epochs)
            )

        def save(done=False):
            position["elapsed_s"] = elapsed()
            self._save(position, optimizer, schedule, generator, best, done)

        def validate():
            loss = residual = relative_residual(self.val_set, self.correction, self.tau, c.eval_batch_size)
            energy = None
            if c.energy_weight > 0:
                energy = relative_energy_error(self.val_set, self.val_energy, self.correction, self.tau,
                                               self.anchor, c.eval_batch_size)
                loss = residual + c.energy_weight * energy
            total, count = position["epoch_loss"]
            entry = {"epoch": position["epoch"], "step": position["step"], "time_s": round(elapsed(), 3),
                     "lr": optimizer.param_groups[0]["lr"], "train_loss": total / count if count else None,
                     "val_loss": loss, "val_residual": residual, "val_energy": energy}
            self.history["epochs"].append(entry)
            position["epoch_loss"] = [0.0, 0]
            if loss < best["loss"]:
                best.update(loss=loss, residual=residual, epoch=position["epoch"], weights=_state_dict(self.correction))
            schedule.epoch_end(loss)
            energy_text = "" if energy is None else f" {residual:.4g}, + λ × energy error {energy:.4g} relative to S₀'s"
            self._log(f"epoch {position['epoch']} step {position['step']}: train loss "
                      f"{entry['train_loss'] if count else math.nan:.4g}, validation {loss:.4g} "
                      f"(residual relative to S = τH{energy_text}), "
                      f"{elapsed():.0f} s")

        def one_step(index, n_batches):
            factor = schedule.factor(position["step"], position["epoch"] + position["batch"] / n_batches, elapsed())
            for group in optimizer.param_groups:
                group["lr"] = c.train.lr * factor
            model, _ = residual_terms(self.train_set, index, self.correction, self.tau, create_graph=True)
            loss = model.mean() / self.anchor_norm
            if c.energy_weight > 0:
                energy = self.train_energy
                positions = torch.randint(len(energy.index), (c.batch_size,), generator=generator).tolist()
                errors = energy_errors(self.train_set, energy, positions, self.correction, self.tau, self.anchor, True)
                loss = loss + c.energy_weight * (errors**2).mean() / (energy.start**2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            position["batch"] += 1
            position["step"] += 1
            position["epoch_loss"][0] += value
            position["epoch_loss"][1] += 1
            self.history["steps"].append([position["step"], value, optimizer.param_groups[0]["lr"]])
            return value

        try:
            while not out_of_budget():
                if position["order"] is None:
                    position["order"] = torch.randperm(len(self.train_set), generator=generator)
                    position["batch"] = 0
                order = position["order"].tolist()
                batches = [order[k : k + c.batch_size] for k in range(0, len(order), c.batch_size)]
                bar = tqdm(total=len(batches), initial=position["batch"], leave=False, file=sys.stderr,
                           desc=f"epoch {position['epoch'] + 1}", disable=self.quiet)
                stopped = False
                while position["batch"] < len(batches):
                    if out_of_budget():
                        stopped = True
                        break
                    value = one_step(batches[position["batch"]], len(batches))
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.3g}", refresh=False)
                    if self.callback is not None:
                        self.callback({"step": position["step"], "loss": value})
                    if position["step"] % c.checkpoint_every == 0:
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
        except KeyboardInterrupt:
            save()
            self._write_progress()
            self._log(f"interrupted: continue with `ipi-mts train-map ... --resume` ({self.checkpoint_path})")
            raise
        save(done=True)
        if best["weights"]:
            self.correction.load_state_dict(best["weights"])
        self.correction.eval()
        self.predictor = self._train_predictor() if c.predictor.enabled else None
        summary = self._finish(best, elapsed())
        _write_json(self.out / "summary.json", summary)
        self._write_progress()
        return summary

    def _finish(self, best, seconds) -> dict:
        from ..maps import GeneratingFunction, MidpointMap
        from ..potentials.model_file import save_map

        c = self.config
        self.correction.eval()
        held_out = self.test_set or self.val_set
        which = "test" if self.test_set else "validation"
        relative = relative_residual(held_out, self.correction, self.tau, c.eval_batch_size)
        learned = MidpointMap(GeneratingFunction(self.anchor, c.stride_fs, self.correction), self.predictor, **c.solver)
        result = {
            "map_file": str(self.out / "map.pt"),
            "stride_fs": c.stride_fs,
            "anchor": c.anchor,
            "data": self.data_summary,
            f"{which}_relative_residual": relative,
            "best_epoch": best.get("epoch"),
            "validation_relative_residual": best.get("residual", best.get("loss")),  # older checkpoints: loss
            "training_time_s": round(seconds, 2),
            "steps": len(self.history["steps"]),
            "parameters": sum(p.numel() for p in self.correction.parameters()),
        }
        if c.energy_weight > 0:  # of the best weights: its share of the validation loss
            result["validation_relative_energy_error"] = relative_energy_error(
                self.val_set, self.val_energy, self.correction, self.tau, self.anchor, c.eval_batch_size)
        if self.predictor is not None:
            result["predictor"] = self.predictor_summary | {
                f"{which}_relative_error": predictor_error(held_out, self.predictor, self.tau)}
        if c.check_map_pairs:
            plain = MidpointMap(GeneratingFunction(self.anchor, c.stride_fs), **c.solver)
            with torch.no_grad():
                mine = map_error(held_out, learned, c.check_map_pairs)
                anchor = map_error(held_out, plain, c.check_map_pairs)
            result[f"{which}_map_error"] = {"learned": mine, "anchor": anchor,
                                            "relative": mine["error"] / anchor["error"]}
            if self.predictor is not None:  # the same map from Verlet's guess: what the predictor saves
                verlet_guess = MidpointMap(learned.generating, **c.solver)
                with torch.no_grad():
                    result[f"{which}_map_error"]["learned_from_verlet_guess"] = map_error(
                        held_out, verlet_guess, c.check_map_pairs)
        metadata = {"trained_by": "ipi-mts train-map", "method": "Bigi, Spies, Ceriotti, arXiv 2508.01068",
                    "config": c.to_dict()} | {k: v for k, v in result.items() if k != "map_file"}
        save_map(self.out / "map.pt", learned, anchor=c.anchor, anchor_params=c.anchor_params,
                 species=self.species, masses=self.masses, metadata=metadata)
        line = f"wrote {result['map_file']} ({which} residual {relative:.3g} of the anchor's"
        if c.check_map_pairs:
            line += f", map error {result[f'{which}_map_error']['relative']:.3g} of the implicit midpoint's"
        if self.predictor is not None:
            line += f", predictor error {result['predictor'][f'{which}_relative_error']:.3g} of Verlet's"
        self._log(line + f", {seconds / 60:.1f} min)")
        return result

    # --- the learned direct predictor -------------------------------------------------------------
    def _train_predictor(self):
        """Train g_θ of a `maps.LearnedPredictor` on the training pairs (module docstring);
        returns the predictor with the weights of the best validation error."""
        from tqdm import tqdm

        from ..maps import LearnedPredictor, VerletPredictor
        from .cotrain import Schedule, _state_dict

        c, pc = self.config, self.config.predictor
        verlet = VerletPredictor(self.anchor, pc.substeps)
        targets = {}
        for name, pairs in (("train", self.train_set), ("validation", self.val_set)):
            targets[name] = verlet_errors(pairs, verlet, self.tau, self.quiet, f"Verlet steps ({name})")
        network = self._new_network(pc.model, targets["train"][1]).to(self.device)
        predictor = LearnedPredictor(self.anchor, network, pc.substeps)
        optimizer = torch.optim.Adam(network.parameters(), lr=pc.lr)
        schedule = Schedule(ScheduleConfig(), StageConfig(steps=pc.steps, minutes=pc.minutes, lr=pc.lr))  # cosine to 1 %
        generator = torch.Generator().manual_seed(c.seed * 1000 + 11)
        norm = float(_predictor_terms(self.train_set, targets["train"], None, None, self.tau).mean())
        history = self.history.setdefault("predictor", {"steps": [], "validation": []})
        history["steps"].clear(), history["validation"].clear()
        best = {"error": math.inf, "weights": None}
        started, step = time.perf_counter(), 0

        def progress():
            return schedule.progress(step, 0, time.perf_counter() - started)

        def validate():
            network.eval()
            error = _relative_predictor_error(self.val_set, targets["validation"], network, self.tau, c.eval_batch_size)
            network.train()
            history["validation"].append([step, error])
            if error < best["error"]:
                best.update(error=error, weights=_state_dict(network))
            self._log(f"predictor step {step}: validation error {error:.4g} of Verlet's, "
                      f"{time.perf_counter() - started:.0f} s")

        bar = tqdm(total=100, desc="predictor (% of budget)", leave=False, file=sys.stderr, disable=self.quiet)
        next_check = 0.1
        network.train()
        while progress() < 1.0:
            order = torch.randperm(len(self.train_set), generator=generator).tolist()
            for k in range(0, len(order), c.batch_size):
                if progress() >= 1.0:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = pc.lr * schedule.factor(step, 0, time.perf_counter() - started)
                index = order[k : k + c.batch_size]
                loss = _predictor_terms(self.train_set, targets["train"], index, network, self.tau,
                                        create_graph=True).mean() / norm
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                history["steps"].append([step, float(loss.detach())])
                percent = int(100 * progress())
                bar.set_postfix(loss=f"{float(loss.detach()):.3g}", refresh=False)
                if percent > bar.n:
                    bar.update(percent - bar.n)
                if progress() >= next_check:
                    validate()
                    next_check += 0.1
                    self._write_progress(plot="throttled")
        bar.close()
        validate()
        network.load_state_dict(best["weights"])
        network.eval()
        self.predictor_summary = {"steps": step, "training_time_s": round(time.perf_counter() - started, 2),
                                  "validation_relative_error": best["error"], "substeps": pc.substeps,
                                  "parameters": sum(p.numel() for p in network.parameters())}
        return predictor

    # --- outputs --------------------------------------------------------------------------------
    def _log(self, text):
        if not self.quiet:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    def _write_config(self):
        from .cotrain import write_resolved_config

        write_resolved_config(self.out, self.config.to_dict(), "ipi-mts train-map")

    def _write_progress(self, plot=True):
        """history.json always; losses.png when `plot` (at most once a minute otherwise)."""
        from .cotrain import write_progress

        def plot_fn(history, path):
            plot_map_losses(history, path, self.config.stride_fs)

        self._plotted_at = write_progress(self.out, self.history, plot_fn, self._log, self._plotted_at, plot)


def plot_map_losses(history, path, stride_fs=None):
    """Training loss per step and validation residual per epoch, both relative to S = τH."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .cotrain import plot_train_steps, save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4))
    steps = history["steps"]
    if steps:
        plot_train_steps(ax, [r[0] for r in steps], [r[1] for r in steps])
    epochs = history["epochs"]
    if epochs:
        ax.plot([e["step"] for e in epochs], [e["val_loss"] for e in epochs], "o-", color="C3", ms=3, label="validation")
    predictor = history.get("predictor")
    if predictor and predictor["validation"]:
        offset = steps[-1][0] if steps else 0  # trained after H_θ
        ax.plot([offset + r[0] for r in predictor["validation"]], [r[1] for r in predictor["validation"]],
                "s-", color="C2", ms=3, label="direct predictor, validation (error / Verlet's)")
    ax.axhline(1.0, color="k", ls=":", lw=0.8, label="implicit midpoint (S = τH); Verlet")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mass-scaled residual / anchor's")
    ax.set_title(f"map training, τ = {stride_fs:g} fs" if stride_fs else "map training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def train_map(config: MapTrainConfig, resume=False, quiet=False, callback=None) -> dict:
    """Run the map training that `config` describes; returns the summary (also summary.json)."""
    return MapTrainer(config, resume=resume, quiet=quiet, callback=callback).run()


__all__ = ["MapTrainConfig", "load_map_config", "map_config_from_dict", "plot_map_losses", "train_map"]
