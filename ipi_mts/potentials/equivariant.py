"""A learned E(3)-equivariant energy model in the style of NequIP, built on e3nn.

Batzner et al., Nat. Commun. 13, 2453 (2022); the fast/slow pair of Fu et al. (arXiv
2310.13756) is two of these with different cutoffs and sizes (`pair.LearnedPair`).

For every structure, with the directed edges i <- j of all pairs r_ij = r_j − r_i closer
than the cutoff r_c (`ipi_mts.neighbors`, a full list, periodic images included):

    h_i^(0)  = W_embed · onehot(Z_i)                                     F x 0e
    B_n(r)   = (2 / r_c) sin(w_n r / r_c) / r,  w_n = nπ (trainable)      n = 1..num_basis
    u(r)     = 1 − (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) − p(p+1)/2 x^(p+2),  x = r / r_c < 1
    Y(r̂)     = spherical harmonics l = 0..lmax (component normalisation)

and, per interaction layer t (NequIP's convolution, a gated nonlinearity after it):

    m_i   = 1/√avg_num_neighbors Σ_j TP_uvu( Lin1 h_j , Y(r̂_ij) ; R(u(r_ij) B(r_ij)) )
    h_i'  = Gate( Lin2 m_i + SC(h_i, onehot(Z_i)) )  (+ h_i when the irreps match)

where R is an MLP of the radial basis giving the tensor-product weights (one per path and
channel, "uvu"), SC a species-dependent linear self-interaction (a fully connected tensor
product with the one-hot species) and Gate e3nn's gated nonlinearity (SiLU on scalars,
sigmoid gates on l > 0). Hidden features are F x l with parity (−1)^l for l = 0..lmax
(those that the spherical harmonics generate from scalars; the energy is invariant under
reflections as well as rotations). The last layer produces scalars only (nothing else
reaches the energy), so a one-layer model is a many-body function of radial sums with
no angular term, exactly as in NequIP, at a fraction of the cost. Readout and energy:

    ε_i = MLP(h_i^(T))      (scalars -> readout_hidden -> 1, SiLU)
    E   = Σ_i [ scale ε_i + shift + E_ref(Z_i) ]

The per-atom scale and shift and the per-species reference energies E_ref are buffers,
set from the training data (`set_scale_shift`, `fit_reference_energies`), not trained.
Messages vanish smoothly at r_c (u and its first two derivatives are 0 there; R has no
biases, so R(0) = 0): energies are continuous and forces go to zero as a pair leaves the
cutoff. Energies are summed in float64 whatever the model's dtype, and returned in the
dtype of the State's positions.

Parameters run in `config.dtype` (float32 or float64), on whatever device the module is
moved to; inputs in another dtype are cast at the edge vectors (gradients flow through).
A one-layer model of scalars whose weights are frozen (a driver's fast model) is evaluated in
closed form, the same function with its gradient carried alongside (`closed_form`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import nn as e3nn_nn
from e3nn import o3

from ..errors import UserError
from ..neighbors import state_pairs, within_cutoff
from ..state import State, symbols
from . import closed_form
from .base import EnergyModel

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class EquivariantConfig:
    """Everything that fixes the architecture (and so the shapes of the weights)."""

    species: tuple[int, ...]  # atomic numbers the model knows, in one-hot order
    cutoff: float = 5.0  # Å, radial cutoff of the messages
    num_features: int = 16  # F, multiplicity of every irrep of the hidden features
    lmax: int = 1  # highest degree of spherical harmonics and hidden features
    num_layers: int = 2  # interaction (convolution + gate) layers
    num_basis: int = 8  # Bessel radial basis functions
    radial_hidden: int = 32  # width of the radial MLP's hidden layers
    radial_layers: int = 1  # hidden layers of the radial MLP
    cutoff_p: int = 6  # exponent p of the polynomial cutoff envelope
    avg_num_neighbors: float = 1.0  # messages are summed then divided by √ of this
    readout_hidden: int = 16  # hidden width of the per-atom energy MLP
    dtype: str = "float32"  # "float32" | "float64", of the parameters and features

    def __post_init__(self):
        # plain Python values (no numpy scalars), so that model files hold JSON-able data
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                if f.name == "species":
                    value = tuple(int(z) for z in value)
                elif f.name in ("cutoff", "avg_num_neighbors"):
                    value = float(value)
                elif f.name == "dtype":
                    value = str(value)
                elif not isinstance(value, bool | str) and float(value) == int(value):
                    value = int(value)
                else:
                    problems.append(f"{f.name} = {value!r} is not an integer")
            except (TypeError, ValueError, OverflowError):
                problems.append(f"{f.name} = {value!r} has the wrong type")
            object.__setattr__(self, f.name, value)
        if problems:
            raise UserError("bad equivariant model config: " + "; ".join(problems))
        if not self.species:
            problems.append("species is empty")
        elif len(set(self.species)) != len(self.species):
            problems.append(f"species {list(self.species)} has repeats")
        elif not all(1 <= z <= 118 for z in self.species):
            problems.append(f"species {list(self.species)} are not all atomic numbers 1..118")
        if not (self.cutoff > 0 and math.isfinite(self.cutoff)):
            problems.append(f"cutoff {self.cutoff} is not a positive length")
        for name in ("num_features", "num_layers", "num_basis", "radial_hidden", "readout_hidden"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} = {getattr(self, name)} is below 1")
        if self.lmax < 0 or self.radial_layers < 0 or self.cutoff_p < 1:
            problems.append("lmax and radial_layers must be >= 0 and cutoff_p >= 1")
        if not self.avg_num_neighbors > 0:
            problems.append(f"avg_num_neighbors {self.avg_num_neighbors} is not positive")
        if self.dtype not in DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {sorted(DTYPES)}")
        if problems:
            raise UserError("bad equivariant model config: " + "; ".join(problems))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["species"] = list(self.species)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "EquivariantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown equivariant model config keys: {', '.join(unknown)}")
        if "species" not in values:
            raise UserError("equivariant model config has no 'species'")
        try:
            return cls(**values)
        except TypeError as e:
            raise UserError(f"bad equivariant model config: {e}") from None


# --- radial parts ---------------------------------------------------------------------------
class BesselBasis(torch.nn.Module):
    """(2 / r_c) sin(w_n r / r_c) / r with trainable frequencies w_n, initially nπ."""

    def __init__(self, cutoff: float, num_basis: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.weights = torch.nn.Parameter(torch.linspace(1.0, num_basis, num_basis) * math.pi)

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # (E,) -> (E, num_basis)
        r = r[:, None]
        return (2.0 / self.cutoff) * torch.sin(self.weights * r / self.cutoff) / r


def polynomial_cutoff(r: torch.Tensor, cutoff: float, p: int) -> torch.Tensor:
    """NequIP's envelope: 1 at r = 0, with value and first two derivatives 0 at r_c."""
    x = r / cutoff
    out = (
        1.0
        - 0.5 * (p + 1) * (p + 2) * x**p
        + p * (p + 2) * x ** (p + 1)
        - 0.5 * p * (p + 1) * x ** (p + 2)
    )
    return out * (x < 1.0)


