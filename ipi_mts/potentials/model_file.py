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
      "components": {                          # "full" for a single model,
        "full": {                              # "fast" and "slow" for a pair
          "architecture": "equivariant",
          "config": {...},                     # EquivariantConfig.to_dict()
          "weights": {name: tensor, ...},      # the module's state_dict
        },
      },
    }

`load_model` checks all of it (format, version, kind, units, components, config, that the
weights match the shapes the config implies and are finite) and turns any problem into a
one-line UserError that names the file.
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
KINDS = {"single": ("full",), "pair": ("fast", "slow")}
# architecture name -> (module class, config class with to_dict/from_dict)
ARCHITECTURES = {"equivariant": (EquivariantPotential, EquivariantConfig)}


def _jsonable(value, what: str):
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise UserError(f"{what} must hold JSON values only (str, numbers, lists, dicts): {e}") from None


def _actual_config(model):
    """The config, with the dtype the parameters have now (the module may have been cast)."""
    dtype = {torch.float32: "float32", torch.float64: "float64"}.get(getattr(model, "dtype", None))
    return dataclasses.replace(model.config, dtype=dtype) if dtype else model.config


def _component_entry(model: EnergyModel) -> dict:
    name = getattr(model, "architecture", None)
    if name not in ARCHITECTURES:
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
    else:
        kind, components = "single", {"full": model}
    entries = {name: _component_entry(m) for name, m in components.items()}
    species = [int(z) for z in model.species]
    cutoffs = {name: float(m.cutoff) for name, m in components.items()}
    cutoffs["full"] = max(cutoffs.values())
    if masses is not None:
        if isinstance(masses, dict):
            missing = [z for z in species if z not in masses and str(z) not in masses]
            if missing:
                raise UserError(f"masses given without species Z={missing}")
            masses = [masses.get(z, masses.get(str(z))) for z in species]
        masses = [float(m) for m in masses]
        if len(masses) != len(species) or not all(m > 0 and math.isfinite(m) for m in masses):
            raise UserError(f"masses {masses} are not one positive mass per species {species}")
    import e3nn

    from .. import __version__

    content = {
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
        "components": entries,
    }
    atomic_save(content, path)
    return path


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
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
    _need(content, "metadata", dict, "")
    _need(content, "cutoffs", dict, "")
    components = _need(content, "components", dict, "")
    if sorted(components) != sorted(KINDS[kind]):
        raise _Bad(f"a {kind} file needs components {list(KINDS[kind])}, found {sorted(components)}")
    for name in KINDS[kind]:
        where = f" in component {name!r}"
        entry = _need(components, name, dict, "")
        arch = _need(entry, "architecture", str, where)
        if arch not in ARCHITECTURES:
            raise _Bad(f"unknown architecture {arch!r}{where}")
        _need(entry, "config", dict, where)
        weights = _need(entry, "weights", dict, where)
        if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
            raise _Bad(f"weights{where} are not a dict of tensors")
    return content


def _some(keys, n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _build(name: str, entry: dict, species, dtype) -> EnergyModel:
    module_cls, config_cls = ARCHITECTURES[entry["architecture"]]
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
        species = content["species"]
        built = {
            name: _build(name, content["components"][name], species, dtype)
            for name in KINDS[content["kind"]]
        }
    except _Bad as e:
        raise UserError(f"{path}: {e}") from None
    model = built["full"] if content["kind"] == "single" else LearnedPair(built["fast"], built["slow"])
    masses = content.get("masses")
    info = {
        "metadata": content["metadata"],
        "masses": None if masses is None else dict(zip(species, (float(m) for m in masses))),
        "model_file": str(path),
    }
    for m in [model, *built.values()]:
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


__all__ = [
    "FORMAT",
    "SUFFIX",
    "VERSION",
    "load_component",
    "load_model",
    "read_model_file",
    "save_model",
]
