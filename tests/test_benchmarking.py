import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ipi_mts import units
from ipi_mts.benchmarking import method_xml, parse_method, resolved_model, run_method, same_input
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
    assert parse_method("pair:2:gle", MODELS)[3:] == (None, None, None, True)
    m = parse_method("pair:2", MODELS)
    assert (m.dt, m.n_inner, m.placement, m.splitting, m.gle) == (2.0, 4, None, None, False)
    assert [(f[1], f[2]) for f in m.ffs] == [("water-pair", "slow"), ("water-pair", "fast")]
    m = parse_method("midpoint:4", MODELS)
    assert (m.dt, m.map_model, m.ffs[0][1]) == (4.0, "midpoint:qtip4pf", "qtip4pf")
    m = parse_method("map:al-map-16fs", {"reference": "ase:EMT"})
    assert (m.dt, m.map_model) == (pytest.approx(16.0), "al-map-16fs")
    with pytest.raises(UserError, match="not a multiple"):
        parse_method("pair:1.2", MODELS)
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


def _write_run(folder: Path, inner_columns: bool) -> None:
    """A run's outputs as i-PI and the mts monitor write them: 2 waters, 40 frames, 1 ps."""
    rng = np.random.default_rng(3)
    base = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [5, 5, 5], [5.96, 5, 5], [4.76, 5.93, 5]])
    with open(folder / "run.pos_0.xyz", "w") as f:
        for step in range(40):
            f.write("6\n# CELL(abcABC): 12.0 12.0 12.0 90.0 90.0 90.0 Step: %d Bead: 0 "
                    "positions{angstrom} cell{angstrom}\n" % step)
            for s, x in zip("OHHOHH", base + rng.normal(0, 0.05, base.shape)):
                f.write(f"{s} {x[0]:.6f} {x[1]:.6f} {x[2]:.6f}\n")
    time = np.arange(40) * 0.025
    head = "".join(f"# column {k + 1} --> {n} : x\n" for k, n in enumerate(
        ["time{picosecond}", "temperature{kelvin}(O)", "temperature{kelvin}(H)"]))
    body = "".join(f"{t} {300 + k % 3} {290 + k % 5}\n" for k, t in enumerate(time))
    (folder / "run.out").write_text(head + body)
    cols = "# step time_ps conserved_Ha drift_meV_per_atom_ps T(O)_K T(H)_K min_distance_A"
    rows = [f"{k} {t} 0 0 {300 + k % 3} {290 + k % 5} 0.9" for k, t in enumerate(time)]
    if inner_columns:
        cols += " T(O)_inner_K T(H)_inner_K"
        rows = [r + f" {310 + k % 2} {320 - k % 4}" for k, r in enumerate(rows)]
    (folder / "run.mts_monitor").write_text(cols + "\n" + "\n".join(rows) + "\n")


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
