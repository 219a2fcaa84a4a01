"""Force and energy errors of water models on ten frames of 216 q-TIP4P/F molecules from i-PI's
Fortran driver (`../shared/data`, the external reference of `tests/potentials/test_shipped_models.py`;
the models were trained on water-64), in float64.

    OMP_NUM_THREADS=1 python benchmarks/water216_errors.py water-baseline water-pair runs/train/x/pair.pt
"""

import argparse
from pathlib import Path

import numpy as np

from ipi_mts import units
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.state import State

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "qtip4pf-water216-ipi-f90.npz"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model names or files (a pair: its full energy)")
    args = parser.parse_args()
    data = dict(np.load(REFERENCE))
    state = State.from_wire(np.swapaxes(data["cell_bohr"], 1, 2), data["positions_bohr"], np.tile([8, 1, 1], 216))
    energy, forces = units.energy_from_wire(data["energy_ha"]), units.forces_from_wire(data["forces_ha_per_bohr"])
    print("| model | F MAE (meV/Å) | F RMSE (meV/Å) | E MAE (meV/atom) |\n|---|---|---|---|")
    for name in args.models:
        out = evaluate(load_potential(name, dtype="float64"), state)
        df = out.forces.detach().numpy().reshape(forces.shape) - forces
        de = np.abs(out.energy.detach().numpy() - energy).mean() / forces.shape[1]
        print(f"| {name} | {1e3 * np.abs(df).mean():.1f} | {1e3 * np.sqrt((df ** 2).mean()):.1f} | {1e3 * de:.2f} |")


if __name__ == "__main__":
    main()
