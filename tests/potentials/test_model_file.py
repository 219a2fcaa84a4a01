"""Model files: round trips, components through `load_potential`, and rejected files."""

from dataclasses import replace

import pytest
import torch

from ipi_mts import potentials, testing
from ipi_mts.errors import UserError
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential
from ipi_mts.potentials.lennard_jones import LennardJones
from ipi_mts.potentials.model_file import (
    FORMAT,
    VERSION,
    load_component,
    load_model,
    read_model_file,
    save_model,
)
from ipi_mts.potentials.pair import LearnedPair

WATER = (1, 8)
METADATA = {"dataset": "water-64 q-TIP4P/F", "epochs": 3, "rmse_forces_eV_A": [0.12, 0.05], "seed": 0}


def model(cutoff=2.0, layers=1, lmax=1, features=8, dtype="float32", seed=0):
    config = EquivariantConfig(
        species=WATER,
        cutoff=cutoff,
        num_features=features,
        lmax=lmax,
        num_layers=layers,
        num_basis=6,
        radial_hidden=16,
        avg_num_neighbors=3.0,
        dtype=dtype,
    )
    m = EquivariantPotential(config, seed=seed)
    m.set_reference_energies({1: -13.1, 8: -431.7})
    m.set_scale_shift(0.7, 0.01)
    return m


@pytest.fixture(scope="module")
def pair():
    return LearnedPair(model(2.0, 1, seed=1), model(3.5, 2, lmax=2, seed=2))


@pytest.fixture(scope="module")
def files(tmp_path_factory, pair):
    folder = tmp_path_factory.mktemp("models")
    single = save_model(folder / "single.pt", model(3.5, 2, seed=3), METADATA, masses={1: 1.008, 8: 15.999})
    pair_file = save_model(folder / "pair.pt", pair, {"kind": "co-trained"})
    return {"single": single, "pair": pair_file}


def state():
    return testing.water_box(2, jitter=0.08, seed=1)


def same(a, b):
    x, y = evaluate(a, state()), evaluate(b, state())
    return torch.equal(x.energy, y.energy) and torch.equal(x.forces, y.forces) and torch.equal(x.virial, y.virial)


def test_single_round_trip(files):
    original = model(3.5, 2, seed=3)
    loaded = load_model(files["single"])
    assert isinstance(loaded, EquivariantPotential) and not loaded.training
    assert loaded.config == original.config
    assert same(loaded, original)
    assert loaded.reference_energies.tolist() == [-13.1, -431.7]
    assert loaded.metadata == METADATA
    assert loaded.masses == {1: 1.008, 8: 15.999}
    assert loaded.model_file == str(files["single"])


def test_same_model_saves_the_same_bytes(tmp_path):
    """Saved twice, to two names: byte for byte the same file (so hashes name the content)."""
    a = save_model(tmp_path / "a.pt", model(3.5, 2, seed=3), METADATA)
    b = save_model(tmp_path / "b.pt", model(3.5, 2, seed=3), METADATA)
    assert a.read_bytes() == b.read_bytes()


def test_file_is_plain_data(files):
    """Readable with weights_only (no code), self-describing."""
    content = torch.load(files["pair"], weights_only=True)
    assert content["format"] == FORMAT and content["version"] == VERSION
    assert content["kind"] == "pair" and sorted(content["components"]) == ["fast", "slow"]
    assert content["units"] == {"energy": "eV", "length": "Å"}
    assert content["species"] == [1, 8]
    assert content["cutoffs"] == {"fast": 2.0, "slow": 3.5, "full": 3.5}
    assert content["masses"] is None and content["metadata"] == {"kind": "co-trained"}
    assert content["components"]["slow"]["config"]["num_layers"] == 2
    assert content["components"]["fast"]["architecture"] == "equivariant"
    assert read_model_file(files["single"])["kind"] == "single"


def test_pair_round_trip_and_components(files, pair):
    loaded = load_model(files["pair"])
    assert isinstance(loaded, LearnedPair)
    assert same(loaded, pair)
    assert same(loaded.component("fast"), pair.fast) and same(loaded.component("slow"), pair.slow)
    assert loaded.fast.cutoff == 2.0 and loaded.slow.cutoff == 3.5


def test_load_potential_by_path(files, pair):
    path = str(files["pair"])
    for component, want in (("fast", pair.fast), ("slow", pair.slow), ("full", pair)):
        got = load_potential(path, component)
        assert same(got, want), component
        got.check([8, 1, 1])
    assert same(load_component(path, "fast"), pair.fast)
    full = load_potential(str(files["single"]))
    assert isinstance(full, EquivariantPotential)
    with pytest.raises(UserError, match="single model: it has only the 'full' component, not 'fast'"):
        load_potential(str(files["single"]), component="fast")
    with pytest.raises(UserError, match="unknown component 'medium'"):
        load_potential(path, component="medium")
    with pytest.raises(UserError, match="a model file takes only dtype"):
        load_potential(path, cutoff="3")


