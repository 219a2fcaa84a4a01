"""Model files: one self-describing file per trained model or fast/slow pair.

A model file is `torch.save` of a plain dict (no pickled classes or code) and is read back
with `torch.load(path, weights_only=True)`, which refuses anything else:

    {
      "format": "ipi-mts-model",
      "version": 1,
      "kind": "single" | "pair",
      "units": {"energy": "eV", "length": "Å"},
      "species": [1, 8],                       # atomic numbers
      "cutoffs": {"full": 5.0}                 # Å; a pair: {"fast": 2.0, "slow": 5.0, "full": 5.0}
      "masses": [1.008, 15.999] | None,        # amu, in the order of species (optional)
      "metadata": {...},                       # free-form, JSON-able (training details)
      "software": {"ipi_mts": ..., "torch": ..., "e3nn": ...},
      "components": {                          # "full" for a single model, "fast" and "slow"
        "full": {                              # for a pair (and optionally its "transfer",
                                               # architecture "bonded": see pair.py)
          "architecture": "equivariant",
          "config": {...},                     # EquivariantConfig.to_dict()
          "weights": {name: tensor, ...},      # the module's state_dict
        },
      },
    }

A map file (kind "map", `save_map` / `load_map`) holds a long-time-step map of
`ipi_mts.maps` (S = τ[H + H_θ], see maps/generating.py) instead of an energy model:

      "kind": "map",
      "masses": [...],                         # required: the map was made for these masses
      "cutoffs": {"correction": 3.0},          # Å, of each learned component
      "map": {
        "stride_fs": 1.0,                      # τ: the only time step the map may be used with
        "anchor": {"reference": "qtip4pf", "params": {}}   # V: a reference potential by name
                | {"embedded": "anchor"},      #    or a learned model, components["anchor"]
        "kinetic_scale_eV": 0.025852 | None,   # E₀ of H_θ's momentum features (None: no H_θ)
        "solver": {"tol": 1e-9, "max_iter": 100, "memory": 20, "fallback_substeps": 4,
                   "guess_substeps": 1, "newton": false, "blocks": "molecules"},   # the last three optional
        "predictor": {"substeps": 1},          # only with a "predictor" component
      },
      "components": {"correction": {"architecture": "momentum-correction", ...}}  # or {}:
                                               # the pure implicit-midpoint map of V
                  # optional: "predictor" (momentum-correction), the g_θ of a learned direct
                  # predictor (maps/direct.py), the solver's initial guess

`load_model` / `load_map` check all of it (format, version, kind, units, components, config,
that the weights match the shapes the config implies and are finite) and turn any problem
into a one-line UserError that names the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

import torch

from ..errors import UserError
from .base import EnergyModel
from .equivariant import EquivariantConfig, EquivariantPotential
from .pair import LearnedPair

FORMAT = "ipi-mts-model"
VERSION = 1
SUFFIX = ".pt"
UNITS = {"energy": "eV", "length": "Å"}
KINDS = {"single": ("full",), "pair": ("fast", "slow"), "map": ()}  # required components
MAP_COMPONENTS = {"correction": "momentum-correction", "anchor": "equivariant", "predictor": "momentum-correction"}  # optional
PAIR_COMPONENTS = {"transfer": "bonded"}  # optional
SOLVER = {"tol": float, "max_iter": int, "memory": int, "fallback_substeps": int,
          "guess_substeps": int, "newton": bool, "blocks": str}
SOLVER_OPTIONAL = {"guess_substeps", "newton", "blocks"}  # absent from the files of earlier versions
# architecture name -> (module class, config class with to_dict/from_dict)
ARCHITECTURES = {"equivariant": (EquivariantPotential, EquivariantConfig)}


def _architectures() -> dict:
    """ARCHITECTURES and the maps' momentum correction (imported late: maps build on
    potentials, not the other way round)."""
    from ..maps.generating import MomentumCorrection
    from .bonded import BondedConfig, BondedTerms

    return ARCHITECTURES | {MomentumCorrection.architecture: (MomentumCorrection, EquivariantConfig),
                            BondedTerms.architecture: (BondedTerms, BondedConfig)}


def _jsonable(value, what: str):
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise UserError(f"{what} must hold JSON values only (str, numbers, lists, dicts): {e}") from None


def _actual_config(model):
    """The config, with the dtype the parameters have now (the module may have been cast)."""
    dtype = {torch.float32: "float32", torch.float64: "float64"}.get(getattr(model, "dtype", None))
    return dataclasses.replace(model.config, dtype=dtype) if dtype else model.config


def _component_entry(model: EnergyModel, allowed=ARCHITECTURES | dict.fromkeys(PAIR_COMPONENTS.values())) -> dict:
    name = getattr(model, "architecture", None)
    if name not in allowed:
        raise UserError(f"cannot save a {type(model).__name__}: not a learned architecture")
    return {
        "architecture": name,
        "config": _jsonable(_actual_config(model).to_dict(), "model config"),
        "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def save_model(path, model: EnergyModel, metadata: dict | None = None, masses=None) -> Path:
    """Write `model` (an EquivariantPotential, or a LearnedPair) to `path`, atomically.

    `metadata`: free-form JSON-able dict (training set, losses, seeds, ...); `masses`: amu,
    a dict {Z: mass} or a sequence in the order of the model's species (optional)."""
    path = Path(path)
    if isinstance(model, LearnedPair):
        kind, components = "pair", {"fast": model.fast, "slow": model.slow}
        if model.transfer is not None:
            components["transfer"] = model.transfer
    else:
        kind, components = "single", {"full": model}
    entries = {name: _component_entry(m) for name, m in components.items()}
    species = [int(z) for z in model.species]
    cutoffs = {name: float(m.cutoff) for name, m in components.items()}
    cutoffs["full"] = max(cutoffs.values())
    masses = None if masses is None else _masses_list(masses, species)
    atomic_save(_content(kind, species, cutoffs, masses, metadata, entries), path)
    return path


