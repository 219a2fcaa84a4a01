"""i-PI motion classes of ipi-mts, registered into i-PI at launch.

Call `register()` before i-PI parses any XML (`ipi-mts run` does); then
`<dynamics mode='mts' thermostat_placement='outer|inner'>` is available, with `<nmts>`,
`<mts_weights>`, any i-PI thermostat, path integrals and the `<mts_guard>` settings; and
`<dynamics mode='learned_map' model='MAP' [energy_rescaling='true']>`, a long-time-step map
(ipi_mts.maps) in place of the Hamiltonian part of the step, NVE or OBABO NVT
(learned_map.py).
"""

from .monitor import GuardSettings, SimulationBlewUp, summary, summary_line
from .registration import (
    MAP_MODE,
    MODE,
    PLACEMENTS,
    RUN_HINT,
    RUN_HINT_ATTR,
    interactive_simulation,
    is_registered,
    load_simulation,
    register,
)

__all__ = [
    "GuardSettings",
    "MAP_MODE",
    "MODE",
    "PLACEMENTS",
    "RUN_HINT",
    "RUN_HINT_ATTR",
    "SimulationBlewUp",
    "interactive_simulation",
    "is_registered",
    "load_simulation",
    "register",
    "summary",
    "summary_line",
]
