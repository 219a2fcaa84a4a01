"""Map files (`save_map` / `load_map`): round trips give the same map, bit for bit; a
corrupt or mismatched file is refused with one line that names it."""

import pytest
import torch

from ipi_mts import potentials
from ipi_mts.errors import UserError
from ipi_mts.maps import GeneratingFunction, LearnedPredictor, MidpointMap, VerletPredictor
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential
from ipi_mts.potentials.model_file import ipi_masses, load_map, load_model, save_map, save_model

from map_helpers import correction, water, water_map


def learned_anchor():
    config = EquivariantConfig(
        species=(1, 8), cutoff=3.0, num_features=8, lmax=1, num_layers=1, num_basis=6,
        radial_hidden=16, avg_num_neighbors=4.0, dtype="float64",
    )
    model = EquivariantPotential(config, seed=7)
    model.set_scale_shift(0.1)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("maps")
    corrected = water_map(2.0, learned=True, tol=1e-12, max_iter=80, memory=4, fallback_substeps=3)
    embedded = MidpointMap(GeneratingFunction(learned_anchor(), 1.5), tol=1e-12)
    generating = corrected.generating
    predicted = MidpointMap(generating, LearnedPredictor(generating.potential, correction(seed=5), 2), tol=1e-12)
    return {
        "corrected": save_map(folder / "corrected.pt", corrected, anchor="qtip4pf", metadata={"seed": 0}),
        "predicted": save_map(folder / "predicted.pt", predicted, anchor="qtip4pf"),
        "pure": save_map(folder / "pure.pt", water_map(1.0, learned=False), anchor="qtip4pf", species=[1, 8]),
        "embedded": save_map(folder / "embedded.pt", embedded, masses={1: 2.014, 8: 15.999}),
        "energy": save_model(folder / "energy.pt", learned_anchor()),
        "maps": {"corrected": corrected, "embedded": embedded, "predicted": predicted},
    }


def same_steps(a: MidpointMap, b: MidpointMap):
    q, p, masses, h, numbers = water(2, seed=3)
    qa, pa, ia = a.step(q, p, masses, h, numbers)
    qb, pb, ib = b.step(q, p, masses, h, numbers)
    assert ia["converged"] and ib == ia
    return (qa == qb).all() and (pa == pb).all() and abs(qa - q.numpy()).max() > 0.01


@pytest.mark.parametrize("name", ["corrected", "embedded", "predicted"])
def test_round_trip_gives_the_same_map(files, name):
    original, loaded = files["maps"][name], load_map(files[name])
    assert same_steps(original, loaded)
    assert loaded.generating.timestep_fs == original.generating.timestep_fs
    for key in ("tol", "max_iter", "memory", "fallback_substeps"):
        assert getattr(loaded, key) == getattr(original, key), key


def test_what_the_file_says(files):
    corrected = load_map(files["corrected"])
    assert corrected.anchor == "qtip4pf" and corrected.species == [1, 8]
    assert corrected.masses == dict(zip([1, 8], ipi_masses([1, 8]))) == {1: 1.00794, 8: 15.9994}
    assert corrected.metadata == {"seed": 0} and corrected.model_file == str(files["corrected"])
    assert corrected.generating.correction is not None
    assert float(corrected.generating.correction.kinetic_scale) == pytest.approx(0.025852)
    pure = load_map(files["pure"])
    assert pure.generating.correction is None and pure.tau == pytest.approx(41.341373, rel=1e-6)
    embedded = load_map(files["embedded"])
    assert embedded.anchor == "embedded" and embedded.masses == {1: 2.014, 8: 15.999}
    content = torch.load(files["embedded"], weights_only=True)  # plain data, no code
    assert content["kind"] == "map" and sorted(content["components"]) == ["anchor"]
    assert content["map"]["anchor"] == {"embedded": "anchor"} and content["map"]["kinetic_scale_eV"] is None
    assert content["cutoffs"] == {"anchor": 3.0}
    predicted = load_map(files["predicted"])  # the learned direct predictor
    assert isinstance(predicted.predictor, LearnedPredictor) and predicted.predictor.substeps == 2
    assert predicted.predictor.potential is predicted.generating.potential
    assert not predicted.predictor.network.training
    assert type(corrected.predictor) is VerletPredictor
    content = torch.load(files["predicted"], weights_only=True)
    assert content["map"]["predictor"] == {"substeps": 2} and "predictor" in content["cutoffs"]


def test_shipped_map_by_name(files, tmp_path, monkeypatch):
    monkeypatch.setattr(potentials, "MODELS_DIR", tmp_path)
    (tmp_path / "water-map.pt").write_bytes(files["pure"].read_bytes())
    assert load_map("water-map").generating.timestep_fs == 1.0
    with pytest.raises(UserError, match="unknown map 'nope'"):
        load_map("nope")