def _masses_list(masses, species) -> list[float]:
    """amu in the order of `species`, from a dict {Z: amu} or a sequence."""
    if isinstance(masses, dict):
        missing = [z for z in species if z not in masses and str(z) not in masses]
        if missing:
            raise UserError(f"masses given without species Z={missing}")
        masses = [masses.get(z, masses.get(str(z))) for z in species]
    masses = [float(m) for m in masses]
    if len(masses) != len(species) or not all(m > 0 and math.isfinite(m) for m in masses):
        raise UserError(f"masses {masses} are not one positive mass per species {species}")
    return masses


def _content(kind, species, cutoffs, masses, metadata, components, **extra) -> dict:
    import e3nn

    from .. import __version__

    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "units": dict(UNITS),
        "species": species,
        "cutoffs": cutoffs,
        "masses": masses,
        "metadata": _jsonable(dict(metadata or {}), "model metadata"),
        "software": {
            "ipi_mts": str(__version__),
            "torch": str(torch.__version__),
            "e3nn": str(e3nn.__version__),
        },
        "components": components,
        **extra,
    }


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a crash never leaves half a file.
    Written through a file object, so that the archive's inner name is torch's fixed one, not
    the temporary file's: the same content gives the same bytes (and hashes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- loading -----------------------------------------------------------------------------------
class _Bad(Exception):
    """What is wrong with a file (turned into a UserError naming it)."""


def _need(mapping, key, kind, where):
    if not isinstance(mapping, dict) or key not in mapping:
        raise _Bad(f"missing key {key!r}{where}")
    value = mapping[key]
    if not isinstance(value, kind):
        expected = getattr(kind, "__name__", kind)
        raise _Bad(f"{key!r}{where} is a {type(value).__name__}, expected {expected}")
    return value


