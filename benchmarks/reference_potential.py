"""Time the q-TIP4P/F reference potential through `evaluate` (energy, forces and virial).

Water-216 is frame 0 of the i-PI Fortran reference file (../shared/data beside the repo);
water-64 is a 4×4×4 grid of randomly oriented molecules at ~1 g/cm³ (`ipi_mts.testing`).
Each system is timed alone and as 8 structures in one batch (the same cell, positions
jittered by 0.02 Å), for the full potential and its intra/inter parts; the table gives
milliseconds per structure, median and best of the repeats.

    .venv/bin/python benchmarks/reference_potential.py [--repeats 20] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ipi_mts import testing
from ipi_mts.potentials import evaluate
from ipi_mts.potentials.qtip4pf import QTIP4PF
from ipi_mts.state import State

REFERENCE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qtip4pf-water216-ipi-f90.npz"
)


def water216() -> State:
    data = np.load(REFERENCE)
    return State.from_wire(
        np.swapaxes(data["cell_bohr"][:1], 1, 2),
        data["positions_bohr"][:1],
        np.tile([8, 1, 1], 216),
    )


def batch_of(state: State, n: int, seed: int = 0) -> State:
    gen = torch.Generator().manual_seed(seed)
    copies = []
    for _ in range(n):
        noise = 0.02 * (
            2 * torch.rand(state.positions.shape, generator=gen, dtype=state.positions.dtype) - 1
        )
        copies.append(State(**{**state.__dict__, "positions": state.positions + noise}))
    return testing.concatenate(copies)


def time_per_structure(model, state: State, repeats: int) -> tuple[float, float]:
    for _ in range(3):
        evaluate(model, state)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate(model, state)
        times.append((time.perf_counter() - start) * 1e3 / state.n_structures)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "reference_potential.md"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    systems = []
    if REFERENCE.is_file():
        systems.append(("water-216", water216()))
    else:
        print(f"(no {REFERENCE}: water-216 left out)")
    systems.append(("water-64", testing.water_box(4, spacing=3.1, jitter=0.0, seed=0)))

    title = (
        f"q-TIP4P/F through evaluate(): energy + forces + virial, float64, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(title)
    print(
        f"{'system':<10} {'atoms':>6} {'batch':>6} {'part':>6} {'ms/structure (median)':>22} {'best':>8}"
    )
    rows = ["| system | atoms | batch | part | ms/structure (median) | best |", "|---|---|---|---|---|---|"]
    for name, state in systems:
        n_atoms = state.positions.shape[0]
        for n_batch in (1, 8):
            batched = state if n_batch == 1 else batch_of(state, n_batch)
            for part in ("full", "intra", "inter"):
                median, best = time_per_structure(QTIP4PF(part), batched, args.repeats)
                print(
                    f"{name:<10} {n_atoms:>6} {n_batch:>6} {part:>6} {median:>22.2f} {best:>8.2f}"
                )
                rows.append(f"| {name} | {n_atoms} | {n_batch} | {part} | {median:.2f} | {best:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# q-TIP4P/F evaluation time\n\nMeasured by `python benchmarks/reference_potential.py` "
        f"on {os.cpu_count()} CPU cores.\n{title}.\n\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    main()
