"""`ipi-mts evaluate`: error metrics, plots and JSON of a tiny model, and the spectrum
fraction on synthetic signals."""

import json

import numpy as np
import pytest

from ipi_mts.cli import main
from ipi_mts.errors import UserError
from ipi_mts.evaluation import (
    evaluate_model,
    fraction_above,
    outer_nyquist_thz,
    power_spectrum,
    read_trajectory,
    spectrum_metrics,
    write_ipi_xyz,
)
from ipi_mts.potentials.equivariant import EquivariantConfig, EquivariantPotential
from ipi_mts.potentials.model_file import load_model, save_model
from ipi_mts.potentials.pair import LearnedPair
from ipi_mts.training.batches import FrameSet
from ipi_mts.training.losses import measure_errors
from ipi_mts.training.toy import toy_water_frames, write_toy_water

PNG = b"\x89PNG\r\n\x1a\n"


def tiny(cutoff, seed):
    model = EquivariantPotential(
        EquivariantConfig(species=(1, 8), cutoff=cutoff, num_features=4, lmax=1, num_layers=1,
                          num_basis=4, radial_hidden=8, readout_hidden=8, avg_num_neighbors=6.0),
        seed=seed,
    )
    model.set_reference_energies({1: 0.1, 8: -0.2})
    model.set_scale_shift(0.5, 0.0)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_toy_water(root / "data.extxyz", n_segments=4, seed=7)
    pair = save_model(root / "pair.pt", LearnedPair(tiny(2.0, 0), tiny(3.0, 1)), {"outer_step_fs": 2.0})
    single = save_model(root / "single.pt", tiny(3.0, 2))
    return root, data, pair, single


# --- the spectrum -------------------------------------------------------------------------------
@pytest.mark.parametrize("outer_step_fs", [2.0, 4.0])
def test_fraction_above_the_outer_nyquist_frequency(outer_step_fs):
    dt, n = 0.5, 4000
    t = dt * np.arange(n)
    nu_c = outer_nyquist_thz(outer_step_fs)  # THz = 1/ps
    assert nu_c == pytest.approx(1000.0 / (2 * outer_step_fs))
    below = np.sin(2 * np.pi * 0.5 * nu_c * 1e-3 * t)  # t in fs, ν in 1/fs
    above = np.sin(2 * np.pi * 1.5 * nu_c * 1e-3 * t)
    for signal, want in ((below, 0.0), (above, 1.0), (below + above, 0.5)):
        freq, power = power_spectrum(signal[:, None, None] * np.ones((1, 2, 3)), dt)
        assert fraction_above(freq, power, nu_c) == pytest.approx(want, abs=0.01)
    # the peak sits at the sine's frequency
    freq, power = power_spectrum(below, dt)
    assert freq[np.argmax(power)] == pytest.approx(0.5 * nu_c, rel=0.02)


def test_spectrum_metrics_split_fast_and_slow_forces():
    dt, n = 0.5, 2000
    t = dt * np.arange(n)[:, None, None]
    fast = np.sin(2 * np.pi * 0.3 * t) * np.ones((1, 4, 3))  # 300 THz > 1/(2·2 fs) = 250 THz
    slow = np.sin(2 * np.pi * 0.01 * t) * np.ones((1, 4, 3))  # 10 THz
    result, spectra = spectrum_metrics(fast, slow, dt, outer_step_fs=2.0)
    assert result["slow"]["fraction_above_outer_nyquist"] < 0.01
    assert result["fast"]["fraction_above_outer_nyquist"] > 0.99
    assert 0.4 < result["full"]["fraction_above_outer_nyquist"] < 0.6
    assert result["outer_nyquist_cm1"] == pytest.approx(8339.1, rel=1e-4)
    assert spectra["freq_thz"].shape == spectra["slow"].shape


def test_power_spectrum_needs_frames():
    with pytest.raises(UserError, match="at least 4"):
        power_spectrum(np.zeros((2, 3)), 0.5)


# --- evaluate --------------------------------------------------------------------------------------
def test_evaluate_pair_writes_finite_metrics_and_plots(files, tmp_path):
    root, data, pair, single = files
    traj = tmp_path / "traj.extxyz"
    import ase.io

    ase.io.write(traj, toy_water_frames(n_segments=4, seed=1), format="extxyz")
    out = tmp_path / "out"
    result = evaluate_model(pair, data=[data], out=out, split="all", trajectory=traj,
                            trajectory_dt_fs=0.5, quiet=True)
    errors = result["errors"]
    for key in ("energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "forces_mae_mev_per_A", "forces_rmse_mev_per_A"):
        assert np.isfinite(errors[key]) and errors[key] > 0
    assert errors["n_structures"] == 8
    assert errors["fast"]["forces_rms_mev_per_A"] > 0 and errors["slow"]["forces_rms_mev_per_A"] > 0
    assert set(errors["forces_mae_by_element_mev_per_A"]) == {"H", "O"}
    # the same numbers as the trainer's own measure
    again = measure_errors(load_model(pair), FrameSet(toy_water_frames(n_segments=4, seed=7)), 4)
    assert errors["forces_mae_mev_per_A"] == pytest.approx(again["forces_mae_mev_per_A"], rel=1e-6)
    assert errors["energy_mae_mev_per_atom"] == pytest.approx(again["energy_mae_mev_per_atom"], rel=1e-6)
    spectrum = result["spectrum"]
    assert spectrum["outer_step_fs"] == 2.0  # from the model file's metadata
    assert spectrum["trajectory_frames"] == 8
    for part in ("fast", "slow", "full"):
        assert 0.0 <= spectrum[part]["fraction_above_outer_nyquist"] <= 1.0
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    for name in ("parity.png", "spectrum.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert (out / "spectrum.npz").is_file()


def test_evaluate_single_through_the_cli(files, tmp_path, capsys):
    root, data, pair, single = files
    out = tmp_path / "single"
    assert main(["evaluate", str(single), "--data", str(data), "--split", "all", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["kind"] == "single" and "spectrum" not in result
    assert np.isfinite(result["errors"]["forces_rmse_mev_per_A"])
    assert (out / "parity.png").read_bytes()[:8] == PNG


def test_evaluate_errors_are_one_line(files, tmp_path, capsys):
    root, data, pair, single = files
    # four segments split 0.8/0.1/0.1 leave the test split empty
    assert main(["evaluate", str(pair), "--data", str(data), "--out", str(tmp_path / "x"), "--no-spectrum"]) == 2
    err = capsys.readouterr().err.strip()
    assert "split of 8 frames is empty" in err and "\n" not in err
    assert main(["evaluate", str(root / "missing.pt"), "--data", str(data)]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_ipi_trajectory_files_are_read(tmp_path):
    frames = toy_water_frames(n_segments=1, seed=4)
    path = tmp_path / "start.xyz"
    write_ipi_xyz(frames[0], path)
    back = read_trajectory(path)
    assert len(back) == 1
    np.testing.assert_allclose(back[0].positions, frames[0].positions, atol=1e-6)
    np.testing.assert_allclose(back[0].cell.array, frames[0].cell.array, atol=1e-6)
