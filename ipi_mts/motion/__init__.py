"""i-PI motion classes of ipi-mts, registered into i-PI at launch.

Call `register()` before i-PI parses any XML (`ipi-mts run` does); then
`<dynamics mode='mts' thermostat_placement='outer|inner'>` is available, with `<nmts>`,
`<mts_weights>`, any i-PI thermostat, path integrals and the `<mts_guard>` settings.
"""

from .monitor import GuardSettings, SimulationBlewUp, summary, summary_line
from .registration import (
    MODE,
    PLACEMENTS,
    RUN_HINT,
    interactive_simulation,
    is_registered,
    load_simulation,
    register,
)

__all__ = [
    "GuardSettings",
    "MODE",
    "PLACEMENTS",
    "RUN_HINT",
    "SimulationBlewUp",
    "interactive_simulation",
    "is_registered",
    "load_simulation",
    "register",
    "summary",
    "summary_line",
]
