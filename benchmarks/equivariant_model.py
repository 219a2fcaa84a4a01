"""Time learned equivariant models of several sizes on water-64, to size a fast/slow pair.

Each configuration is a freshly initialised `EquivariantPotential` (species H, O; timings
do not depend on the weights); one evaluation is energy + forces + virial through
`ipi_mts.potentials.evaluate` on water-64 (192 atoms, 12.4 Å box, from
`inputs/water-64/init.xyz`, else `ipi_mts.data.water.water_box(64)`), float64 in and out,
the model in `--dtype`. The table gives parameters, directed edges within the cutoff,
median and best milliseconds per evaluation, and the cost relative to the first (cheapest)
configuration; the neighbour-list time alone (vesin, full list) is printed per cutoff, and
the last rows time each slow model together with the default fast one as a `LearnedPair`
(one shared neighbour list).

    .venv/bin/python benchmarks/equivariant_model.py [--repeats 20] [--threads N]
        [--dtype float32|float64] [--device cpu|cuda] [--batch 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ipi_mts import testing
from ipi_mts.neighbors import state_pairs
from ipi_mts.potentials import evaluate
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential
from ipi_mts.potentials.pair import LearnedPair
from ipi_mts.state import State

INIT = Path(__file__).resolve().parents[1] / "inputs" / "water-64" / "init.xyz"

# name -> architecture (species, dtype and avg_num_neighbors added below)
FAST = {
    "fast-2.0-F8-l1-L1": dict(cutoff=2.0, num_features=8, lmax=1, num_layers=1),
    "fast-2.0-F16-l1-L1": dict(cutoff=2.0, num_features=16, lmax=1, num_layers=1),
    "fast-2.0-F8-l1-L2": dict(cutoff=2.0, num_features=8, lmax=1, num_layers=2),
    "fast-2.5-F8-l1-L2": dict(cutoff=2.5, num_features=8, lmax=1, num_layers=2),
}
SLOW = {
    "slow-4.5-F16-l1-L2": dict(cutoff=4.5, num_features=16, lmax=1, num_layers=2),
    "slow-5.0-F16-l2-L2": dict(cutoff=5.0, num_features=16, lmax=2, num_layers=2),
    "slow-5.0-F32-l1-L3": dict(cutoff=5.0, num_features=32, lmax=1, num_layers=3),
    "slow-5.0-F16-l2-L3": dict(cutoff=5.0, num_features=16, lmax=2, num_layers=3),
    "slow-5.0-F32-l2-L3": dict(cutoff=5.0, num_features=32, lmax=2, num_layers=3),
}


def water64(device) -> State:
    """The equilibrated i-PI start (its `# CELL(abcABC): a b c α β γ` comment gives the
    cell), else a fresh lattice box."""
    from ase import Atoms
    from ase.geometry import cellpar_to_cell

    if INIT.is_file():
        lines = INIT.read_text().splitlines()
        n = int(lines[0])
        cellpar = [float(x) for x in lines[1].split("CELL(abcABC):")[1].split()[:6]]
        rows = [line.split() for line in lines[2 : 2 + n]]
        atoms = Atoms(
            symbols=[r[0] for r in rows],
            positions=[[float(x) for x in r[1:4]] for r in rows],
            cell=cellpar_to_cell(cellpar),
            pbc=True,
        )
    else:
        from ipi_mts.data.water import water_box

        atoms = water_box(64)
    return State.from_ase([atoms], device=device)


def batch_of(state: State, n: int) -> State:
    gen = torch.Generator().manual_seed(0)
    copies = []
    for _ in range(n):
        noise = 0.02 * (2 * torch.rand(state.positions.shape, generator=gen, dtype=torch.float64) - 1)
        copies.append(State(**{**state.__dict__, "positions": state.positions + noise.to(state.positions.device)}))
    return testing.concatenate(copies)


def timed(fn, repeats: int, device) -> tuple[float, float]:
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(5):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def build(arch: dict, dtype: str, avg: float, device) -> EquivariantPotential:
    config = EquivariantConfig(species=(1, 8), dtype=dtype, avg_num_neighbors=avg, **arch)
    return EquivariantPotential(config, seed=0).to(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1, help="structures per evaluation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    state = water64(args.device)
    if args.batch > 1:
        state = batch_of(state, args.batch)
    n_atoms = state.positions.shape[0]
    print(
        f"equivariant models on water-64 ({n_atoms} atoms in {args.batch} structure(s)): energy + forces "
        f"+ virial via evaluate(), model {args.dtype}, device {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.repeats} repeats; ms per evaluation"
    )
    print()
    cutoffs = sorted({a["cutoff"] for a in (*FAST.values(), *SLOW.values())})
    edges = {}
    print(f"{'neighbour list':<22}{'edges':>8}{'median ms':>11}{'best ms':>9}")
    for rc in cutoffs:
        edges[rc] = len(state_pairs(state, rc, full_list=True)[0])
        median, best = timed(lambda rc=rc: state_pairs(state, rc, full_list=True), args.repeats, args.device)
        print(f"{'cutoff ' + format(rc, '.1f') + ' Å':<22}{edges[rc]:>8}{median:>11.2f}{best:>9.2f}")
    print()

    header = f"{'model':<22}{'params':>8}{'edges':>8}{'median ms':>11}{'best ms':>9}{'x fast':>8}"
    print(header)
    print("-" * len(header))
    # warm up threads and allocator on one model, so that the first row is not penalised
    warm = build(next(iter(FAST.values())), args.dtype, 1.0, args.device)
    timed(lambda: evaluate(warm, state), 5, args.device)
    models, reference = {}, None
    for name, arch in {**FAST, **SLOW}.items():
        model = build(arch, args.dtype, edges[arch["cutoff"]] / n_atoms, args.device)
        models[name] = model
        median, best = timed(lambda m=model: evaluate(m, state), args.repeats, args.device)
        reference = reference or median
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{name:<22}{params:>8}{edges[arch['cutoff']]:>8}{median:>11.2f}{best:>9.2f}"
            f"{median / reference:>8.1f}"
        )
    fast_name = next(iter(FAST))
    print()
    print(f"pairs with {fast_name} (E = fast + slow, one shared neighbour list):")
    for name in SLOW:
        pair = LearnedPair(models[fast_name], models[name])
        median, best = timed(lambda p=pair: evaluate(p, state), args.repeats, args.device)
        print(f"{fast_name + ' + ' + name:<42}{median:>11.2f}{best:>9.2f}")


if __name__ == "__main__":
    main()
