import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ipi_mts import units
from ipi_mts.benchmarking import (MOLLY_WATER, method_family, method_xml, parse_method, resolved_model, run_method,
                                  same_input, time_alone)
from ipi_mts.errors import UserError

MODELS = {"pair": "water-pair", "conventional": "water-baseline", "reference": "qtip4pf"}


def test_methods_map_to_time_steps_and_levels():
    assert parse_method("reference", MODELS)[:2] == (0.5, None)
    m = parse_method("split:3:inner", MODELS)
    assert (m.dt, m.n_inner, m.placement) == (3.0, 6, "inner")
    assert [f[1] for f in m.ffs] == ["qtip4pf-inter", "qtip4pf-intra"]
    m = parse_method("pair:2.5:inner:baoab", MODELS)
    assert (m.dt, m.n_inner, m.placement, m.splitting) == (2.5, 5, "inner", "baoab")
    with pytest.raises(UserError, match="a splitting follows ':inner'"):
        parse_method("pair:2:outer:baoab", MODELS)
    m = parse_method("pair:2.5:inner:baoab:gle", MODELS)
    assert (m.dt, m.placement, m.splitting, m.gle) == (2.5, "inner", "baoab", True)
    assert parse_method("pair:2:gle", MODELS)[3:] == (None, None, None, True, None, None)
    m = parse_method("pair:2", MODELS)
    assert (m.dt, m.n_inner, m.placement, m.splitting, m.gle) == (2.0, 4, None, None, False)
    assert [(f[1], f[2]) for f in m.ffs] == [("water-pair", "slow"), ("water-pair", "fast")]
    m = parse_method("midpoint:4", MODELS)
    assert (m.dt, m.map_model, m.ffs[0][1]) == (4.0, "midpoint:qtip4pf", "qtip4pf")
    m = parse_method("map:al-map-16fs", {"reference": "ase:EMT"})
    assert (m.dt, m.map_model) == (pytest.approx(16.0), "al-map-16fs")
    m = parse_method("pair:4/1:isokinetic", MODELS)
    assert (m.dt, m.n_inner, m.placement, m.slow_params) == (4.0, 4, "isokinetic", None)
    m = parse_method("pair:4/1:isokinetic:molly:rpc1", MODELS)
    assert (m.dt, m.n_inner, m.placement, m.slow_beads) == (4.0, 4, "isokinetic", 1)
    assert m.slow_params == {"mollify": MOLLY_WATER}
    with pytest.raises(UserError, match="not a multiple"):
        parse_method("pair:1.2", MODELS)
    with pytest.raises(UserError, match="not a multiple"):
        parse_method("pair:4/1.5", MODELS)
    with pytest.raises(UserError, match="unknown benchmark method"):
        parse_method("magic:2", MODELS)


def test_model_files_become_absolute_paths(tmp_path, monkeypatch):
    """Every run goes in its own folder, so a model file given relative to here is made absolute
    (names stay names), and a missing one is refused before anything runs."""
    monkeypatch.chdir(tmp_path)
    Path("mine.pt").write_bytes(b"")
    assert resolved_model("mine.pt") == str(tmp_path / "mine.pt")
    assert resolved_model("water-pair") == "water-pair" and resolved_model("ase:EMT") == "ase:EMT"
    with pytest.raises(UserError, match="missing.pt does not exist"):
        resolved_model("missing.pt")


def test_an_input_changes_with_the_atoms_of_its_structure(tmp_path):
    """Finished runs are reused when the input is the same: a structure file with other atoms
    under the same name must give another input."""
    start = tmp_path / "init.xyz"
    text = Path("inputs/water-64/init.xyz").read_text()
    start.write_text(text)
    first = method_xml("reference", MODELS, start, 0.1, "nve")[0]
    lines = text.splitlines()
    element, x, y, z = lines[2].split()
    lines[2] = f"{element} {float(x) + 0.01} {y} {z}"  # one atom moved
    start.write_text("\n".join(lines) + "\n")
    assert not same_input(method_xml("reference", MODELS, start, 0.1, "nve")[0], first)
    start.write_text(text)
    assert same_input(method_xml("reference", MODELS, start, 0.1, "nve")[0], first)


