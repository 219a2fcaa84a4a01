"""Energy models by name: the one registry that `ipi-mts serve`, the PES plugin and the
launcher share."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import UserError
from .base import EnergyModel, Evaluation, evaluate, forces_and_laplacian

# name -> (module, class, fixed keyword arguments)
REFERENCE_POTENTIALS = {
    "qtip4pf": ("qtip4pf", "QTIP4PF", {"part": "full"}),
    "qtip4pf-intra": ("qtip4pf", "QTIP4PF", {"part": "intra"}),
    "qtip4pf-inter": ("qtip4pf", "QTIP4PF", {"part": "inter"}),
    "lj": ("lennard_jones", "LennardJones", {}),
    "harmonic": ("harmonic", "Harmonic", {}),
}

# shipped learned models: NAME -> ipi_mts/models/NAME.pt (trained and added separately)
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHIPPED_MODELS = ("water-pair", "water-pair-resplit", "water-baseline")
MODEL_FILE_PARAMS = ("dtype", "mollify")
ASE_PREFIX = "ase:"  # ase:NAME, any ASE calculator (ase_calculator.py)


def _number(value):
    """Parameters arrive as strings from i-PI; numbers become floats (ints stay ints)."""
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def load_potential(name: str, component: str = "full", **params) -> EnergyModel:
    """The energy model called `name`, built with `params`: a reference potential, a model
    file path (`*.pt`, see `model_file`), or a shipped model NAME (`ipi_mts/models/NAME.pt`).

    `component` selects the fast or slow part of a learned pair; reference potentials and
    single learned models have only `full`. A model file takes `dtype` (float32/float64) and
    `mollify` ('rigid:R0:THETA0': the model seen through MOLLY's rigid averaging, mollified.py).
    `ase:NAME` is ASE's calculator NAME (e.g. ase:EMT), built with `params`.
    """
    is_ase = name.lower().startswith(ASE_PREFIX)
    if name not in REFERENCE_POTENTIALS and not is_ase:
        path = _model_file(name)
        unknown = sorted(set(params) - set(MODEL_FILE_PARAMS))
        if unknown:
            raise UserError(
                f"bad parameters for model {name!r}: {', '.join(unknown)} "
                f"(a model file takes only {', '.join(MODEL_FILE_PARAMS)})"
            )
        from .model_file import load_component

        model = load_component(path, component, dtype=params.get("dtype"))
        if params.get("mollify") is not None:  # MOLLY's rigid averaging (mollified.py)
            from .mollified import RigidMollified, parse_mollify

            model = RigidMollified(model, *parse_mollify(params["mollify"]))
        return model
    if component != "full":
        raise UserError(f"model {name!r} has no {component!r} component (only 'full')")
    kwargs = {k: _number(v) for k, v in params.items()}
    if is_ase:
        from .ase_calculator import ASECalculator

        return ASECalculator(name[len(ASE_PREFIX) :], **kwargs)
    module, cls, fixed = REFERENCE_POTENTIALS[name]
    model_cls = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    try:
        return model_cls(**fixed, **kwargs)
    except TypeError as e:
        raise UserError(f"bad parameters for model {name!r}: {e}") from None


def shipped_models() -> list[str]:
    """Names of the learned models installed in `ipi_mts/models/`."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.pt")) if MODELS_DIR.is_dir() else []


def model_path(name) -> Path | None:
    """The file that `name` stands for: a path (returned even when missing, for the loader to
    report with the name), a shipped model's file `ipi_mts/models/NAME.pt`, or None."""
    path = Path(os.path.expanduser(str(name)))
    if path.exists() or path.suffix == ".pt" or os.sep in str(name) or "/" in str(name):
        return path
    shipped = MODELS_DIR / f"{name}.pt"
    return shipped if shipped.is_file() else None


def _model_file(name: str) -> Path:
    """The model file that `name` stands for (a path, or a shipped model's name)."""
    path = model_path(name)
    if path is not None:
        return path
    if name in SHIPPED_MODELS:
        raise UserError(
            f"shipped model {name!r} is not installed ({MODELS_DIR / (name + '.pt')} is missing): "
            "train it, or give the path of a model file"
        )
    known = ", ".join(sorted(REFERENCE_POTENTIALS) + shipped_models() + [ASE_PREFIX + "NAME"])
    raise UserError(
        f"unknown model {name!r}: not a reference potential, a shipped model or a model file; "
        f"known models: {known}"
    )


__all__ = [
    "EnergyModel",
    "Evaluation",
    "evaluate",
    "forces_and_laplacian",
    "load_potential",
    "model_path",
    "shipped_models",
    "REFERENCE_POTENTIALS",
    "SHIPPED_MODELS",
]