def read_model_file(path) -> dict:
    """The raw, validated content of a model file (weights as CPU tensors)."""
    path = Path(path)
    try:
        return _read(path)
    except _Bad as e:
        raise UserError(f"{path}: {e}") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    text = text[0] if text else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read(path: Path) -> dict:
    if not path.exists():
        raise _Bad("no such model file")
    if path.is_dir():
        raise _Bad("is a directory, not a model file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for unreadable files
        reason = _first_line(e)
        if "Weights only load failed" in str(e):
            reason = "holds pickled objects or code, which are refused (only weights_only files load)"
        raise _Bad(f"not a readable model file ({type(e).__name__}: {reason})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        what = "a bare state_dict or other torch file" if isinstance(content, dict) else "a "
        what = what if isinstance(content, dict) else what + type(content).__name__
        raise _Bad(f"not an ipi-mts model file (no format {FORMAT!r}: {what})")
    version = content.get("version")
    if not isinstance(version, int) or version < 1:
        raise _Bad(f"bad format version {version!r}")
    if version > VERSION:
        raise _Bad(f"format version {version} is newer than this ipi-mts reads ({VERSION}): upgrade ipi-mts")
    kind = _need(content, "kind", str, "")
    if kind not in KINDS:
        raise _Bad(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    units = _need(content, "units", dict, "")
    if units != UNITS:
        raise _Bad(f"units {units} are not supported (expected {UNITS})")
    species = _need(content, "species", list, "")
    if not species or not all(isinstance(z, int) and 1 <= z <= 118 for z in species):
        raise _Bad(f"species {species} are not atomic numbers")
    masses = content.get("masses")
    if masses is not None and (
        not isinstance(masses, list)
        or len(masses) != len(species)
        or not all(isinstance(m, float | int) and m > 0 for m in masses)
    ):
        raise _Bad(f"masses {masses} are not one positive number per species")
    if kind == "map" and masses is None:
        raise _Bad("a map file needs masses (the map is made for them)")
    _need(content, "metadata", dict, "")
    _need(content, "cutoffs", dict, "")
    components = _need(content, "components", dict, "")
    if kind == "map":
        expected = {name: MAP_COMPONENTS[name] for name in components if name in MAP_COMPONENTS}
        if len(expected) < len(components):
            raise _Bad(f"a map file has components among {list(MAP_COMPONENTS)}, found {sorted(components)}")
        _check_map(content)
    else:
        expected = {name: None for name in KINDS[kind]}
        optional = {name: PAIR_COMPONENTS[name] for name in components if kind == "pair" and name in PAIR_COMPONENTS}
        if sorted(set(components) - set(optional)) != sorted(expected):
            raise _Bad(f"a {kind} file needs components {list(KINDS[kind])}, found {sorted(components)}")
        expected |= optional
    for name, want in expected.items():
        where = f" in component {name!r}"
        entry = _need(components, name, dict, "")
        arch = _need(entry, "architecture", str, where)
        if (arch not in ARCHITECTURES) if want is None else (arch != want):
            raise _Bad(f"unknown architecture {arch!r}{where}")
        _need(entry, "config", dict, where)
        weights = _need(entry, "weights", dict, where)
        if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
            raise _Bad(f"weights{where} are not a dict of tensors")
    return content


def _check_map(content: dict) -> None:
    """The "map" section of a map file (module docstring)."""
    section = _need(content, "map", dict, "")
    stride = _need(section, "stride_fs", float | int, " in 'map'")
    if not (math.isfinite(stride) and stride > 0):
        raise _Bad(f"stride_fs {stride!r} is not a positive time step (fs)")
    anchor = _need(section, "anchor", dict, " in 'map'")
    embedded = "anchor" in content["components"]
    if embedded != ("embedded" in anchor) or ("reference" in anchor) == ("embedded" in anchor):
        raise _Bad(
            "the map's anchor must be either {'reference': NAME, 'params': {...}} or "
            "{'embedded': 'anchor'} with an 'anchor' component"
        )
    if not embedded:
        _need(anchor, "reference", str, " in the map's anchor")
        _need(anchor, "params", dict, " in the map's anchor")
    scale = section.get("kinetic_scale_eV")
    if ("correction" in content["components"]) != (scale is not None):
        raise _Bad("kinetic_scale_eV must be given exactly when the map has a correction")
    if scale is not None and not (isinstance(scale, float | int) and math.isfinite(scale) and scale > 0):
        raise _Bad(f"kinetic_scale_eV {scale!r} is not a positive energy (eV)")
    predictor = section.get("predictor")
    if ("predictor" in content["components"]) != (predictor is not None):
        raise _Bad("the map section's 'predictor' settings must be given exactly when the map has a predictor")
    if predictor is not None:
        substeps = _need(predictor, "substeps", int, " in the map's predictor")
        if isinstance(substeps, bool) or substeps < 1:
            raise _Bad(f"predictor substeps {substeps!r} must be >= 1")
    solver = _need(section, "solver", dict, " in 'map'")
    if not set(SOLVER) - SOLVER_OPTIONAL <= set(solver) <= set(SOLVER):
        raise _Bad(f"solver settings must be {sorted(SOLVER)}, found {sorted(solver)}")
    if not isinstance(solver.get("newton", False), bool):
        raise _Bad(f"solver setting newton = {solver['newton']!r} must be true or false")
    from ..maps.solver import BLOCKS

    if solver.get("blocks", BLOCKS[0]) not in BLOCKS:
        raise _Bad(f"solver setting blocks = {solver['blocks']!r} must be one of {', '.join(BLOCKS)}")
    for key, kind in SOLVER.items():
        if kind in (bool, str) or key not in solver:
            continue
        value = _need(solver, key, float | int if kind is float else int, " in the map's solver")
        ok = value > 0 if key == "tol" else value >= (0 if key == "memory" else 1)
        if isinstance(value, bool) or not (math.isfinite(value) and ok):
            raise _Bad(f"solver setting {key} = {value!r} is out of range")


def _some(keys, n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _build(name: str, entry: dict, species, dtype) -> EnergyModel:
    module_cls, config_cls = _architectures()[entry["architecture"]]
    values = dict(entry["config"])
    if dtype is not None:
        values["dtype"] = dtype
    try:
        config = config_cls.from_dict(values)
    except UserError as e:
        raise _Bad(f"component {name!r}: {e}") from None
    if list(config.species) != list(species):
        raise _Bad(f"component {name!r} has species {list(config.species)}, the file says {species}")
    model = module_cls(config)
    expected = model.state_dict()
    weights = entry["weights"]
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weights ({_some(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_some(unexpected)})")
        raise _Bad(f"component {name!r} does not match its config: {'; '.join(parts)}")
    for key, want in expected.items():
        got = weights[key]
        if tuple(got.shape) != tuple(want.shape):
            raise _Bad(
                f"component {name!r}: weight {key} has shape {tuple(got.shape)}, "
                f"the config implies {tuple(want.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise _Bad(f"component {name!r}: weight {key} is not finite (NaN or inf)")
    model.load_state_dict(weights)
    return model


def load_model(path, device=None, dtype: str | None = None) -> EnergyModel:
    """The model stored at `path`: an EquivariantPotential ("single") or a LearnedPair
    ("pair"), in eval mode, on `device` (default CPU), in `dtype` ("float32"/"float64";
    default: as saved). The file's `metadata`, `masses` ({Z: amu} or None) and `path` are
    attached to the returned model (and to both parts of a pair) as attributes."""
    path = Path(path)
    if dtype is not None and dtype not in ("float32", "float64"):
        raise UserError(f"bad dtype {dtype!r}: choose float32 or float64")
    try:
        content = _read(path)
        if content["kind"] == "map":
            raise _Bad("is a long-time-step map, not an energy model: use it as "
                       "<dynamics mode='learned_map' model='...'> (or load_map)")
        species = content["species"]
        built = {
            name: _build(name, entry, species, dtype)
            for name, entry in content["components"].items()
        }
    except _Bad as e:
        raise UserError(f"{path}: {e}") from None
    model = built["full"] if content["kind"] == "single" else LearnedPair(built["fast"], built["slow"], built.get("transfer"))
    masses = content.get("masses")
    info = {
        "metadata": content["metadata"],
        "masses": None if masses is None else dict(zip(species, (float(m) for m in masses))),
        "model_file": str(path),
    }
    parts = [model.component(name) for name in ("fast", "slow")] if content["kind"] == "pair" else []
    for m in {id(m): m for m in [model, *built.values(), *parts]}.values():
        for key, value in info.items():
            setattr(m, key, value)
    if device is not None:
        try:
            model = model.to(torch.device(device))
        except (RuntimeError, AssertionError) as e:
            raise UserError(f"cannot move model {path} to device {device!r}: {_first_line(e)}") from None
    return model.eval()


def load_component(
    path, component: str = "full", device=None, dtype: str | None = None
) -> EnergyModel:
    """One component ("fast" | "slow" | "full") of the model stored at `path`."""
    model = load_model(path, device=device, dtype=dtype)
    if isinstance(model, LearnedPair):
        return model.component(component)
    if component != "full":
        raise UserError(
            f"{path} holds a single model: it has only the 'full' component, not {component!r}"
        )
    return model


# --- long-time-step maps -----------------------------------------------------------------------
def ipi_masses(species) -> list[float]:
    """i-PI's element masses (amu) of `species`: what an i-PI run uses unless told otherwise."""
    from ipi.utils.units import Elements

    from ..state import symbols

    return [float(Elements.mass_list[s]) for s in symbols(species)]


def save_map(
    path,
    midpoint_map,
    anchor: str | None = None,
    anchor_params: dict | None = None,
    species=None,
    masses=None,
    metadata: dict | None = None,
) -> Path:
    """Write a `maps.MidpointMap` to `path`, atomically: its stride, solver settings,
    correction H_θ (or none), learned predictor (if it has a `maps.LearnedPredictor`; its
    Verlet part uses the anchor), and its anchor potential V, which is either a reference
    potential named by `anchor` (with `anchor_params`; e.g. "qtip4pf", "ase:EMT") or, with
    `anchor=None`, the map's own learned potential, embedded. `species` (atomic numbers)
    default to the learned parts'; `masses` (amu, {Z: m} or a sequence) to i-PI's."""
    from ..maps import LearnedPredictor
    from . import ASE_PREFIX, REFERENCE_POTENTIALS

    path = Path(path)
    generating = midpoint_map.generating
    correction, potential = generating.correction, generating.potential
    predictor = midpoint_map.predictor if isinstance(midpoint_map.predictor, LearnedPredictor) else None
    if predictor is not None and predictor.potential is not potential:
        raise UserError("the learned predictor's Verlet step must use the map's anchor potential")
    network = None if predictor is None else predictor.network
    components = {}
    for name, m in (("correction", correction), ("predictor", network)):
        if m is not None:
            components[name] = _component_entry(m, _architectures())
    if anchor is None:
        if getattr(potential, "architecture", None) not in ARCHITECTURES:
            raise UserError(
                f"the map's potential is a {type(potential).__name__}: name it with anchor= "
                "(a reference potential) or use a learned one, which is embedded"
            )
        components["anchor"] = _component_entry(potential)
        anchor_entry = {"embedded": "anchor"}
    elif anchor in REFERENCE_POTENTIALS or anchor.lower().startswith(ASE_PREFIX):
        anchor_entry = {"reference": anchor, "params": _jsonable(dict(anchor_params or {}), "anchor params")}
    else:
        raise UserError(
            f"anchor {anchor!r} is not a reference potential ({', '.join(REFERENCE_POTENTIALS)}, "
            f"{ASE_PREFIX}NAME): a learned anchor is embedded (anchor=None)"
        )
    learned = [m for m in (correction, network, None if anchor else potential) if m is not None]
    if species is None:
        if not learned:
            raise UserError("give the species of a map without learned parts (species=[1, 8], ...)")
        species = learned[0].species
    species = [int(z) for z in species]
    for m in learned:
        if list(m.species) != species:
            raise UserError(f"species {species} differ from the learned parts' {list(m.species)}")
    section = {
        "stride_fs": float(generating.timestep_fs),
        "anchor": anchor_entry,
        "kinetic_scale_eV": None if correction is None else float(correction.kinetic_scale),
        "solver": {key: kind(getattr(midpoint_map, key)) for key, kind in SOLVER.items()},
    }
    if predictor is not None:
        section["predictor"] = {"substeps": int(predictor.substeps)}
    cutoffs = {name: float(_actual_config(m).cutoff) for name, m in
               (("correction", correction), ("predictor", network), ("anchor", None if anchor else potential))
               if m is not None}
    masses = _masses_list(ipi_masses(species) if masses is None else masses, species)
    atomic_save(_content("map", species, cutoffs, masses, metadata, components, map=section), path)
    return path


def map_file(name) -> Path:
    """The map file that `name` stands for: a path, or a shipped map NAME (ipi_mts/models/NAME.pt)."""
    from . import MODELS_DIR, model_path

    path = model_path(name)
    if path is None:
        raise UserError(f"unknown map {name!r}: not a file, nor a shipped map "
                        f"({MODELS_DIR / (str(name) + SUFFIX)} is missing)")
    return path


def load_map(name, dtype: str = "float64"):
    """The `maps.MidpointMap` stored at `name` (a path, or a shipped map's NAME), learned
    parts in `dtype` (float64 by default: the implicit solve wants it). Attached attributes:
    `species` (atomic numbers), `masses` ({Z: amu}), `metadata`, `model_file`, `anchor`
    (the reference name, or "embedded")."""
    from ..maps import GeneratingFunction, LearnedPredictor, MidpointMap
    from . import load_potential

    path = map_file(name)
    try:
        content = _read(path)
        if content["kind"] != "map":
            raise _Bad(f"holds a {content['kind']} energy model, not a long-time-step map")
        species, section = content["species"], content["map"]
        built = {k: _build(k, v, species, dtype) for k, v in content["components"].items()}
        correction = built.get("correction")
        if correction is not None and float(correction.kinetic_scale) != float(section["kinetic_scale_eV"]):
            raise _Bad(
                f"kinetic_scale_eV {section['kinetic_scale_eV']} differs from the correction's "
                f"{float(correction.kinetic_scale)}"
            )
        anchor = section["anchor"].get("reference", "embedded")
        if "anchor" in built:
            potential = built["anchor"]
        else:
            try:
                potential = load_potential(anchor, **section["anchor"]["params"])
            except UserError as e:
                raise _Bad(f"anchor: {e}") from None
    except _Bad as e:
        raise UserError(f"{path}: {e}") from None
    generating = GeneratingFunction(potential.eval(), section["stride_fs"], correction)
    if correction is not None:
        correction.eval()
    predictor = None
    if "predictor" in built:
        predictor = LearnedPredictor(generating.potential, built["predictor"].eval(), section["predictor"]["substeps"])
    midpoint_map = MidpointMap(generating, predictor, **section["solver"])
    midpoint_map.species = list(species)
    midpoint_map.masses = dict(zip(species, (float(m) for m in content["masses"])))
    midpoint_map.metadata = content["metadata"]
    midpoint_map.model_file = str(path)
    midpoint_map.anchor = anchor
    return midpoint_map


__all__ = [
    "FORMAT",
    "SUFFIX",
    "VERSION",
    "ipi_masses",
    "load_component",
    "load_map",
    "load_model",
    "map_file",
    "read_model_file",
    "save_map",
    "save_model",
]
