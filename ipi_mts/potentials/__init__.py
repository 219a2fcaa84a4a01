"""Energy models by name: the one registry that `ipi-mts serve`, the PES plugin and the
launcher share."""

from __future__ import annotations

import importlib

from ..errors import UserError
from .base import EnergyModel, Evaluation, evaluate

# name -> (module, class, fixed keyword arguments)
REFERENCE_POTENTIALS = {
    "qtip4pf": ("qtip4pf", "QTIP4PF", {"part": "full"}),
    "qtip4pf-intra": ("qtip4pf", "QTIP4PF", {"part": "intra"}),
    "qtip4pf-inter": ("qtip4pf", "QTIP4PF", {"part": "inter"}),
    "lj": ("lennard_jones", "LennardJones", {}),
    "harmonic": ("harmonic", "Harmonic", {}),
}


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
    """The energy model called `name` (a reference potential), built with `params`.

    `component` selects the fast or slow part of a learned pair; reference potentials have
    only `full`.
    """
    if name not in REFERENCE_POTENTIALS:
        known = ", ".join(sorted(REFERENCE_POTENTIALS))
        raise UserError(f"unknown model {name!r}; known models: {known}")
    if component != "full":
        raise UserError(f"model {name!r} has no {component!r} component (only 'full')")
    module, cls, fixed = REFERENCE_POTENTIALS[name]
    model_cls = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    kwargs = {k: _number(v) for k, v in params.items()}
    try:
        return model_cls(**fixed, **kwargs)
    except TypeError as e:
        raise UserError(f"bad parameters for model {name!r}: {e}") from None


__all__ = ["EnergyModel", "Evaluation", "evaluate", "load_potential", "REFERENCE_POTENTIALS"]
