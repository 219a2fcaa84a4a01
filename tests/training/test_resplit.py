"""`ipi-mts resplit`: the fit recovers known bonded terms, the pair's total is unchanged, the
file round-trips, and bad requests are one-line errors."""

import math

import numpy as np
import pytest
import torch

from ipi_mts.cli import main
from ipi_mts.errors import UserError
from ipi_mts.potentials import evaluate, load_potential
from ipi_mts.potentials.bonded import BondedConfig, BondedTerms
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential
from ipi_mts.potentials.model_file import load_model, save_model
from ipi_mts.potentials.pair import LearnedPair
from ipi_mts.state import State
from ipi_mts.training.resplit import bonded_types, fit_transfer, resplit_file
from ipi_mts.training.toy import toy_water_frames, write_toy_water


def tiny(cutoff, seed):
    model = EquivariantPotential(
        EquivariantConfig(species=(1, 8), cutoff=cutoff, num_features=4, lmax=1, num_layers=1, num_basis=4,
                          radial_hidden=8, readout_hidden=8, avg_num_neighbors=6.0, dtype="float64"),
        seed=seed,
    )
    model.set_scale_shift(0.5, 0.0)
    return model


@pytest.fixture(scope="module")
def frames():
    return toy_water_frames(n_segments=4, seed=3)


def known_terms():
    terms = BondedTerms(BondedConfig(species=[1, 8], bonds=[{"species": [1, 8], "r0": 0.96}],
                                     angles=[{"species": [1, 8, 1], "r0": 0.96, "u0": math.cos(math.radians(104.5))}]))
    terms.set_coefficients([0.3, 2.0, -4.0, 3.0, -0.2, 1.5, -0.5, 0.4, 0.3, 0.8])
    return terms


def test_types_are_the_bonds_found(frames):
    bonds, angles = bonded_types(frames, (1, 8), 1.4)
    assert [b["species"] for b in bonds] == [[1, 8]] and [a["species"] for a in angles] == [[1, 8, 1]]
    assert 0.9 < bonds[0]["r0"] < 1.02 and -0.35 < angles[0]["u0"] < -0.15


def test_a_slow_model_made_of_bonded_terms_is_moved_entirely(frames):
    # slow = known bonded terms: the fit must find them (same r0, u0 as the frames' means)
    bonds, angles = bonded_types(frames, (1, 8), 1.4)
    slow = known_terms()
    slow.config.bonds[0]["r0"] = bonds[0]["r0"]
    slow.config.angles[0].update(r0=angles[0]["r0"], u0=angles[0]["u0"])
    transfer, summary = fit_transfer(LearnedPair(tiny(2.0, 1), slow), frames, quiet=True)
    assert summary["share_moved"] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(transfer.coefficients().numpy(), slow.coefficients().numpy(), rtol=1e-5, atol=1e-6)


def test_resplit_keeps_the_total_and_moves_force_from_slow_to_fast(frames, tmp_path):
    pair = LearnedPair(tiny(2.0, 1), tiny(3.0, 2))
    source = save_model(tmp_path / "pair.pt", pair, {"trained": "here"})
    data = write_toy_water(tmp_path / "frames.extxyz", n_segments=4, seed=3)
    summary = resplit_file(source, [data], tmp_path / "resplit.pt", quiet=True)
    assert 0 < summary["share_moved"] < 1
    assert summary["resplit_slow_force_rms_eV_per_A"] < summary["slow_force_rms_eV_per_A"]
    new = load_model(tmp_path / "resplit.pt")
    assert new.metadata["trained"] == "here" and new.metadata["resplit"]["frames"] == len(frames)
    state = State.from_ase(frames[:3])
    old_e = {c: evaluate(pair.component(c), state) for c in ("fast", "slow", "full")}
    new_e = {c: evaluate(new.component(c), state) for c in ("fast", "slow", "full")}
    for key in ("energy", "forces", "virial"):  # the total, bit for bit (T is not evaluated)
        assert torch.equal(getattr(new_e["full"], key), getattr(old_e["full"], key))
        total = getattr(new_e["fast"], key) + getattr(new_e["slow"], key)
        torch.testing.assert_close(total, getattr(old_e["full"], key), rtol=1e-10, atol=1e-10)
    # the components do change, by ±T; and load_potential serves the same components
    t = evaluate(new.transfer, state).forces
    torch.testing.assert_close(new_e["slow"].forces, old_e["slow"].forces - t)
    served = evaluate(load_potential(str(tmp_path / "resplit.pt"), "slow"), state).forces
    torch.testing.assert_close(served, new_e["slow"].forces)
    # nothing is overwritten, and a resplit pair is not resplit again
    with pytest.raises(UserError, match="exists: give another --output"):
        resplit_file(source, [data], tmp_path / "resplit.pt", quiet=True)
    with pytest.raises(UserError, match="resplit already"):
        resplit_file(tmp_path / "resplit.pt", [data], tmp_path / "again.pt", quiet=True)


def test_a_bad_transfer_component_is_rejected(tmp_path):
    path = save_model(tmp_path / "p.pt", LearnedPair(tiny(2.0, 1), tiny(3.0, 2), known_terms()))
    content = torch.load(path, weights_only=True)
    content["components"]["transfer"]["weights"]["bond_coefficients"] = torch.zeros(1, 3, dtype=torch.float64)
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="component 'transfer': weight bond_coefficients has shape"):
        load_model(tmp_path / "bad.pt")
    content["components"]["extra"] = content["components"].pop("transfer")
    torch.save(content, tmp_path / "bad2.pt")
    with pytest.raises(UserError, match="a pair file needs components"):
        load_model(tmp_path / "bad2.pt")


def test_cli(tmp_path, capsys):
    source = save_model(tmp_path / "pair.pt", LearnedPair(tiny(2.0, 1), tiny(3.0, 2)))
    single = save_model(tmp_path / "single.pt", tiny(3.0, 2))
    data = write_toy_water(tmp_path / "frames.extxyz", n_segments=2, seed=4)
    out = tmp_path / "new.pt"
    assert main(["resplit", str(source), str(data), "--output", str(out), "--every", "2", "--quiet"]) == 0
    line = capsys.readouterr().out
    assert "1 bond and 1 angle types on 2 frames" in line and "% of its square moved" in line and out.is_file()
    assert main(["resplit", str(single), str(data), "--output", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs a fast/slow pair" in err
    assert main(["resplit", str(source), str(data), "--output", str(tmp_path / "y.pt"), "--cutoff", "0.5"]) == 2
    assert "no bonds shorter than the bond cutoff 0.5" in capsys.readouterr().err
