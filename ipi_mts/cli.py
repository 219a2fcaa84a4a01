"""The `ipi-mts` command: thin argument parsing over the package's subcommands."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import UserError


def _key_value(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _add_serve(sub):
    p = sub.add_parser(
        "serve",
        help="serve a potential to i-PI over its socket protocol",
        description=(
            "Connect to a running i-PI as a force driver and serve MODEL's energies, forces and "
            "virials. K connections in one process are evaluated together as one batched "
            "model call. Exits when i-PI sends EXIT or closes. With --mpi, under mpirun, every "
            "rank serves one of the --forcefield entries over TCP (GPU by node-local rank), "
            "each in a worker process that is replaced if it dies."
        ),
        epilog=(
            "examples:\n"
            "  ipi-mts serve --model qtip4pf --unix water\n"
            "  ipi-mts serve --model qtip4pf-intra --host 127.0.0.1 --port 31415 --connections 8\n"
            "  mpirun -n 4 ipi-mts serve --mpi --host ipi-node --beads 32 --ranks 1,3 \\\n"
            "      --forcefield 31415=water-pair:fast --forcefield 31416=water-pair:slow"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="potential name (qtip4pf, qtip4pf-intra, qtip4pf-inter, lj, harmonic, water-pair, ...) or model file")
    p.add_argument("--component", default="full", choices=["full", "fast", "slow"], help="part of a learned pair to serve (default: full)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--unix", metavar="NAME", help="i-PI UNIX socket address (the <address> of an <ffsocket mode='unix'>)")
    where.add_argument("--port", type=int, help="i-PI TCP port (with --host)")
    p.add_argument("--host", default="127.0.0.1", help="i-PI TCP host (default: loopback)")
    p.add_argument("--prefix", default="/tmp/ipi_", help="UNIX socket file prefix (default: /tmp/ipi_)")
    p.add_argument("--connections", type=int, default=1, metavar="K", help="connections held to i-PI, e.g. one per bead (default: 1)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds to keep retrying to connect (default: 60)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                   help="exit with an error when i-PI, once connected, sends nothing for S seconds (default: wait as long as it holds the connection)")
    p.add_argument("--template", metavar="FILE", help="structure file giving the atom species (i-PI sends none)")
    p.add_argument("--param", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="model parameter, repeatable")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads for the model (default: the cores less one, left to i-PI)")
    mpi = p.add_argument_group("MPI (mpirun -n K ipi-mts serve --mpi ...; needs pip install 'ipi-mts[mpi]')")
    mpi.add_argument("--mpi", action="store_true", help="serve as one rank of an MPI job")
    mpi.add_argument("--forcefield", action="append", default=[], metavar="PORT=MODEL[:COMPONENT]",
                     help="an i-PI inet forcefield and what serves it; repeat for each (fast, slow, ...)")
    mpi.add_argument("--ranks", metavar="N1,N2,...", help="ranks per --forcefield, in order (default: as even as possible)")
    mpi.add_argument("--beads", type=int, metavar="P", help="spread P connections over each forcefield's ranks (default: --connections per rank)")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    import os

    # idle OpenMP threads sleep instead of spinning on cores that i-PI needs (before torch loads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .server.serve import run_from_args

    return run_from_args(args)


def _add_run(sub):
    p = sub.add_parser(
        "run",
        help="run an i-PI input with ipi-mts motion classes and local drivers",
        description=(
            "Run i-PI on INPUT.xml in this process. Every <ffsocket mode='unix'> whose "
            "<parameters> name a model (e.g. {model: qtip4pf-intra}) gets a local "
            "`ipi-mts serve`, restarted if it dies; for mode='inet' forcefields the driver "
            "commands are printed for you to start elsewhere."
        ),
    )
    p.add_argument("input", metavar="INPUT.xml", help="i-PI XML input (or a RESTART file)")
    p.add_argument("--steps", type=int, help="override <total_steps>")
    p.add_argument("--print-drivers", action="store_true", help="print the driver command lines and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="keep i-PI's own verbosity (default: quiet)")
    p.add_argument(
        "--allow-remote", action="store_true",
        help="let inet forcefields listen on addresses other than loopback (drivers on other "
             "nodes). Risk: anyone who can reach the port can connect as a driver, read the "
             "positions and send forces; use it on a trusted cluster network only",
    )
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .launcher import run_from_args

    return run_from_args(args)


def _add_data(sub):
    p = sub.add_parser("data", help="make and inspect training data")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    g = data.add_parser(
        "generate",
        help="run i-PI with a reference potential and write labelled frames (extxyz)",
        description=(
            "Run NVT with a reference potential through `ipi-mts run` at each temperature; keep "
            "a frame every --sample-every fs and its partner --pair-offset fs later; label them "
            "with the potential (energy eV, forces eV/Å, stress) and write extxyz."
        ),
    )
    g.add_argument("--model", default="qtip4pf", help="reference potential (default: qtip4pf)")
    g.add_argument("--structure", required=True, help="starting structure (i-PI xyz or any ASE format), Å")
    g.add_argument("--temperatures", default="300", help="comma-separated temperatures in K (default: 300)")
    g.add_argument("--time-ps", type=float, default=5.0, help="sampled time per temperature, ps (default: 5)")
    g.add_argument("--equilibration-ps", type=float, default=0.5, help="discarded start, ps (default: 0.5)")
    g.add_argument("--dt-fs", type=float, default=0.5, help="MD time step, fs (default: 0.5)")
    g.add_argument("--sample-every", type=float, default=50.0, metavar="FS", help="fs between kept frame pairs (default: 50)")
    g.add_argument("--pair-offset", type=float, default=2.0, metavar="FS", help="fs between the frames of a pair: one outer step (default: 2)")
    g.add_argument("--beads", type=int, default=1, help="path-integral beads, for wider sampling (default: 1)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, help="output extxyz file")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=_data_generate)
    _add_data_trajectories(data)


def _data_generate(args) -> int:
    from .data.generate import generate

    try:
        temperatures = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--temperatures takes numbers separated by commas, not {args.temperatures!r}") from None
    out, n = generate(
        args.model, args.structure, temperatures, args.out, time_ps=args.time_ps, dt_fs=args.dt_fs,
        sample_every_fs=args.sample_every, pair_offset_fs=args.pair_offset,
        equilibration_ps=args.equilibration_ps, beads=args.beads, seed=args.seed, quiet=args.quiet,
    )
    print(f"ipi-mts data generate: wrote {n} frames to {out}")
    return 0


def _temperatures(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--temperatures takes numbers separated by commas, not {text!r}") from None


def _add_data_trajectories(data):
    t = data.add_parser(
        "trajectories",
        help="NVE segments with momenta at a fine step, for training long-time-step maps (extxyz)",
        description=(
            "At each temperature: NVT with a reference potential through `ipi-mts run`, then "
            "--segments NVE segments of --segment-fs at the fine step --dt-fs from NVT states "
            "--spacing-fs apart, positions and momenta saved every --save-every steps; written "
            "as extxyz (positions Å, ASE momenta, masses; temperature, segment, time_fs, "
            "frame_dt_fs in info)."
        ),
        epilog=(
            "examples:\n"
            "  ipi-mts data trajectories --structure inputs/water-64/init.xyz --out water-traj.extxyz\n"
            "  ipi-mts data trajectories --model ase:EMT --structure inputs/aluminium/init.xyz \\\n"
            "      --temperatures 300,600,900 --dt-fs 1 --save-every 2 --segment-fs 1000 --out al-traj.extxyz"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--model", default="qtip4pf", help="reference potential (default: qtip4pf; e.g. ase:EMT)")
    t.add_argument("--structure", required=True, help="starting structure (i-PI xyz or any ASE format), Å")
    t.add_argument("--temperatures", default="300", help="comma-separated temperatures in K (default: 300)")
    t.add_argument("--dt-fs", type=float, default=0.25, help="fine NVE (and NVT) time step, fs (default: 0.25)")
    t.add_argument("--save-every", type=int, default=2, metavar="N", help="fine steps between saved frames (default: 2)")
    t.add_argument("--segment-fs", type=float, default=100.0, help="length of one NVE segment, fs (default: 100)")
    t.add_argument("--segments", type=int, default=4, help="NVE segments per temperature (default: 4)")
    t.add_argument("--spacing-fs", type=float, default=200.0, help="NVT time between segment starts, fs (default: 200)")
    t.add_argument("--equilibration-ps", type=float, default=1.0, help="NVT before the first segment, ps (default: 1)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="output extxyz file")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_data_trajectories)


def _data_trajectories(args) -> int:
    from .data.trajectories import generate_trajectories

    out, n, segments = generate_trajectories(
        args.model, args.structure, _temperatures(args.temperatures), args.out, dt_fs=args.dt_fs,
        save_every=args.save_every, segment_fs=args.segment_fs, segments=args.segments,
        spacing_fs=args.spacing_fs, equilibration_ps=args.equilibration_ps, seed=args.seed,
        quiet=args.quiet,
    )
    print(f"ipi-mts data trajectories: wrote {n} frames of {segments} NVE segments to {out}")
    return 0


def _add_train(sub):
    p = sub.add_parser(
        "train",
        help="train a fast/slow pair of learned potentials (and its single-model baseline)",
        description=(
            "Train what CONFIG.yaml describes (see ipi_mts/training/config.py for every key): "
            "stage 1 fits the short-cutoff fast model to the total energies and forces, stage 2 "
            "adds the slow model and fits fast + slow; `kind: single` or `both` also trains the "
            "conventional single model. Writes checkpoints, the model files, losses.png and "
            "summary.json to the config's output folder."
        ),
        epilog="example:\n  ipi-mts train inputs/training/water-pair.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG.yaml", help="training config (YAML)")
    p.add_argument("--resume", action="store_true", help="continue from the output folder's checkpoint.pt")
    p.add_argument("--only", choices=["pair", "single"], help="train only this part of a `kind: both` config")
    _add_config_overrides(p)
    p.set_defaults(func=_train)


def _add_config_overrides(p):
    p.add_argument("--output", help="override the config's output folder")
    p.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--threads", type=int, help="override the config's torch CPU threads")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, dotted into sections, VALUE read as YAML "
                        "(e.g. --set loss.slow_smoothness=0.02); repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")


def _config_overrides(args) -> dict:
    import yaml

    flags = {"output": args.output, "device": args.device, "threads": args.threads}
    overrides = {key: value for key, value in flags.items() if value is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set takes KEY=VALUE, not {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item}: the value is not valid YAML") from None
    return overrides


def _passive_threads():
    """CPU threads that sleep rather than spin at barriers: on shared cores spinning OpenMP
    threads made training steps 5-10x slower. Needs to precede the first torch import."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _train(args) -> int:
    _passive_threads()
    from .training import load_config, train

    config = load_config(args.config, _config_overrides(args))
    summary = train(config, resume=args.resume, only=args.only, quiet=args.quiet)
    for task, result in summary["results"].items():
        print(f"ipi-mts train: {task}: {result['model_file']}")
    return 0


