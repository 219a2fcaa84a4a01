"""First-peak height and position of every RDF of benchmark runs, next to the first run's:
what the "RMS Δg" columns of `ipi-mts bench` summarise, at the peak where it is largest.
For water the first O–H peak is the intramolecular bond, whose width MTS changes first.

    python benchmarks/rdf_peaks.py runs/bench/learned-64/{reference,reference-seed-8,pair-2} \\
        [--equilibration-ps 0.5]

Each folder is a method's folder of `ipi-mts bench --workdir` (its nvt/ run is read; the frame
interval comes from its input).
"""

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ipi_mts.benchmarking import analyse, rdf_pairs


def frame_interval_fs(run: Path) -> float:
    root = ET.parse(run / "input.xml").getroot()
    dt = float(root.findtext("system/motion/dynamics/timestep"))
    return dt * int(root.find("output/trajectory").get("stride"))


def first_peak(r, g):
    """(position, height) of the first local maximum above 1 (the first shell)."""
    for k in range(1, len(g) - 1):
        if g[k] > 1.0 and g[k] >= g[k - 1] and g[k] >= g[k + 1]:
            return r[k], g[k]
    return float("nan"), float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="+", type=Path, help="method folders; the first is the reference")
    parser.add_argument("--equilibration-ps", type=float, default=0.5)
    args = parser.parse_args()
    rows = []
    for folder in args.methods:
        run = folder / "nvt"
        result = analyse(run, args.equilibration_ps, frame_interval_fs(run))
        pairs = ["".join(p) for p in rdf_pairs(result["species"])]
        rows.append((f"{folder.parent.name}/{folder.name}", {p: first_peak(result["r"], result[f"rdf_{p}"].mean(axis=0)) for p in pairs}))
    reference = rows[0][1]
    print("| method | " + " | ".join(f"first peak of g_{p}: r (Å), height (Δ vs {rows[0][0]})" for p in reference) + " |")
    print("|---|" + "---|" * len(reference))
    for name, peaks in rows:
        cells = [f"{r:.3f}, {h:.2f} ({h - reference[p][1]:+.2f})" for p, (r, h) in peaks.items()]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
