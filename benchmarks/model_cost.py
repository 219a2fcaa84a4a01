"""What an equivariant model of each architecture costs per evaluation, before any training:
energy, forces and virial of one structure through the `WireEvaluator` that serves i-PI (so a
one-layer model takes its closed form without autograd, as in MD), with freshly initialised
weights, whose values do not change the cost. Medians of five interleaved loops
(`benchmarking.time_alone`).

    OMP_NUM_THREADS=1 python benchmarks/model_cost.py --structure inputs/water-64/init.xyz \\
        --arch 16,2,5 --arch 8,2,5 --arch 16,1,5 --arch 16,1,6

An architecture is FEATURES,LAYERS,CUTOFF (lmax 1 and the other settings at their defaults).
"""

import argparse

import torch

from ipi_mts import units
from ipi_mts.benchmarking import time_alone
from ipi_mts.evaluation import read_trajectory
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential
from ipi_mts.server.evaluator import WireEvaluator


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structure", default="inputs/water-64/init.xyz")
    parser.add_argument("--arch", action="append", required=True, help="FEATURES,LAYERS,CUTOFF (repeatable)")
    parser.add_argument("--calls", type=int, default=10, help="calls per timing loop")
    args = parser.parse_args()
    atoms = read_trajectory(args.structure)[0]  # with the cell of an i-PI xyz
    cells = units.cell_to_wire(atoms.cell.array)[None]
    positions = units.positions_to_wire(atoms.positions)[None]
    evaluators = {}
    for arch in args.arch:
        features, layers, cutoff = arch.split(",")
        torch.manual_seed(0)
        config = EquivariantConfig(species=tuple(sorted(set(atoms.numbers.tolist()))), num_features=int(features),
                                   num_layers=int(layers), cutoff=float(cutoff), avg_num_neighbors=50.0)
        evaluators[arch] = WireEvaluator(EquivariantPotential(config), atoms.numbers, "cpu")
    ms = time_alone(evaluators, cells, positions, args.calls)
    print(f"| features, layers, cutoff (Å) | parameters | closed form | ms per evaluation of {len(atoms)} atoms |")
    print("|---|---|---|---|")
    for arch, evaluate in evaluators.items():
        n = sum(p.numel() for p in evaluate.model.parameters())
        print(f"| {arch} | {n} | {'yes' if evaluate.model.has_edge_gradient else 'no'} "
              f"| {ms[arch]:.1f} |")


if __name__ == "__main__":
    main()