def test_an_input_changes_with_the_weights_of_its_models(tmp_path):
    """A model file retrained under the same name (or path) must not reuse the old runs."""
    weights = tmp_path / "pair.pt"
    weights.write_bytes(b"first")
    models = MODELS | {"pair": str(weights)}
    first = method_xml("pair:2", models, "inputs/water-64/init.xyz", 0.1, "nve")[0]
    weights.write_bytes(b"second")
    assert not same_input(method_xml("pair:2", models, "inputs/water-64/init.xyz", 0.1, "nve")[0], first)
    shipped = method_xml("conventional", MODELS, "inputs/water-64/init.xyz", 0.1, "nve")[0]
    assert "water-baseline sha256 " in shipped.splitlines()[0]
    reference = method_xml("reference", MODELS, "inputs/water-64/init.xyz", 0.1, "nve")[0]
    assert reference.splitlines()[0].count("sha256") == 1  # the structure's only: no file


def test_a_finished_run_of_another_input_is_reused_or_kept_never_overwritten(tmp_path):
    xml = method_xml("reference", MODELS, "inputs/water-64/init.xyz", 0.1, "nve")[0]
    (tmp_path / "input.xml").write_text(xml)
    (tmp_path / "summary.json").write_text('{"ms_per_step": 1.0, "drift_meV_per_atom_ps": 0.0}')
    assert run_method(tmp_path, xml)["ms_per_step"] == 1.0  # the same input: reused, no MD
    other = method_xml("reference", MODELS, "inputs/water-64/init.xyz", 0.2, "nve")[0]
    with pytest.raises(UserError, match="holds a finished run of another input"):
        run_method(tmp_path, other)
    assert (tmp_path / "input.xml").read_text() == xml and (tmp_path / "summary.json").is_file()