def _add_train_map(sub):
    p = sub.add_parser(
        "train-map",
        help="train a long-time-step map (learned generating function) on NVE trajectories",
        description=(
            "Train the momentum correction H_θ of a midpoint generating function "
            "S = τ[H + H_θ] on pairs of states one stride apart from `ipi-mts data "
            "trajectories` (see ipi_mts/training/maps.py for every config key). Writes "
            "checkpoint.pt, map.pt (for <dynamics mode='learned_map' model=...>), losses.png, "
            "history.json and summary.json to the config's output folder."
        ),
        epilog="example:\n  ipi-mts train-map inputs/training/al-map-16fs.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG.yaml", help="map training config (YAML)")
    p.add_argument("--resume", action="store_true", help="continue from the output folder's checkpoint.pt")
    _add_config_overrides(p)
    p.set_defaults(func=_train_map)


def _train_map(args) -> int:
    _passive_threads()
    from .training.maps import load_map_config, train_map

    summary = train_map(load_map_config(args.config, _config_overrides(args)), resume=args.resume, quiet=args.quiet)
    print(f"ipi-mts train-map: {summary['map_file']}")
    return 0


def _add_resplit(sub):
    p = sub.add_parser(
        "resplit",
        help="move a pair's slow share of the bond and angle stiffness to its fast model",
        description=(
            "Fit bonded polynomial terms T (bond lengths and angles of atoms closer than "
            "--cutoff, found in the frames) to the slow model's forces by least squares and "
            "write the pair fast + T, slow - T to --output: the same total energy, with a slow "
            "force that no longer varies at the bond and bend frequencies (for longer outer "
            "steps and ring-polymer contraction of the slow force). See "
            "ipi_mts/training/resplit.py."
        ),
        epilog="example:\n  ipi-mts resplit water-pair run.pos_*.xyz --output water-pair-resplit.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pair", metavar="PAIR", help="a fast/slow pair: model file (.pt) or shipped name")
    p.add_argument("trajectories", nargs="+", metavar="FRAMES", help="i-PI xyz or extxyz trajectories to fit on")
    p.add_argument("--output", required=True, metavar="OUT.pt", help="the new pair file (must not exist)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="use every N-th frame (default: 1)")
    p.add_argument("--cutoff", type=float, default=1.4, metavar="Å", help="bond cutoff (default: 1.4)")
    p.add_argument("--switch-on", type=float, default=1.25, metavar="Å", help="where the switch-off starts (default: 1.25)")
    p.add_argument("--bond-degree", type=int, default=4, help="degree of the bond polynomials (default: 4)")
    p.add_argument("--angle-degree", type=int, default=4, help="degree of the angle polynomials (default: 4)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_resplit)


def _resplit(args) -> int:
    _passive_threads()
    from .training.resplit import resplit_file

    s = resplit_file(args.pair, args.trajectories, args.output, every=args.every, quiet=args.quiet,
                     cutoff=args.cutoff, switch_on=args.switch_on, bond_degree=args.bond_degree,
                     angle_degree=args.angle_degree)
    print(f"ipi-mts resplit: {args.output}: {len(s['bonds'])} bond and {len(s['angles'])} angle types on "
          f"{s['frames']} frames; slow force RMS {1000 * s['slow_force_rms_eV_per_A']:.1f} -> "
          f"{1000 * s['resplit_slow_force_rms_eV_per_A']:.1f} meV/A ({100 * s['share_moved']:.1f} % of its square moved)")
    return 0


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate",
        help="errors of a trained model and, for a pair, spectra of its fast and slow forces",
        description=(
            "Energy (meV/atom) and force (meV/Å) MAE and RMSE of MODEL on labelled frames (the "
            "test split by default), parity plots, and for a fast/slow pair the power spectra of "
            "the fast and slow forces along a trajectory (run here with --reference through "
            "`ipi-mts run`, or --trajectory) and the slow-force power above 1/(2·outer step). "
            "Writes metrics.json and PNGs to --out."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="model file (.pt) or shipped model name")
    p.add_argument("--data", nargs="+", metavar="FILE", help="labelled extxyz (default: the model's training data)")
    p.add_argument("--split", default="test", choices=["test", "validation", "train", "all"], help="frames to use (default: test)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: MODEL-evaluation next to the model)")
    p.add_argument("--trajectory", metavar="FILE", help="consecutive frames for the spectra (i-PI xyz or extxyz)")
    p.add_argument("--trajectory-dt-fs", type=float, metavar="FS", help="time between the trajectory's frames (default: 0.5 for a run here)")
    p.add_argument("--reference", default="qtip4pf", help="potential for the spectrum trajectory run (default: qtip4pf)")
    p.add_argument("--structure", metavar="FILE", help="start of that run (default: the first evaluated frame)")
    p.add_argument("--temperature", type=float, metavar="K", help="its temperature (default: the frame's, else 300)")
    p.add_argument("--trajectory-ps", type=float, default=1.0, metavar="PS", help="its length (default: 1)")
    p.add_argument("--outer-step-fs", type=float, metavar="FS", help="outer MTS step (default: the data's pair offset, else 2)")
    p.add_argument("--no-spectrum", action="store_true", help="skip the spectra")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=8, help="structures per model call (default: 8)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    _passive_threads()
    from .evaluation import evaluate_model
    from .potentials import _model_file

    if args.batch_size < 1 or (args.trajectory_ps is not None and not args.trajectory_ps > 0):
        raise UserError("--batch-size and --trajectory-ps must be positive")
    evaluate_model(
        _model_file(args.model), data=args.data, out=args.out, split=args.split,
        trajectory=args.trajectory, trajectory_dt_fs=args.trajectory_dt_fs, reference=args.reference,
        structure=args.structure, temperature=args.temperature, trajectory_ps=args.trajectory_ps,
        outer_step_fs=args.outer_step_fs, spectrum=not args.no_spectrum, device=args.device,
        batch_size=args.batch_size, quiet=args.quiet,
    )
    return 0


def _add_bench(sub):
    p = sub.add_parser(
        "bench",
        help="run MD methods side by side: speed and accuracy against the reference",
        description=(
            "learned: the learned fast/slow pair on MTS at several outer steps against the "
            "conventional single model at 0.5 fs and the reference potential. placement: the "
            "q-TIP4P/F physics split (or, with --family pair, the learned pair) with the "
            "thermostat outside (i-PI's MTS) and inside the innermost loop. maps: learned "
            "long-time-step maps (--system water or aluminium) against velocity Verlet at the "
            "fine step and at the map's stride and the implicit midpoint map. Wall time per "
            "simulated ps, RDFs, per-species temperature, diffusion, NVE drift and fluctuation; "
            "writes a markdown table, JSON and a PNG."
        ),
    )
    p.add_argument("what", choices=["learned", "placement", "maps"])
    p.add_argument("--pair", default="water-pair", help="learned pair (name or file)")
    p.add_argument("--baseline", default="water-baseline", help="conventional model (name or file)")
    p.add_argument("--outer", default=None, help="outer steps in fs, comma-separated")
    p.add_argument("--family", choices=["split", "pair"], default="split",
                   help="placement: the q-TIP4P/F physics split or the learned pair (default: split)")
    p.add_argument("--system", choices=["water", "aluminium"], default="aluminium",
                   help="maps: the system and its shipped maps (default: aluminium)")
    p.add_argument("--maps", default=None, help="maps: maps to compare (names or files), comma-separated")
    p.add_argument("--structure", default=None,
                   help="learned, placement: the water box, xyz (default: inputs/water-64/init.xyz)")
    p.add_argument("--tau-fs", type=float, default=None,
                   help="NVT thermostat time constant, fs (default: 200 for SVR, 100 for PILE_L)")
    p.add_argument("--fast", choices=["in-process", "socket"], default="in-process",
                   help="learned, placement: where MTS evaluates the fast force: in i-PI's process "
                   "(<ffdirect>, no socket round trip per inner step) or by `ipi-mts serve` over a "
                   "socket (default: in-process)")
    p.add_argument("--beads", type=int, default=1,
                   help="learned, placement: path integrals with this many beads for every method (default: 1)")
    p.add_argument("--slow-beads", type=int, default=None,
                   help="learned, placement: with --beads, ring-polymer contract the slow force of MTS to this "
                   "many beads (1: the centroid; default: every bead)")
    p.add_argument("--nvt-ps", type=float, default=3.0, help="NVT length per method, ps (default: 3)")
    p.add_argument("--nve-ps", type=float, default=1.0, help="NVE length per method, ps (default: 1)")
    p.add_argument("--seeds", type=int, default=1,
                   help="runs per method with seeds 7, 8, ...: with 1, each method once and the reference "
                   "once more with seed 8 as the measure of its noise; with N > 1, methods are judged by "
                   "their N-seed means against the reference's, in units of the seed-to-seed error "
                   "(default: 1)")
    p.add_argument("--out", default=None, help="output path without suffix (default: docs/benchmarks/...)")
    p.add_argument("--workdir", default=None,
                   help="keep the runs here (default: a temporary folder); finished runs of the same "
                        "input are reused, those of another input are an error, never overwritten")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    from . import benchmarking

    if args.tau_fs is not None and not args.tau_fs > 0:
        raise UserError(f"--tau-fs must be positive, not {args.tau_fs}")
    kw = dict(nvt_ps=args.nvt_ps, nve_ps=args.nve_ps, workdir=args.workdir, tau_fs=args.tau_fs, fast=args.fast,
              seeds=args.seeds)
    if args.outer:
        kw["outer_fs"] = tuple(float(x) for x in args.outer.split(","))
    if args.out:
        kw["out"] = args.out
    if args.structure:
        if args.what == "maps":
            raise UserError("--structure is for learned and placement; maps use --system")
        kw["structure"] = args.structure
    if args.beads != 1 or args.slow_beads is not None:
        if args.what == "maps":
            raise UserError("--beads and --slow-beads are for learned and placement: mode='learned_map' runs one bead")
        kw.update(beads=args.beads, slow_beads=args.slow_beads)  # slow beads: the methods' ':rpcK'
    if args.what == "learned":
        benchmarking.bench_learned(args.pair, args.baseline, **kw)
    elif args.what == "placement":
        benchmarking.bench_placement(family=args.family, pair=args.pair, baseline=args.baseline, **kw)
    else:
        maps = args.maps.split(",") if args.maps else None
        benchmarking.bench_maps(args.system, maps, **kw)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipi-mts",
        description="i-PI force drivers and integrators for multiple-time-step molecular dynamics.",
    )
    parser.add_argument("--version", action="version", version=f"ipi-mts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_run(sub)
    _add_data(sub)
    _add_train(sub)
    _add_train_map(sub)
    _add_resplit(sub)
    _add_evaluate(sub)
    _add_bench(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"ipi-mts {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ipi-mts {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
