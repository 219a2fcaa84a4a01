"""Can a map's implicit equations be solved? One step of a map file from one state of a data
trajectory, by Anderson acceleration at several memories and iteration caps, by the molecule-block
Newton preconditioner of maps/solver.py, and by SciPy's Newton–Krylov (LGMRES); prints the final
residual (bohr) and the evaluations each took.

Measures the breakdown of `water-map-4fs` reported in docs/learned-maps.md:

    python benchmarks/map_solvability.py --map runs/train-map/water-4fs/map.pt \\
        --data runs/map-data/water-64-traj.extxyz --frame -50 [--guess midpoint]

(the map and the data are made by the commands in inputs/training/water-map-4fs.yaml).
"""

import argparse
import time

import ase.io
import numpy as np
import scipy.optimize
import torch

from ipi_mts import units
from ipi_mts.data.trajectories import MOMENTUM_AU_PER_ASE
from ipi_mts.maps import BlockNewton, GeneratingFunction, MidpointMap, System, fixed_point
from ipi_mts.potentials.model_file import load_map


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", required=True, help="map file or shipped map")
    parser.add_argument("--data", required=True, help="extxyz trajectory with momenta (ipi-mts data trajectories)")
    parser.add_argument("--frame", type=int, default=-50, help="index of the starting state (default: -50)")
    parser.add_argument("--anderson", default="20:100,50:300", help="MEMORY:ITERATIONS, comma-separated")
    parser.add_argument("--newton-iterations", type=int, default=30)
    parser.add_argument("--block-iterations", type=int, default=100,
                        help="iteration cap of the molecule-block Newton solve (default: 100)")
    parser.add_argument("--guess", choices=["verlet", "midpoint"], default="verlet",
                        help="initial guess: the map's predictor (one Verlet step of the anchor, as in MD) "
                             "or the solved implicit midpoint map of the anchor (S = τH)")
    args = parser.parse_args()

    m = load_map(args.map)
    atoms = ase.io.read(args.data, index=args.frame)
    system = System.from_ipi(atoms.get_masses() * units.AMU, units.cell_to_wire(atoms.cell.array), atoms.numbers)
    q = torch.as_tensor(units.positions_to_wire(atoms.positions)).reshape(-1, 3)
    p = torch.as_tensor(atoms.get_momenta() * MOMENTUM_AU_PER_ASE).reshape(-1, 3)
    tau = m.tau
    equations, pack, _ = m.equations(q, p, system)
    calls = [0]

    def g(x):  # the map's fixed-point function (MidpointMap.equations), counting evaluations
        calls[0] += 1
        return equations(torch.as_tensor(x))

    if args.guess == "verlet":
        x0 = pack(*m.predictor(q, p, system, tau)).detach()
    else:
        midpoint = MidpointMap(GeneratingFunction(m.generating.potential, tau / units.FEMTOSECOND))
        x0 = pack(*midpoint.step_system(q, p, system)[:2]).detach()
    print(f"{args.map}: stride {m.metadata.get('stride_fs', tau / units.FEMTOSECOND)} fs, {len(atoms)} atoms, "
          f"frame {args.frame} of {args.data}; {args.guess} guess, residual there {float((g(x0) - x0).abs().max()):.3g} bohr")
    for spec in args.anderson.split(","):
        memory, iterations = (int(v) for v in spec.split(":"))
        start = time.perf_counter()
        _, info = fixed_point(g, x0, m.tol, iterations, memory)
        print(f"Anderson memory {memory}, {iterations} iterations: converged {info.converged}, "
              f"residual {info.residual:.3g} bohr after {info.iterations} evaluations ({time.perf_counter() - start:.1f} s)")
    calls[0] = 0
    start = time.perf_counter()
    g0 = g(x0)
    blocks = BlockNewton(g, x0, g0, system.molecules(q))
    _, info = fixed_point(g, x0, m.tol, args.block_iterations, 20, blocks, g0)
    print(f"molecule-block Newton (maps/solver.py), Anderson memory 20 on the preconditioned residual: converged "
          f"{info.converged}, residual {info.residual:.3g} bohr after {calls[0]} evaluations, {blocks.evaluations} "
          f"of them for the Jacobian ({time.perf_counter() - start:.1f} s)")
    calls[0] = 0
    start = time.perf_counter()
    try:
        x = scipy.optimize.newton_krylov(lambda x: (g(x) - torch.as_tensor(x)).numpy(), x0.numpy(), f_tol=m.tol,
                                         method="lgmres", maxiter=args.newton_iterations)
        residual, converged = float(np.abs(g(x).numpy() - x).max()), True
    except scipy.optimize.NoConvergence as stop:
        x = stop.args[0]
        residual, converged = float(np.abs(g(x).numpy() - x).max()), False
    print(f"Newton-Krylov (LGMRES), {args.newton_iterations} Newton iterations: converged {converged}, "
          f"residual {residual:.3g} bohr after {calls[0]} evaluations ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
