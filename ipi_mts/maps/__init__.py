"""Long-time-step maps from learned midpoint generating functions (arXiv 2508.01068).

`generating` (S and its gradients), `solver` (the implicit solve, `MidpointMap.step`),
`direct` (the explicit predictors and the fallback), `system` (masses, species, cell in i-PI units).
"""

from .direct import LearnedPredictor, VerletPredictor, velocity_verlet
from .generating import GeneratingFunction, MomentumCorrection, harmonic_action_factor
from .solver import BlockNewton, MidpointMap, SolveInfo, fixed_point
from .system import System

__all__ = [
    "BlockNewton",
    "GeneratingFunction",
    "LearnedPredictor",
    "MidpointMap",
    "MomentumCorrection",
    "SolveInfo",
    "System",
    "VerletPredictor",
    "fixed_point",
    "harmonic_action_factor",
    "velocity_verlet",
]