def _error(path, loader=load_map):
    with pytest.raises(UserError) as info:
        loader(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_kind_mismatch(files):
    assert "holds a single energy model, not a long-time-step map" in _error(files["energy"])
    assert "is a long-time-step map, not an energy model" in _error(files["pure"], load_model)


def test_truncated_file(files, tmp_path):
    data = files["corrected"].read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert "not a readable model file" in _error(tmp_path / "cut.pt")


def _section(c):
    return c["map"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(masses=None), "needs masses"),
        (lambda c: c.pop("map"), "missing key 'map'"),
        (lambda c: _section(c).update(stride_fs=0.0), "stride_fs 0.0 is not a positive"),
        (lambda c: _section(c).update(stride_fs="1 fs"), "'stride_fs' in 'map' is a str"),
        (lambda c: _section(c).update(anchor={"reference": "qtip5p", "params": {}}), "anchor: unknown model 'qtip5p'"),
        (lambda c: _section(c).update(anchor={"embedded": "anchor"}), "either"),
        (lambda c: _section(c).update(kinetic_scale_eV=0.03), "kinetic_scale_eV 0.03 differs"),
        (lambda c: _section(c).update(kinetic_scale_eV=None), "exactly when the map has a correction"),
        (lambda c: _section(c)["solver"].update(max_iter=0), "max_iter = 0 is out of range"),
        (lambda c: _section(c)["solver"].pop("tol"), "solver settings must be"),
        (lambda c: _section(c)["solver"].update(newton=1), "newton = 1 must be true or false"),
        (lambda c: _section(c)["solver"].update(blocks="bonds"), "blocks = 'bonds' must be one of molecules, atoms"),
        (lambda c: _section(c)["solver"].update(guess_substeps=0), "guess_substeps = 0 is out of range"),
        (lambda c: c["components"].update(full=c["components"]["correction"]), "has components among"),
        (lambda c: c["components"]["correction"].update(architecture="equivariant"), "unknown architecture"),
        (lambda c: c["components"]["correction"]["config"].update(num_features=4), "has shape"),
        (lambda c: c["components"]["correction"]["config"].update(species=[1, 6]), "has species"),
        (lambda c: next(iter(c["components"]["correction"]["weights"].values())).fill_(float("nan")), "not finite"),
        (lambda c: _section(c).update(predictor={"substeps": 1}), "exactly when the map has a predictor"),
    ],
)
def test_corrupt_files_rejected(files, tmp_path, edit, message):
    content = torch.load(files["corrected"], weights_only=True)
    edit(content)
    torch.save(content, tmp_path / "edited.pt")
    assert message in _error(tmp_path / "edited.pt")


def test_solver_settings_round_trip_and_default_where_earlier_files_lack_them(files, tmp_path):
    """newton, blocks and guess_substeps are stored; a file of an earlier version, without them,
    loads with the defaults (Anderson from one Verlet step)."""
    m = load_map(files["corrected"])
    m.newton, m.guess_substeps, m.blocks = True, 8, "atoms"
    save_map(tmp_path / "newton.pt", m, anchor="qtip4pf")
    again = load_map(tmp_path / "newton.pt")
    assert (again.newton, again.guess_substeps, again.predictor.substeps, again.blocks) == (True, 8, 8, "atoms")
    content = torch.load(tmp_path / "newton.pt", weights_only=True)
    for key in ("newton", "guess_substeps", "blocks"):
        del _section(content)["solver"][key]
    torch.save(content, tmp_path / "earlier.pt")
    earlier = load_map(tmp_path / "earlier.pt")
    assert (earlier.newton, earlier.guess_substeps, earlier.predictor.substeps, earlier.blocks) == (False, 1, 1, "molecules")


def test_save_rejects_bad_input(tmp_path):
    pure = water_map(1.0, learned=False)
    with pytest.raises(UserError, match="give the species"):
        save_map(tmp_path / "m.pt", pure, anchor="qtip4pf")
    with pytest.raises(UserError, match="name it with anchor="):
        save_map(tmp_path / "m.pt", pure, species=[1, 8])
    with pytest.raises(UserError, match="not a reference potential"):
        save_map(tmp_path / "m.pt", pure, anchor="water-pair", species=[1, 8])
    with pytest.raises(UserError, match="differ from the learned parts"):
        save_map(tmp_path / "m.pt", water_map(1.0), anchor="qtip4pf", species=[1, 6, 8])
    assert not list(tmp_path.iterdir())


def test_corrupt_predictor_settings_rejected(files, tmp_path):
    content = torch.load(files["predicted"], weights_only=True)
    content["map"]["predictor"]["substeps"] = 0
    torch.save(content, tmp_path / "edited.pt")
    assert "predictor substeps 0 must be >= 1" in _error(tmp_path / "edited.pt")
    content["map"].pop("predictor")
    torch.save(content, tmp_path / "edited.pt")
    assert "exactly when the map has a predictor" in _error(tmp_path / "edited.pt")