# --- one interaction layer --------------------------------------------------------------------
def _gate_for(irreps_out: o3.Irreps) -> e3nn_nn.Gate:
    """SiLU on the scalars, a sigmoid gate for every l > 0 channel."""
    scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
    gates = o3.Irreps([(gated.num_irreps, "0e")]) if gated.num_irreps else o3.Irreps("")
    return e3nn_nn.Gate(
        scalars,
        [torch.nn.functional.silu] * len(scalars),
        gates,
        [torch.sigmoid] * len(gates),
        gated,
    )


class Interaction(torch.nn.Module):
    """One NequIP convolution followed by a gate (see the module docstring)."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_species: o3.Irreps,
        config: EquivariantConfig,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.gate = _gate_for(self.irreps_out)
        gate_in = self.gate.irreps_in
        wanted = {ir for _, ir in gate_in}

        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_edge) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_edge:
                    if ir_out in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        mid = o3.Irreps(mid)
        mid, perm, _ = mid.sort()
        instructions = [(a, b, perm[c], mode, w) for a, b, c, mode, w in instructions]

        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = o3.TensorProduct(
            self.irreps_in,
            irreps_sh,
            mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = e3nn_nn.FullyConnectedNet(
            [config.num_basis] + [config.radial_hidden] * config.radial_layers + [self.tp.weight_numel],
            torch.nn.functional.silu,
        )
        self.linear_2 = o3.Linear(mid.simplify(), gate_in)
        self.self_interaction = o3.FullyConnectedTensorProduct(self.irreps_in, irreps_species, gate_in)
        self.norm = 1.0 / math.sqrt(config.avg_num_neighbors)
        self.residual = self.irreps_in == self.irreps_out
        # scalar features whose only path is 0e x Y_0 -> 0e (every last layer of the fast
        # model, and any one-layer model): TP_uvu(x_j, Y; R) = c x_j R with Y_0 = 1
        # (component normalisation), computed without the tensor-product machinery
        (only,) = self.tp.instructions if len(self.tp.instructions) == 1 else (None,)
        scalar = only is not None and self.irreps_in.lmax == 0 and irreps_sh[only.i_in2].ir.l == 0
        self.scalar_path = float(only.path_weight) if scalar else None

    @property
    def uses_harmonics(self) -> bool:
        """Whether the messages need Y(r̂) beyond Y_0 = 1."""
        return self.scalar_path is None

    def messages(self, x_neighbour, edge_sh, weights):
        """TP_uvu(x_j, Y(r̂_ij); R(r_ij)) per edge (`edge_sh` unused on the scalar path)."""
        if self.scalar_path is not None:
            return x_neighbour * weights * self.scalar_path
        return self.tp(x_neighbour, edge_sh, weights)

    def forward(self, h, species_onehot, edge_sh, edge_radial, centre, neighbour):
        weights = self.radial(edge_radial)
        x = self.linear_1(h)
        messages = self.messages(x.index_select(0, neighbour), edge_sh, weights)
        m = torch.zeros(h.shape[0], messages.shape[1], dtype=messages.dtype, device=messages.device)
        m = m.index_add(0, centre, messages) * self.norm
        out = self.gate(self.linear_2(m) + self.self_interaction(h, species_onehot))
        return out + h if self.residual else out


# --- the model ---------------------------------------------------------------------------------
class EquivariantPotential(EnergyModel):
    """E(3)-equivariant message-passing energy model; see the module docstring."""

    architecture = "equivariant"

    def __init__(self, config: EquivariantConfig, seed: int | None = None):
        super().__init__()
        if isinstance(config, dict):
            config = EquivariantConfig.from_dict(config)
        self.config = config
        self.cutoff = float(config.cutoff)
        generator_state = None
        if seed is not None:
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
        try:
            self._build(config)
        finally:
            if generator_state is not None:
                torch.random.set_rng_state(generator_state)
        self.to(config.torch_dtype)
        # bookkeeping in float64, registered after the cast above
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[list(config.species)] = torch.arange(len(config.species))
        self.register_buffer("species_index", lookup, persistent=False)  # from config
        self.register_buffer("reference_energies", torch.zeros(len(config.species), dtype=torch.float64))
        self.register_buffer("per_atom_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("per_atom_shift", torch.zeros((), dtype=torch.float64))
        self._closed_form = None  # (key, constants): _closed_form_constants
        self._parameter_list = None  # self.parameters(), listed at the first call of it

    def _build(self, config: EquivariantConfig):
        n_species, f = len(config.species), config.num_features
        self.irreps_species = o3.Irreps(f"{n_species}x0e")
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.lmax)
        hidden = o3.Irreps([(f, (l, (-1) ** l)) for l in range(config.lmax + 1)])
        scalars = o3.Irreps(f"{f}x0e")
        self.embedding = o3.Linear(self.irreps_species, scalars)
        self.radial_basis = BesselBasis(config.cutoff, config.num_basis)
        layers, irreps = [], scalars
        for t in range(config.num_layers):
            out = scalars if t == config.num_layers - 1 else hidden
            layers.append(Interaction(irreps, out, self.irreps_sh, self.irreps_species, config))
            irreps = out
        self.layers = torch.nn.ModuleList(layers)
        self.readout = torch.nn.Sequential(
            torch.nn.Linear(f, config.readout_hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(config.readout_hidden, 1),
        )

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype (config.dtype, unless the module was cast since)."""
        return self.radial_basis.weights.dtype

    # --- species ------------------------------------------------------------------------
    @property
    def species(self) -> tuple[int, ...]:
        return self.config.species

    def check(self, numbers) -> None:
        numbers = np.asarray(numbers.cpu() if torch.is_tensor(numbers) else numbers).reshape(-1)
        unknown = sorted({int(z) for z in numbers} - set(self.species))
        if unknown:
            names = ", ".join(f"{s} (Z={z})" for s, z in zip(_names(unknown), unknown))
            raise UserError(
                f"the model knows only {', '.join(symbols(self.species))}; the structure has {names}"
            )

    def _species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        index = self.species_index[numbers.clamp(0, 118)]
        if bool(((index < 0) | (numbers > 118)).any()):  # one device sync per call
            self.check(numbers)
        return index

    # --- data-derived constants ---------------------------------------------------------
    def set_reference_energies(self, values) -> None:
        """Per-species reference energies (eV): a dict {Z: E} (missing species get 0) or a
        sequence in the order of `species`."""
        if isinstance(values, dict):
            unknown = sorted(set(int(z) for z in values) - set(self.species))
            if unknown:
                raise UserError(f"reference energies for species the model lacks: Z={unknown}")
            values = [float(values.get(z, values.get(str(z), 0.0))) for z in self.species]
        values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        if values.numel() != len(self.species):
            raise UserError(
                f"{values.numel()} reference energies for {len(self.species)} species"
            )
        self.reference_energies.copy_(values)

    def fit_reference_energies(self, numbers_list, energies) -> dict[int, float]:
        """Least-squares per-species energies E ≈ Σ_s n_s E_s over training structures:
        `numbers_list` the atomic numbers of each structure, `energies` theirs (eV). The
        minimum-norm solution is taken when compositions are collinear (e.g. all water).
        Sets and returns them as {Z: eV}."""
        values = fit_reference_energies(numbers_list, energies, self.species)
        self.set_reference_energies(values)
        return dict(zip(self.species, values.tolist()))

    def set_scale_shift(self, scale: float = 1.0, shift: float = 0.0) -> None:
        """Per-atom energy = scale · network output + shift (eV)."""
        self.per_atom_scale.fill_(float(scale))
        self.per_atom_shift.fill_(float(shift))

    # --- energy -------------------------------------------------------------------------
    def edges(self, state: State):
        """Directed edges (centre i, neighbour j, vectors r_j − r_i) within the cutoff."""
        return state_pairs(state, self.cutoff, full_list=True)

    def atomic_energies(self, state: State, edges=None) -> torch.Tensor:
        """(n_atoms,) float64 eV, reference energies included. `edges` (i, j, vectors) may
        be given (a full list at least as long as this model's cutoff: longer ones are
        dropped), e.g. shared between the two models of a pair."""
        centre, neighbour, vectors = self._within_cutoff(state, edges)
        vectors = vectors.to(self.dtype)
        index = self._species_index(state.numbers)
        constants = self._closed_form_constants()
        if constants is None:
            out = self.generic_outputs(vectors, centre, neighbour, index)
        else:
            out = closed_form.atomic_outputs(self, constants, vectors, centre, neighbour, index)
        return self._atomic(out, index)

    def _within_cutoff(self, state: State, edges=None):
        """(centre, neighbour, vectors) of `edges` (default: this model's) within the cutoff."""
        return self.edges(state) if edges is None else within_cutoff(edges, self.cutoff)

    def _atomic(self, out, index) -> torch.Tensor:
        """Network outputs ε_i -> atomic energies (float64 eV), reference energies included."""
        return out.double() * self.per_atom_scale + self.per_atom_shift + self.reference_energies[index]

    @property
    def has_edge_gradient(self) -> bool:
        return self._closed_form_constants() is not None

    def edge_gradient(self, state: State, edges=None):
        """Energy and ∂E/∂v per edge from the closed form (`energy`'s numbers)."""
        constants = self._closed_form_constants()
        centre, neighbour, vectors = self._within_cutoff(state, edges)
        index = self._species_index(state.numbers)
        own = vectors.to(self.dtype)
        out, q = closed_form.energies_and_gradient(self, constants, own, centre, neighbour, index, True)
        grad = (q * self.per_atom_scale.to(q.dtype))[:, None] * own
        return self._total(state, self._atomic(out, index)), [(centre, neighbour, vectors, grad)]

    def generic_outputs(self, vectors, centre, neighbour, index) -> torch.Tensor:
        """ε_i (n_atoms,) of the network (before scale, shift and reference energies), in the
        model's dtype, through e3nn's modules and autograd; `vectors` (n_edges, 3) in that dtype
        and within the cutoff, `index` the atoms' species index."""
        lengths = torch.linalg.vector_norm(vectors, dim=-1)
        onehot = torch.nn.functional.one_hot(index, len(self.species)).to(vectors.dtype)
        edge_sh = None
        if any(layer.uses_harmonics for layer in self.layers):
            edge_sh = o3.spherical_harmonics(
                self.irreps_sh, vectors, normalize=True, normalization="component"
            )
        envelope = polynomial_cutoff(lengths, self.cutoff, self.config.cutoff_p)
        edge_radial = self.radial_basis(lengths) * envelope[:, None]
        h = self.embedding(onehot)
        for layer in self.layers:
            h = layer(h, onehot, edge_sh, edge_radial, centre, neighbour)
        return self.readout(h).squeeze(-1)

    def _closed_form_constants(self) -> dict | None:
        """`closed_form.matrices` when the closed form applies and no parameter requires grad
        (a driver's model), kept until a parameter changes (in place, or by a move to another
        device or dtype); None otherwise (training, or a model of several layers). The
        parameters are listed once: a built model's modules stay, and casts and in-place
        changes (`load_state_dict` too) keep the parameter objects."""
        if self._parameter_list is None:
            self._parameter_list = tuple(self.parameters())  # walking the modules: ~40 µs
        parameters = self._parameter_list
        if any(p.requires_grad for p in parameters) or not closed_form.applies(self):
            return None
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in parameters)
        if self._closed_form is None or self._closed_form[0] != key:
            with torch.no_grad():
                self._closed_form = (key, closed_form.matrices(self))
        return self._closed_form[1]

    def energy(self, state: State, edges=None) -> torch.Tensor:
        return self._total(state, self.atomic_energies(state, edges))

    @staticmethod
    def _total(state: State, atomic) -> torch.Tensor:
        total = torch.zeros(state.n_structures, dtype=torch.float64, device=atomic.device)
        return total.index_add(0, state.batch, atomic).to(state.positions.dtype)