def test_dtype_override(files):
    as32 = load_potential(str(files["single"]))
    as64 = load_potential(str(files["single"]), dtype="float64")
    assert as64.config.dtype == "float64" and next(as64.parameters()).dtype == torch.float64
    a, b = evaluate(as32, state()), evaluate(as64, state())
    assert float(a.energy) == pytest.approx(float(b.energy), rel=1e-6)
    assert torch.allclose(a.forces, b.forces, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="bad dtype 'half'"):
        load_model(files["single"], dtype="half")


def test_shipped_model_names(tmp_path, monkeypatch, files):
    monkeypatch.setattr(potentials, "MODELS_DIR", tmp_path)
    with pytest.raises(UserError, match=r"shipped model 'water-pair' is not installed .*water-pair\.pt"):
        load_potential("water-pair", component="fast")
    with pytest.raises(UserError, match="unknown model 'no-such-model'.*qtip4pf"):
        load_potential("no-such-model")
    (tmp_path / "water-pair.pt").write_bytes(files["pair"].read_bytes())
    assert isinstance(load_potential("water-pair", component="slow"), EquivariantPotential)
    assert "water-pair" in potentials.shipped_models()
    assert "water-pair" in str(pytest.raises(UserError, load_potential, "nope").value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"absent\.pt: no such model file"):
        load_potential(str(tmp_path / "absent.pt"))
    with pytest.raises(UserError, match="is a directory"):
        load_model(tmp_path)


def _rewrite(files, tmp_path, edit, source="single"):
    content = torch.load(files[source], weights_only=True)
    edit(content)
    path = tmp_path / "edited.pt"
    torch.save(content, path)
    return path


def _error(path):
    with pytest.raises(UserError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_and_foreign_files_rejected(files, tmp_path):
    data = files["single"].read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "empty.pt": b"",
        "text.pt": b"this is not a model\n",
        "noise.pt": bytes(range(256)) * 8,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert "not a readable model file" in _error(tmp_path / name), name

    torch.save(model().state_dict(), tmp_path / "state_dict.pt")
    assert "not an ipi-mts model file" in _error(tmp_path / "state_dict.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert "not an ipi-mts model file" in _error(tmp_path / "list.pt")
    torch.save(LennardJones(), tmp_path / "pickled_module.pt")  # a whole pickled module
    assert "pickled objects or code" in _error(tmp_path / "pickled_module.pt")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(version=VERSION + 1), "newer than this ipi-mts reads"),
        (lambda c: c.update(version="1"), "bad format version"),
        (lambda c: c.update(kind="trio"), "unknown kind 'trio'"),
        (lambda c: c.pop("species"), "missing key 'species'"),
        (lambda c: c.update(species=[1, 200]), "not atomic numbers"),
        (lambda c: c.update(units={"energy": "kcal/mol", "length": "Å"}), "units"),
        (lambda c: c.update(masses=[1.0]), "masses"),
        (lambda c: c.pop("metadata"), "missing key 'metadata'"),
        (lambda c: c.update(components={"fast": c["components"]["full"]}), "needs components"),
        (lambda c: c["components"]["full"].pop("weights"), "missing key 'weights' in component 'full'"),
        (lambda c: c["components"]["full"].update(architecture="mace"), "unknown architecture 'mace'"),
        (lambda c: c["components"]["full"]["config"].update(num_features=4), "has shape"),
        (lambda c: c["components"]["full"]["config"].update(num_layers=3), "missing"),
        (lambda c: c["components"]["full"]["config"].update(wings=2), "unknown equivariant model config keys"),
        (lambda c: c["components"]["full"]["config"].update(species=[1, 6]), "has species"),
        (lambda c: c["components"]["full"]["weights"].pop("readout.0.weight"), "readout.0.weight"),
        (
            lambda c: c["components"]["full"]["weights"]["readout.2.weight"].fill_(float("nan")),
            "not finite",
        ),
    ],
)
def test_inconsistent_files_rejected(files, tmp_path, edit, message):
    assert message in _error(_rewrite(files, tmp_path, edit))


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(UserError, match="JSON"):
        save_model(tmp_path / "m.pt", model(), {"loss": torch.tensor(1.0)})
    with pytest.raises(UserError, match="not a learned architecture"):
        save_model(tmp_path / "m.pt", LennardJones())
    with pytest.raises(UserError, match="masses"):
        save_model(tmp_path / "m.pt", model(), masses={8: 16.0})
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_load_to_device_keeps_outputs(files):
    """`device` is honoured (CPU here; CUDA where present): same outputs as the default."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on_device = load_model(files["pair"], device=device)
    assert next(on_device.parameters()).device.type == device
    s = state()
    s = replace(s, **{name: getattr(s, name).to(device) for name in ("positions", "numbers", "cell", "pbc", "batch")})
    out = evaluate(on_device, s)
    ref = evaluate(load_model(files["pair"]), state())
    assert torch.allclose(out.forces.cpu(), ref.forces, rtol=1e-4, atol=1e-5)


def test_cast_model_saves_its_actual_dtype(tmp_path):
    m = model(seed=4).double()
    loaded = load_model(save_model(tmp_path / "cast.pt", m))
    assert loaded.config.dtype == "float64" and loaded.dtype == torch.float64
    assert same(loaded, m)
