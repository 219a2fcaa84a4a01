"""Stronger damping of the fast modes inside the innermost MTS loop: does it lengthen the
outer step past 2.5 fs? Variants of the `pair:OUTER:inner` runs of an `ipi-mts bench
placement --family pair --workdir DIR` folder (PILE_L, splitting obabo), judged against that
folder's reference, control and conventional runs (`benchmarking.judge`):

    pile_l-baoab   the same PILE_L, splitting='baoab' (O in the middle of the inner drift)
    gle[-baoab]    a high-pass GLE (i-PI's mode='gle', one auxiliary momentum) instead of PILE_L

The GLE is `benchmarking.highpass_gle` (its docstring has the drift matrix): friction 1/τ at
low frequencies rising to `--gamma-high-fs` above `--cutoff-cm`. The same runs with several seeds
are the benchmark's methods 'pair:Δt:inner[:baoab]:gle' (`benchmarks/placement_seeds.py`).

    python benchmarks/inner_damping.py --workdir runs/bench/placement-pair --outer 2.5,3

Runs go to WORKDIR/pair-OUTER-inner-VARIANT/nvt and are reused like the bench's own.
"""

import argparse
import re
from pathlib import Path

from ipi_mts import benchmarking

VARIANTS = ("pile_l-baoab", "gle", "gle-baoab")


def variant_xml(base: str, variant: str, gamma_low_fs: float, gamma_high_fs: float, cutoff_cm: float) -> str:
    """The input of `variant` made from the PILE_L inner-placement input `base`."""
    xml = base
    if variant.startswith("gle"):
        gle = benchmarking.highpass_gle_xml(gamma_low_fs, gamma_high_fs, cutoff_cm)
        xml, n = re.subn(r"<thermostat mode='pile_l'>.*?</thermostat>", gle, xml)
        if n != 1:
            raise SystemExit("the base input has no PILE_L thermostat")
    if variant.endswith("baoab"):
        xml = xml.replace("thermostat_placement='inner'>", "thermostat_placement='inner' splitting='baoab'>")
    return xml


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="an `ipi-mts bench placement --family pair` folder")
    parser.add_argument("--outer", default="3", help="outer steps (fs) whose inner runs exist there")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--gamma-high-fs", type=float, default=0.1, help="GLE friction above the cutoff, 1/fs")
    parser.add_argument("--cutoff-cm", type=float, default=1600.0, help="GLE cutoff frequency, cm⁻¹")
    parser.add_argument("--tau-fs", type=float, default=100.0, help="PILE_L's τ: the GLE's γ_0 = 1/τ")
    parser.add_argument("--png", default=None, help="also plot g_OH's first peak and T(H) per run here")
    args = parser.parse_args()
    root = Path(args.workdir)
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        raise SystemExit(f"variants are {', '.join(VARIANTS)}")
    results = {}
    for method, folder, dt in [("reference", "reference", 0.5), ("reference@8", "reference-seed-8", 0.5),
                               ("conventional", "conventional", 0.5)]:
        results[method] = (root / folder / "nvt", dt)
    for outer in (float(x) for x in args.outer.split(",")):
        base = root / f"pair-{outer:g}-inner" / "nvt"
        results[f"pair:{outer:g}:inner"] = (base, outer)
        for variant in variants:
            xml = variant_xml((base / "input.xml").read_text(), variant, 1.0 / args.tau_fs,
                              args.gamma_high_fs, args.cutoff_cm)
            case = root / f"pair-{outer:g}-inner-{variant}" / "nvt"
            benchmarking.run_method(case, xml)
            results[f"pair:{outer:g}:inner+{variant}"] = (case, outer)
    analysed = {}
    for method, (folder, dt) in results.items():
        frame_fs = benchmarking.frame_stride(10.0, dt) * dt
        analysed[method] = {"dt_fs": dt, "s_per_ps": 1.0, "target_K": 300.0, "nve_drift": float("nan"),
                            "nve_trace": None, **benchmarking.analyse(folder, 0.5, frame_fs)}
    print("| run | RMS Δg / control's O–O / O–H / H–H | T(O) K | T(H) K | D(O) 1e-5 cm²/s | within error |")
    print("|---|---|---|---|---|---|")
    for r in benchmarking.judge(analysed, "conventional"):
        rdf = " / ".join(f"{r[f'rdf_{n}_vs_control']:.2f}" for n in r["rdfs"])
        temps = " | ".join(f"{r[f'T_{sp}'][0]:.1f} ± {r[f'T_{sp}'][1]:.1f}" for sp in r["species"])
        print(f"| {r['method']} | {rdf} | {temps} | {r['D']:.2f} | {'yes' if r['within_error'] else 'no'} |")
    if args.png:
        plot(analysed, Path(args.png))


def plot(analysed: dict, path: Path):
    """g_OH around its first (intramolecular) peak, and each run's T(H) with its block error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(analysed)
    for method, r in analysed.items():
        g, near = r["rdf_OH"].mean(axis=0), (r["r"] > 0.85) & (r["r"] < 1.1)
        ax.plot(r["r"][near], g[near], lw=2.5 if method == "reference" else 1.0, label=method)
    ax.set_xlabel("r (Å)"), ax.set_ylabel("g_OH(r)"), ax.legend(fontsize=7)
    temps = [analysed[m]["T_H"] for m in names]
    bx.errorbar(range(len(names)), [t[0] for t in temps], yerr=[t[1] for t in temps], fmt="o")
    bx.axhline(analysed["reference"]["T_H"][0], color="gray", lw=0.8)
    bx.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7), bx.set_ylabel("T(H) K")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
