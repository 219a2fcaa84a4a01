"""The i-PI PES of ipi-mts models: the same `WireEvaluator` as `ipi-mts serve`, inside i-PI.

Under `ipi-mts run` (or after `ipi_mts.motion.register()`) it is i-PI's PES `ipi_mts`, and the
species come from the simulation itself:

    <ffdirect name='fast'>
      <pes>ipi_mts</pes>
      <parameters>{model: water-pair, component: fast}</parameters>
    </ffdirect>

so a cheap model (the fast component of a pair) runs in i-PI's process: no socket round trip
and no polling thread per inner step. Plain i-PI loads it through the plugin file
`drivers/ipi_mts_pes.py` (`<pes>custom</pes><pes_path>…`, or `i-pi-py_driver -m custom -P …`),
and then needs `template` for the species.

Parameters: `model` (required), `component` (full|fast|slow), `template` (structure file
giving the species), `device` (torch device); any other key goes to the model. A list of
structures (i-PI's batched mode) is evaluated in one model call.
"""

import sys

import numpy as np
from ipi.pes.dummy import Dummy_driver

from ..errors import UserError
from ..state import numbers_from_symbols, read_species
from .evaluator import WireEvaluator

__DRIVER_NAME__ = "ipi_mts"  # i-PI's plugin declaration, literal as its scanner wants
__DRIVER_CLASS__ = "IpiMtsDriver"
PES_NAME = __DRIVER_NAME__  # <pes>ipi_mts</pes> once registered


class IpiMtsDriver(Dummy_driver):
    """i-PI PES for ipi-mts models: energies (Ha), forces (Ha/bohr), virial (Ha)."""

    def __init__(
        self, model=None, component="full", template=None, device=None, *args, verbose=False, **params
    ):
        params.pop("verbosity", None)  # i-PI's <ffdirect> adds its own verbosity flag
        if args:
            sys.exit(
                f"ipi_mts PES: error: unexpected positional parameters {list(args)}; "
                "use key=value (model=..., component=..., template=..., device=...)"
            )
        if model is None:
            sys.exit("ipi_mts PES: error: give the model, e.g. -o model=qtip4pf or {model: qtip4pf}")
        try:
            numbers = read_species(template) if template else None
            self.evaluator = WireEvaluator.from_name(
                str(model), str(component), numbers, device, **params
            )
        except UserError as e:
            # one line and a non-zero exit instead of a traceback from the driver script
            sys.exit(f"ipi_mts PES: error: {e}")
        super().__init__(verbose)

    def use_species(self, names) -> None:
        """The species of i-PI's atoms (`beads.names`), unless a template already gave them."""
        if self.evaluator.numbers is None:
            self.evaluator.numbers = np.asarray(numbers_from_symbols(list(names)), dtype=np.int64)

    def compute(self, cell, pos):
        """One structure: cell h (3, 3) bohr, positions (N, 3) bohr -> (energy, forces
        (N, 3), virial (3, 3), extras). Lists of them -> a list of such tuples, from one
        model call."""
        if isinstance(cell, list):
            if not isinstance(pos, list) or len(cell) != len(pos):
                raise ValueError("batched mode needs lists of cells and positions of the same length")
            cells = np.stack([np.asarray(h, dtype=np.float64).reshape(3, 3) for h in cell])
            positions = np.stack([np.asarray(q, dtype=np.float64).reshape(-1, 3) for q in pos])
            energies, forces, virials, extras = self.evaluator(cells, positions)
            return [
                (float(energies[i]), forces[i], virials[i], extras[i]) for i in range(len(cell))
            ]
        cells = np.asarray(cell, dtype=np.float64).reshape(1, 3, 3)
        positions = np.asarray(pos, dtype=np.float64).reshape(1, -1, 3)
        energies, forces, virials, extras = self.evaluator(cells, positions)
        return float(energies[0]), forces[0], virials[0], extras[0]


def use_simulation_species(simulation) -> None:
    """Give every `<ffdirect><pes>ipi_mts</pes>` forcefield of a loaded i-PI simulation the
    species of its atoms (i-PI passes a PES positions only)."""
    names = simulation.syslist[0].beads.names
    for ff in simulation.fflist.values():
        driver = getattr(ff, "driver", None)
        if isinstance(driver, IpiMtsDriver):
            driver.use_species(names)