def test_a_run_that_blew_up_is_a_result_kept_not_run_again(tmp_path, monkeypatch):
    """The guard's one-line message is kept with the input; the same input raises it again
    without MD, another input is refused as for a finished run."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "motion"))
    import mts_helpers as h

    xml = h.simulation_xml(nmts=(1, 1), dt_fs=100.0, steps=200)  # the Ne springs are unstable at 100 fs
    h.write_xyz(tmp_path / "init.xyz")
    with pytest.raises(UserError, match="blew up at step") as first:
        run_method(tmp_path, xml)
    kept = (tmp_path / "blew_up.txt").read_text()
    assert "blew up at step" in kept and kept.count("\n") == 1
    mtime = (tmp_path / "input.xml").stat().st_mtime_ns
    with pytest.raises(UserError) as again:
        run_method(tmp_path, xml)
    assert str(again.value) == str(first.value) and (tmp_path / "input.xml").stat().st_mtime_ns == mtime
    with pytest.raises(UserError, match="holds a finished run of another input"):
        run_method(tmp_path, h.simulation_xml(nmts=(1, 1), dt_fs=90.0, steps=200))


def test_inputs_are_ipi_xml_with_the_right_dynamics():
    xml, dt = method_xml("split:4:inner", MODELS, "inputs/water-64/init.xyz", 1.0, "nvt", thermostat="pile_l")
    root = ET.fromstring(xml)
    dyn = root.find("system/motion/dynamics")
    assert dyn.get("mode") == "mts" and dyn.get("thermostat_placement") == "inner" and dyn.get("splitting") is None
    assert dyn.findtext("nmts").strip() == "[1, 8]" and root.findtext("total_steps") == "250"
    assert dyn.find("thermostat").get("mode") == "pile_l"
    assert float(dyn.findtext("thermostat/tau")) == 100.0  # THERMOSTAT_TAU_FS, unless asked
    xml, _ = method_xml("split:4:inner", MODELS, "inputs/water-64/init.xyz", 1.0, "nvt", thermostat="pile_l",
                        tau_fs=20.0)
    assert float(ET.fromstring(xml).findtext("system/motion/dynamics/thermostat/tau")) == 20.0
    xml, _ = method_xml("split:4:inner", MODELS, "inputs/water-64/init.xyz", 1.0, "nve")
    dyn = ET.fromstring(xml).find("system/motion/dynamics")
    assert dyn.get("mode") == "mts" and dyn.find("thermostat") is None  # NVE: placement is moot
    xml, _ = method_xml("split:4:inner:baoab", MODELS, "inputs/water-64/init.xyz", 1.0, "nvt", thermostat="pile_l")
    assert ET.fromstring(xml).find("system/motion/dynamics").get("splitting") == "baoab"
    xml, dt = method_xml("conventional", MODELS, "inputs/water-64/init.xyz", 0.5, "nvt")
    assert dt == 0.5 and "{model: water-baseline}" in xml
    assert "temperature{kelvin}(O), temperature{kelvin}(H)," in xml


def test_a_gle_method_runs_the_high_pass_gle_with_the_thermostat_time_constant_at_low_frequency():
    """'…:gle' replaces the thermostat by i-PI's GLE whose memory-kernel friction
    γ(ω) = A_pp − A_ps A_sp A_ss / (A_ss² + ω²) is 1/τ at ω = 0 and 0.1/fs far above 1600 cm⁻¹."""
    xml, _ = method_xml("pair:2.5:inner:gle", MODELS, "inputs/water-64/init.xyz", 1.0, "nvt", thermostat="pile_l")
    dyn = ET.fromstring(xml).find("system/motion/dynamics")
    assert dyn.get("thermostat_placement") == "inner" and dyn.find("thermostat").get("mode") == "gle"
    a = np.array(json.loads(dyn.findtext("thermostat/A"))).reshape(2, 2) * units.FEMTOSECOND  # 1/fs

    def friction(omega):  # rad/fs
        return a[0, 0] - a[0, 1] * a[1, 0] * a[1, 1] / (a[1, 1] ** 2 + omega**2)

    assert friction(0.0) == pytest.approx(1.0 / 100.0, rel=1e-9)  # PILE_L's τ = 100 fs
    assert friction(1e3) == pytest.approx(0.1, rel=1e-6)
    omega_oh = 2 * np.pi * 2.99792458e-5 * 3600  # the O–H stretch: damped at least 8x harder than diffusion
    assert friction(omega_oh) > 8 * friction(0.0)
    assert np.all(np.linalg.eigvals(a + a.T) > 0)  # dissipative: the stationary density is canonical
    xml, _ = method_xml("pair:2.5:inner:gle", MODELS, "inputs/water-64/init.xyz", 1.0, "nve")
    assert ET.fromstring(xml).find("system/motion/dynamics/thermostat") is None


def test_path_integral_inputs_contract_the_slow_force_only():
    assert parse_method("pair:2.5:inner:baoab:gle:rpc4", MODELS)[:2] == (2.5, 5)
    assert parse_method("pair:2.5:inner:baoab:gle:rpc4", MODELS).slow_beads == 4
    assert parse_method("pair:2.5:inner", MODELS).slow_beads is None
    xml, _ = method_xml("pair:2:inner:rpc1", MODELS, "inputs/water-64/init.xyz", 0.1, "nvt", thermostat="pile_l",
                        beads=8)
    root = ET.fromstring(xml)
    assert root.find("system/initialize").get("nbeads") == "8"
    assert {f.get("forcefield"): f.get("nbeads") for f in root.iter("force")} == {"slow": "1", "fast": None}
    assert "kinetic_cv{electronvolt}(O), kinetic_cv{electronvolt}(H)," in xml
    xml, _ = method_xml("pair:2:inner", MODELS, "inputs/water-64/init.xyz", 0.1, "nvt", beads=8)
    root = ET.fromstring(xml)  # no contraction: every force on every bead
    assert [f.get("nbeads") for f in root.iter("force")] == [None, None] and root.find("system/initialize").get("nbeads") == "8"
    xml, _ = method_xml("pair:2", MODELS, "inputs/water-64/init.xyz", 0.1, "nvt")
    assert ET.fromstring(xml).find("system/initialize").get("nbeads") == "1" and "kinetic_cv" not in xml
    for beads, method in ((8, "pair:2:rpc0"), (8, "pair:2:rpc9"), (0, "pair:2")):
        with pytest.raises(UserError, match="slow beads"):
            method_xml(method, MODELS, "inputs/water-64/init.xyz", 0.1, "nvt", beads=beads)


def test_the_fast_force_runs_in_process_unless_asked_for_a_socket():
    def forcefields(xml):
        root = ET.fromstring(xml)
        return {ff.get("name"): (ff.tag, ff.findtext("pes"), ff.findtext("parameters")) for ff in root
                if ff.tag.startswith("ff")}

    xml, _ = method_xml("pair:2", MODELS, "inputs/water-64/init.xyz", 0.1, "nvt")
    assert forcefields(xml) == {
        "slow": ("ffsocket", None, "{model: water-pair, component: slow}"),
        "fast": ("ffdirect", "ipi_mts", "{model: water-pair, component: fast}"),
    }
    xml, _ = method_xml("pair:2", MODELS, "inputs/water-64/init.xyz", 0.1, "nvt", fast="socket")
    assert {tag for tag, _, _ in forcefields(xml).values()} == {"ffsocket"}
    xml, _ = method_xml("conventional", MODELS, "inputs/water-64/init.xyz", 0.1, "nvt")
    assert [tag for tag, _, _ in forcefields(xml).values()] == ["ffsocket"]


def test_map_inputs_use_the_learned_map_and_guarded_verlet():
    models = {"reference": "ase:EMT"}
    structure = "inputs/aluminium/init.xyz"
    xml, dt = method_xml("map:al-map-16fs", models, structure, 0.32, "nvt", inner_fs=2.0, frame_fs=32.0)
    root = ET.fromstring(xml)
    dyn = root.find("system/motion/dynamics")
    assert dyn.get("mode") == "learned_map" and dyn.get("model") == "al-map-16fs"
    assert dyn.find("thermostat").get("mode") == "svr" and dyn.findtext("nmts") is None
    assert root.findtext("total_steps") == "20" and root.find("output/trajectory").get("stride") == "2"
    assert "temperature{kelvin}(Al), potential" in xml and "{model: ase:EMT}" in xml
    # Verlet at a long step runs as mode='mts' with one level (i-PI's nve bit for bit) for the guard
    dyn = ET.fromstring(method_xml("vv:16", models, structure, 0.32, "nve", inner_fs=2.0, frame_fs=32.0)[0]).find(
        "system/motion/dynamics")
    assert dyn.get("mode") == "mts" and dyn.get("thermostat_placement") == "outer"
    # frames every multiple of the step closest to the asked interval: 16 fs for 10 fs
    xml, _ = method_xml("vv:16", models, structure, 0.32, "nve", inner_fs=2.0, frame_fs=10.0)
    assert ET.fromstring(xml).find("output/trajectory").get("stride") == "1"


def _result(rng, shift=0.0, t_o=300.0, t_h=300.0, dt=0.5, s_per_ps=10.0):
    """Synthetic per-method results: 50 frames of 3 RDFs of 20 bins, noise 0.05, + shift."""
    r = {"dt_fs": dt, "s_per_ps": s_per_ps, "nve_drift": 0.0, "D": 2.0, "r": np.arange(20.0),
         "T_O": (t_o, 2.0), "T_H": (t_h, 2.0), "species": ["O", "H"], "target_K": 300.0}
    for name in ("OO", "OH", "HH"):
        r[f"rdf_{name}"] = 1.0 + shift + 0.05 * rng.standard_normal((50, 20))
    return r


def test_judge_measures_the_error_with_the_control_run():
    from ipi_mts.benchmarking import judge

    rng = np.random.default_rng(0)
    results = {"reference": _result(rng), "reference@8": _result(rng, t_o=310.0),
               "same": _result(rng, t_o=307.0), "shifted": _result(rng, shift=0.05),
               "hot": _result(rng, t_h=340.0), "pair:2": _result(rng, dt=2.0, s_per_ps=4.0)}
    rows = {r["method"]: r for r in judge(results, "reference")}
    # the control is within error by construction; so is a run of the same statistics 7 K off
    # in T(O) (the control is 10 K off)
    assert rows["reference@8"]["within_error"] and rows["same"]["within_error"]
    assert rows["shifted"]["rdf_OO_vs_control"] > 1.5 and not rows["shifted"]["within_error"]
    assert not rows["hot"]["within_error"]
    assert rows["pair:2"]["speedup"] == 2.5
    assert rows["hot"]["T_dev_pct"] == pytest.approx(100 * 40 / 300)
    # without a control the block errors decide, and call that run outside (7 K > 2 × 2.8 K;
    # its O–O χ of 1.6 > 1.5 is chance: 5 blocks estimate the error loosely)
    del results["reference@8"]
    assert not {r["method"]: r for r in judge(results, "reference")}["same"]["within_error"]


def test_speedup_lines_join_the_outer_steps_of_one_method():
    lines = {m: method_family(m) for m in ("pair:2", "pair:3", "pair:2.5:inner", "pair:3:inner:baoab",
                                           "pair:2.5:inner:rpc4", "pair:3:inner:rpc4", "split:1", "map:al-map-16fs",
                                           "pair:4/1:isokinetic")}
    assert lines == {"pair:2": "pair", "pair:3": "pair", "pair:2.5:inner": "pair:inner",
                     "pair:3:inner:baoab": "pair:inner:baoab", "pair:2.5:inner:rpc4": "pair:inner:rpc4",
                     "pair:3:inner:rpc4": "pair:inner:rpc4", "split:1": "split", "map:al-map-16fs": "map",
                     "pair:4/1:isokinetic": "pair/1:isokinetic"}


def test_seeds_run_every_method_seed_by_seed():
    from ipi_mts.benchmarking import with_seeds

    assert with_seeds(["reference", "pair:2"]) == ["reference", "reference@8", "pair:2"]
    assert with_seeds(["reference", "pair:2"], 3) == ["reference", "pair:2", "reference@8", "pair:2@8",
                                                      "reference@9", "pair:2@9"]
    with pytest.raises(UserError, match="at least 1"):
        with_seeds(["reference"], 0)


def test_seeds_see_a_bias_that_one_control_run_cannot():
    from ipi_mts.benchmarking import judge, with_seeds

    def runs(rng, method, seeds, shift=0.0, t_h=300.0, s_per_ps=10.0):
        # each seed's temperatures scatter by 3 K, as independent runs do
        return {run.replace("reference", method): _result(rng, shift=shift, t_o=300.0 + 3.0 * rng.standard_normal(),
                                                           t_h=t_h + 3.0 * rng.standard_normal(), s_per_ps=s_per_ps)
                for run in with_seeds(["reference"], seeds)}

    # a bias of 0.006 in g(r), against a per-run RDF noise of 0.05/√50 = 0.007 per bin: one
    # control run calls it within error about half of the time, twelve seeds never
    single, seeded = 0, 0
    for repeat in range(10):
        rng = np.random.default_rng(repeat)
        one = {**runs(rng, "reference", 1), "biased": _result(rng, shift=0.006)}
        single += {r["method"]: r for r in judge(one, "reference")}["biased"]["within_error"]
        many = {**runs(rng, "reference", 12), **runs(rng, "biased", 12, shift=0.006)}
        seeded += {r["method"]: r for r in judge(many, "reference")}["biased"]["within_error"]
    assert single >= 3 and seeded == 0

    rng = np.random.default_rng(0)
    results = {**runs(rng, "reference", 8), **runs(rng, "same", 8, s_per_ps=5.0), **runs(rng, "hot", 8, t_h=310.0),
               "one-seed": _result(rng)}
    rows = {r["method"]: r for r in judge(results, "reference")}
    assert set(rows) == {"reference", "same", "hot", "one-seed"} and rows["same"]["seeds"] == 8
    assert rows["same"]["within_error"] and max(rows["same"][f"rdf_{n}_z"] for n in ("OO", "OH", "HH")) < 1.5
    assert rows["same"]["speedup"] == 2.0
    assert not rows["hot"]["within_error"] and rows["hot"]["T_H_z"] > 2.0
    assert rows["hot"]["T_H"][0] == pytest.approx(310.0, abs=3.0)
    assert rows["one-seed"]["within_error"]  # judged with the reference's seed-to-seed error


def _write_run(folder: Path, inner_columns: bool, beads: int = 1) -> None:
    """A run's outputs as i-PI and the mts monitor write them: 2 waters, 40 frames, 1 ps; with
    `beads` > 1 one trajectory file per bead and the centroid-virial kinetic energies."""
    rng = np.random.default_rng(3)
    base = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [5, 5, 5], [5.96, 5, 5], [4.76, 5.93, 5]])
    for bead in range(beads):
        with open(folder / f"run.pos_{bead}.xyz", "w") as f:
            for step in range(40):
                f.write("6\n# CELL(abcABC): 12.0 12.0 12.0 90.0 90.0 90.0 Step: %d Bead: %d "
                        "positions{angstrom} cell{angstrom}\n" % (step, bead))
                for s, x in zip("OHHOHH", base + rng.normal(0, 0.05, base.shape)):
                    f.write(f"{s} {x[0]:.6f} {x[1]:.6f} {x[2]:.6f}\n")
    time = np.arange(40) * 0.025
    names = ["time{picosecond}", "temperature{kelvin}(O)", "temperature{kelvin}(H)"]
    names += ["kinetic_cv{electronvolt}(O)", "kinetic_cv{electronvolt}(H)"] if beads > 1 else []
    head = "".join(f"# column {k + 1} --> {n} : x\n" for k, n in enumerate(names))
    body = "".join(f"{t} {300 + k % 3} {290 + k % 5}" + (f" {0.1 + 0.01 * (k % 2)} {0.5 - 0.02 * (k % 3)}"
                                                        if beads > 1 else "") + "\n" for k, t in enumerate(time))
    (folder / "run.out").write_text(head + body)
    cols = "# step time_ps conserved_Ha drift_meV_per_atom_ps T(O)_K T(H)_K min_distance_A"
    rows = [f"{k} {t} 0 0 {300 + k % 3} {290 + k % 5} 0.9" for k, t in enumerate(time)]
    if inner_columns:
        cols += " T(O)_inner_K T(H)_inner_K"
        rows = [r + f" {310 + k % 2} {320 - k % 4}" for k, r in enumerate(rows)]
    (folder / "run.mts_monitor").write_text(cols + "\n" + "\n".join(rows) + "\n")


def test_path_integral_runs_are_read_over_their_beads(tmp_path):
    """RDFs averaged over the beads frame by frame, diffusion of the centroids, and the
    centroid-virial kinetic energy per atom of each species (meV)."""
    from ipi_mts.analysis import rdf_frames, self_diffusion
    from ipi_mts.benchmarking import analyse, read_frames_xyz

    _write_run(tmp_path, inner_columns=False, beads=3)
    out = analyse(tmp_path, equilibration_ps=0.5, frame_fs=25.0)
    beads = [list(read_frames_xyz(tmp_path / f"run.pos_{b}.xyz"))[20:] for b in range(3)]
    g = np.mean([rdf_frames(frames, 8, 1)[0] for frames in beads], axis=0)
    assert out["rdf_OH"].shape == g.shape == (20, 120) and np.allclose(out["rdf_OH"], g, atol=1e-12)
    assert not np.allclose(out["rdf_OH"], rdf_frames(beads[0], 8, 1)[0])  # not one bead's
    centroids = np.mean([[f.positions for f in frames] for frames in beads], axis=0)
    assert out["D"] == pytest.approx(self_diffusion(centroids, 25.0, beads[0][0].numbers == 8)[0], rel=1e-12)
    kept = np.arange(40)[np.arange(40) * 0.025 >= 0.5]
    assert out["K_O"][0] == pytest.approx(np.mean(0.1 + 0.01 * (kept % 2)) / 2 * 1000, rel=1e-12)
    assert out["K_H"][0] == pytest.approx(np.mean(0.5 - 0.02 * (kept % 3)) / 4 * 1000, rel=1e-12)
    _write_run(tmp_path, inner_columns=False)  # one bead: classical, no kinetic energy
    for extra in tmp_path.glob("run.pos_[12].xyz"):
        extra.unlink()
    assert "K_H" not in analyse(tmp_path, equilibration_ps=0.5, frame_fs=25.0)


def test_a_kinetic_energy_off_the_reference_is_outside_the_error():
    """With path integrals the per-species kinetic energy is judged like the temperature."""
    from ipi_mts.benchmarking import judge

    rng = np.random.default_rng(5)
    g = np.ones((30, 120))

    def run(k_h, seed):
        r = np.random.default_rng(seed)
        return {"dt_fs": 0.5, "s_per_ps": 10.0, "target_K": 300.0, "species": ["O", "H"], "D": 0.0,
                "nve_drift": np.nan, "nve_trace": None, "r": np.linspace(0, 6, 120),
                **{f"rdf_{n}": g + r.normal(0, 0.01, g.shape) for n in ("OO", "OH", "HH")},
                "T_O": (300 + r.normal(0, 1), 1.0), "T_H": (300 + r.normal(0, 1), 1.0),
                "K_O": (40 + r.normal(0, 0.2), 0.2), "K_H": (k_h + r.normal(0, 0.5), 0.5)}

    results = {}
    for i in range(4):
        suffix = f"@{8 + i}" if i else ""
        results["reference" + suffix] = run(110.0, rng.integers(1 << 30))
        results["same" + suffix] = run(110.0, rng.integers(1 << 30))
        results["cold" + suffix] = run(100.0, rng.integers(1 << 30))
    rows = {r["method"]: r for r in judge(results, "reference")}
    assert rows["same"]["within_error"] and rows["same"]["K_H_z"] < 2.0
    assert not rows["cold"]["within_error"] and rows["cold"]["K_H_z"] > 2.0
    assert rows["cold"]["T_H_z"] < 2.0 and rows["cold"]["K_H"][0] == pytest.approx(100.0, abs=1.5)
    one = {m: results[m] for m in ("reference", "same", "cold")}  # one seed each: 2 σ of the block errors
    rows = {r["method"]: r for r in judge(one, "reference")}
    assert rows["same"]["within_error"] and not rows["cold"]["within_error"]


def test_isokinetic_methods_are_judged_by_structure_and_potential_energy_not_temperature():
    """':isokinetic' keeps the kinetic temperature at T L/(L+1): not judged; ⟨V⟩ is, for all."""
    from ipi_mts.benchmarking import judge

    rng = np.random.default_rng(0)  # V z of pair:5 is 0.54 here (with 4 seeds, base seed 6 gives 4.0)
    g = np.ones((30, 120))

    def run(t, v, seed):
        r = np.random.default_rng(seed)
        return {"dt_fs": 0.5, "s_per_ps": 10.0, "target_K": 300.0, "species": ["O", "H"], "D": 0.0,
                "nve_drift": np.nan, "nve_trace": None, "r": np.linspace(0, 6, 120),
                **{f"rdf_{n}": g + r.normal(0, 0.01, g.shape) for n in ("OO", "OH", "HH")},
                "T_O": (t + r.normal(0, 1), 1.0), "T_H": (t + r.normal(0, 1), 1.0), "V": (v + r.normal(0, 0.3), 0.3)}

    results = {}
    for i in range(4):
        suffix = f"@{8 + i}" if i else ""
        results["reference" + suffix] = run(300.0, -140.0, rng.integers(1 << 30))
        results["pair:5:isokinetic" + suffix] = run(240.0, -140.0, rng.integers(1 << 30))
        results["pair:9:isokinetic" + suffix] = run(240.0, -136.0, rng.integers(1 << 30))
        results["pair:3:inner" + suffix] = run(240.0, -140.0, rng.integers(1 << 30))
    rows = {r["method"]: r for r in judge(results, "reference")}
    assert rows["pair:5:isokinetic"]["within_error"] and rows["pair:5:isokinetic"]["T_H_z"] > 2.0
    assert not rows["pair:9:isokinetic"]["within_error"] and rows["pair:9:isokinetic"]["V_z"] > 2.0
    assert not rows["pair:3:inner"]["within_error"]  # the temperature counts for the others


@pytest.mark.parametrize("inner_columns", [False, True])
def test_temperatures_are_read_after_the_thermostat(tmp_path, inner_columns):
    """With the thermostat inside, the monitor's temperatures after the inner O steps are
    judged, not i-PI's at the step ends (between two slow half-kicks)."""
    from ipi_mts.benchmarking import analyse

    _write_run(tmp_path, inner_columns)
    out = analyse(tmp_path, equilibration_ps=0.5, frame_fs=25.0)
    kept = np.arange(40)[np.arange(40) * 0.025 >= 0.5]
    expected_h = (320 - kept % 4) if inner_columns else (290 + kept % 5)
    assert out["T_H"][0] == pytest.approx(expected_h.mean(), rel=1e-12)
    assert out["species"] == ["O", "H"] and "rdf_OH" in out


