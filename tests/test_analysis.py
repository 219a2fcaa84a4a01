import pytest
import numpy as np
from ase import Atoms

from ipi_mts.analysis import block_error, rdf_difference, rdf_frames, read_properties, self_diffusion


def ideal_gas(n=400, edge=12.0, seed=0):
    rng = np.random.default_rng(seed)
    return Atoms("O" * n, positions=rng.uniform(0, edge, (n, 3)), cell=[edge] * 3, pbc=True)


def test_rdf_of_an_ideal_gas_is_one():
    g, r = rdf_frames([ideal_gas(seed=s) for s in range(4)], 8, 8, r_max=5.0, n_bins=10)
    assert g.shape == (4, 10) and np.isclose(r[0], 0.25)
    assert abs(g[:, 2:].mean() - 1.0) < 0.05  # the inner bins hold few pairs


def test_rdf_of_a_lattice_peaks_at_its_spacing():
    from ase.build import bulk

    atoms = bulk("Cu", "sc", a=2.5).repeat(4)
    g, r = rdf_frames([atoms], 29, 29, r_max=3.0, n_bins=30)
    assert abs(r[np.argmax(g[0])] - 2.5) < 0.1


def test_block_error_and_rdf_difference():
    rng = np.random.default_rng(1)
    samples = rng.normal(5.0, 1.0, size=(1000, 3))
    mean, err = block_error(samples, 10)
    assert np.allclose(mean, 5.0, atol=0.15) and np.all((err > 0.005) & (err < 0.1))
    same = rdf_difference(samples, samples)
    assert same["chi"] == 0.0
    shifted = rdf_difference(samples + 1.0, samples)
    assert shifted["chi"] > 10


def test_self_diffusion_of_a_random_walk():
    rng = np.random.default_rng(2)
    dt_fs, d_true = 10.0, 0.5  # Å²/ps
    steps = rng.normal(0.0, np.sqrt(2 * d_true * dt_fs * 1e-3), size=(2000, 200, 3))
    d, lags, msd = self_diffusion(np.cumsum(steps, axis=0), dt_fs)
    assert abs(d - d_true * 10.0) < 0.3  # 1e-5 cm²/s


def test_read_properties(tmp_path):
    path = tmp_path / "sim.out"
    path.write_text(
        "# column   1     --> step : The current simulation time step.\n"
        "# column   2     --> temperature{kelvin}(O) : The current temperature.\n"
        "0 300.0\n10 310.0\n"
    )
    props = read_properties(path)
    assert props["temperature{kelvin}(O)"].tolist() == [300.0, 310.0]


@pytest.mark.parametrize("temperature", [300.0, 330.0])
def test_configurational_temperature_of_boltzmann_samples(temperature):
    """Positions drawn from exp(-E/kT) of an anisotropic harmonic trap, two species: T_conf
    is T for each (the trap's Laplacian is exact, so only the sampling scatters: about 0.8 %
    with 2000 frames of 10 atoms per species)."""
    from ase import Atoms

    from ipi_mts.analysis import configurational_sums, configurational_temperature
    from ipi_mts.potentials.harmonic import Harmonic
    from ipi_mts.units import KB_EV_PER_K

    k = np.array([1.3, 0.4, 2.1])
    rng = np.random.default_rng(5)
    frames = [Atoms("OH" * 10, positions=rng.normal(0, np.sqrt(KB_EV_PER_K * temperature / k), (20, 3)),
                    cell=[30.0] * 3, pbc=True) for _ in range(2000)]
    sums = configurational_sums(Harmonic(*k), frames, probes=1)
    assert set(sums) == {"O", "H"} and sums["O"].shape == (2000, 2)
    for species in ("O", "H"):
        assert configurational_temperature(sums[species]) == pytest.approx(temperature, rel=0.03)