def _names(numbers):
    return symbols([z if 0 < z < 119 else 0 for z in numbers])


def fit_reference_energies(numbers_list, energies, species) -> np.ndarray:
    """Per-species energies (eV, in the order of `species`) minimising
    Σ_structures (E − Σ_s n_s E_s)²; minimum-norm when the compositions are collinear."""
    species = [int(z) for z in species]
    column = {z: k for k, z in enumerate(species)}
    counts = np.zeros((len(numbers_list), len(species)))
    for row, numbers in enumerate(numbers_list):
        numbers = np.asarray(numbers.cpu() if torch.is_tensor(numbers) else numbers).reshape(-1)
        for z, n in zip(*np.unique(numbers, return_counts=True)):
            if int(z) not in column:
                raise UserError(f"training structure {row} has species Z={int(z)} the model lacks")
            counts[row, column[int(z)]] = n
    energies = np.asarray(
        energies.detach().cpu() if torch.is_tensor(energies) else energies, dtype=np.float64
    ).reshape(-1)
    if len(energies) != len(counts):
        raise UserError(f"{len(energies)} energies for {len(counts)} structures")
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return solution


def average_num_neighbors(states, cutoff: float) -> float:
    """Mean number of neighbours within `cutoff` per atom over `states` (for the config's
    `avg_num_neighbors`)."""
    n_edges = n_atoms = 0
    for state in states if not isinstance(states, State) else [states]:
        i, _, _ = state_pairs(state, cutoff, full_list=True)
        n_edges += len(i)
        n_atoms += state.positions.shape[0]
    return n_edges / max(n_atoms, 1)


__all__ = [
    "BesselBasis",
    "EquivariantConfig",
    "EquivariantPotential",
    "average_num_neighbors",
    "fit_reference_energies",
    "polynomial_cutoff",
]