def test_bench_refuses_beads_for_maps_and_a_contraction_beyond_the_beads(capsys):
    from ipi_mts.cli import main

    assert main(["bench", "maps", "--beads", "8"]) == 2
    assert "mode='learned_map' runs one bead" in capsys.readouterr().err
    assert main(["bench", "placement", "--family", "pair", "--beads", "4", "--slow-beads", "8", "--workdir", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err.strip()  # before any run: every input is made first
    assert len(err.splitlines()) == 1 and "pair:1:rpc8: beads must be at least 1 and slow beads between 1 and the beads (4)" in err


def test_time_alone_times_every_evaluator_on_the_structure_it_is_given():
    """Each evaluator: one warm-up and `calls` timed calls per loop, all on the given structure;
    the slower one reads slower."""
    seen = []

    def quick(cells, positions):
        seen.append(("quick", cells, positions))

    def slow(cells, positions):
        seen.append(("slow", cells, positions))
        time.sleep(0.002)

    cells, positions = np.eye(3)[None], np.zeros((1, 2, 3))
    ms = time_alone({"quick": quick, "slow": slow}, cells, positions, calls=3, loops=2)
    assert [name for name, *_ in seen].count("quick") == 2 * (1 + 3) == [name for name, *_ in seen].count("slow")
    assert all(c is cells and x is positions for _, c, x in seen)
    assert set(ms) == {"quick", "slow"} and ms["slow"] >= 2.0 > ms["quick"] >= 0.0
