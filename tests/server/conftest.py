"""Small systems and model choices shared by the server tests (real i-PI, real sockets)."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from ipi_mts.data.water import water_box
from ipi_mts.server.evaluator import WireEvaluator
from ipi_mts.state import read_species
from ipi_mts.testing_ipi import write_xyz


@dataclass
class System:
    """An init.xyz in a test folder and the model that serves it."""

    init: Path
    model: str
    params: dict = field(default_factory=dict)
    template: bool = True  # pass the init file as the species template

    def serve_args(self) -> list[str]:
        args = []
        for k, v in self.params.items():
            args += ["--param", f"{k}={v}"]
        if self.template:
            args += ["--template", str(self.init)]
        return args

    def plugin_option(self) -> str:
        """`-o` of i-pi-py_driver."""
        items = [f"model={self.model}"] + [f"{k}={v}" for k, v in self.params.items()]
        if self.template:
            items.append(f"template={self.init}")
        return ",".join(items)

    def plugin_kwargs(self) -> dict:
        """Keyword arguments of the plugin class, as i-PI passes them."""
        kw = {"model": self.model, **self.params}
        if self.template:
            kw["template"] = str(self.init)
        return kw

    def structure(self):
        """The init structure as i-PI sends it: h (3, 3) bohr, vectors as columns, and
        positions (N, 3) bohr."""
        from ipi_mts import units

        lines = self.init.read_text().splitlines()
        n = int(lines[0])
        a, b, c = map(float, lines[1].split()[2:5])
        q = np.array([[float(x) for x in line.split()[1:4]] for line in lines[2 : 2 + n]])
        return units.cell_to_wire(np.diag([a, b, c])), units.positions_to_wire(q)

    def ffdirect_parameters(self) -> str:
        items = [f"model: {self.model}"] + [f"{k}: {v}" for k, v in self.params.items()]
        if self.template:
            items.append(f"template: {self.init}")
        return "{" + ", ".join(items) + "}"

    def evaluator(self) -> WireEvaluator:
        numbers = read_species(self.init) if self.template else None
        return WireEvaluator.from_name(self.model, "full", numbers, "cpu", **self.params)


@pytest.fixture
def argon(tmp_path) -> System:
    """Five atoms in harmonic wells (E = ½k Σ r²), in a 10 Å box."""
    rng = np.random.default_rng(42)
    init = write_xyz(tmp_path / "init.xyz", ["Ar"] * 5, rng.normal(scale=0.8, size=(5, 3)), [10, 10, 10])
    return System(init, "harmonic", {"k": 0.7})


@pytest.fixture
def water(tmp_path) -> System:
    """Eight q-TIP4P/F waters in a periodic box; species from the model's O,H,H default."""
    atoms = water_box(8, seed=3)
    init = write_xyz(
        tmp_path / "init.xyz", atoms.get_chemical_symbols(), atoms.positions, atoms.cell.lengths()
    )
    return System(init, "qtip4pf", template=False)


@pytest.fixture
def learned_water(water) -> System:
    """The same waters served by a learned model, which needs the species template."""
    return System(water.init, "water-baseline")
