"""Thermostat placement in MTS: how long can the outer step be?

Water-64 with the q-TIP4P/F physics split (intramolecular part on the 0.5 fs inner step,
intermolecular part on the outer step), NVT with PILE_L at 300 K: i-PI's built-in MTS
(thermostat outside the step, `split:Δt`) against ipi-mts's mode='mts' with the thermostat
inside the innermost loop (`split:Δt:inner`), both against q-TIP4P/F at 0.5 fs. Writes
docs/benchmarks/thermostat-placement.{md,json,png}.

    python benchmarks/thermostat_placement.py [--nvt-ps 3] [--outer 1,2,3,4,5,6]
"""

import argparse

from ipi_mts.benchmarking import bench_placement

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvt-ps", type=float, default=3.0)
    parser.add_argument("--nve-ps", type=float, default=1.0)
    parser.add_argument("--outer", default="1,2,3,4,5,6", help="outer steps in fs")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    bench_placement(tuple(float(x) for x in args.outer.split(",")), nvt_ps=args.nvt_ps,
                    nve_ps=args.nve_ps, workdir=args.workdir)
