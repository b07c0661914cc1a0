"""benchmarks/decoder_response.py: the response of a fit to a decoder's spectra, on linear stand-ins whose
answer is known (a decoder A_D and a least-squares fit of another model A_E give R = pinv(A_E) A_D)."""


import benchscript
import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench():
    return benchscript.load("decoder_response")


def _linear(seed, cross=0.0):
    rng = np.random.default_rng(seed)
    a_e = rng.normal(size=(40, 3))
    a_d = a_e.copy()
    a_d[:, 1] += cross * a_e[:, 0]  # the decoder's label-1 response looks partly like the model's label 0
    fit = lambda spec: spec @ np.linalg.pinv(a_e).T
    spectrum = lambda lab: lab @ a_d.T
    return a_e, a_d, fit, spectrum


def test_a_decoder_with_the_emulators_response_gives_the_identity_and_a_cross_term_shows_where_it_leaks(bench):
    theta = np.random.default_rng(1).normal(size=(6, 3))
    steps = np.array([0.5, 0.1, 0.2])
    _, _, fit, spectrum = _linear(0)
    base, R = bench.response(fit, spectrum, theta, steps)
    np.testing.assert_allclose(base, theta, atol=1e-9)
    np.testing.assert_allclose(R, np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    _, _, fit, spectrum = _linear(0, cross=0.7)
    base, R = bench.response(fit, spectrum, theta, steps)
    want = np.eye(3)
    want[0, 1] = 0.7  # an error in label 1 moves the fitted label 0 by 0.7 of itself
    np.testing.assert_allclose(R, np.broadcast_to(want, R.shape), atol=1e-9)


def test_the_transfer_predicts_the_fit_of_the_decoders_spectrum_of_other_labels(bench):
    """For linear maps the two-part prediction (floor + R delta) is exact: it is what the benchmark compares
    with the measured fit of the product."""
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(4, 3))
    _, _, fit, spectrum = _linear(3, cross=-0.4)
    base, R = bench.response(fit, spectrum, theta, np.array([0.3, 0.3, 0.3]))
    star = np.array([0, 0, 1, 3, 3, 2])
    labels = theta[star] + rng.normal(scale=0.2, size=(star.size, 3))
    np.testing.assert_allclose(bench.transfer(base, R, theta, labels, star), fit(spectrum(labels)), atol=1e-9)


def test_truth_spectra_are_read_by_star_id_and_a_missing_star_is_named(bench, tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    spec = np.arange(12, dtype=np.float32).reshape(3, 4)
    spec[1, 2] = np.nan  # outside the model
    tab = fits.table_to_hdu(Table({"star_id": ["a", "b", "c"], "teff": [1.0, 2.0, 3.0]}))
    fits.HDUList([fits.PrimaryHDU(), tab, fits.ImageHDU(spec, name="SPECTRA")]).writeto(tmp_path / "t.fits")
    got = bench.truth_spectra(str(tmp_path / "t.fits"), ["c", "b"])
    np.testing.assert_array_equal(got, [spec[2], [4.0, 5.0, 1.0, 7.0]])
    with pytest.raises(SystemExit, match="t.fits: no truth spectrum for 1 star"):
        bench.truth_spectra(str(tmp_path / "t.fits"), ["a", "zz"])
    fits.HDUList([fits.PrimaryHDU(), tab]).writeto(tmp_path / "plain.fits")
    assert bench.truth_spectra(str(tmp_path / "plain.fits"), ["a"]) is None


def test_a_saved_decoder_is_cut_to_the_model_pixels_takes_the_checkpoints_standardisation_and_a_foreign_one_is_refused(bench, tmp_path):
    import torch
    from torch import nn

    torch.manual_seed(0)
    names, mu, sd = ["teff", "logg"], np.array([4800.0, 2.5]), np.array([500.0, 1.0])
    full = nn.Sequential(nn.Linear(2, 8), nn.GELU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 10))
    path = tmp_path / "dec.pt"
    torch.save({"state_dict": full.state_dict(), "width": 8, "n_out": 10, "label_names": names,
                "label_mean": mu, "label_std": sd}, path)
    pixels = np.array([2, 3, 7])
    dec = bench.load_decoder(str(path), names, mu, sd, npix=10, pixels=pixels)
    z = torch.randn(5, 2)
    with torch.no_grad():
        np.testing.assert_allclose(dec(z).numpy(), full(z).numpy()[:, pixels], rtol=0, atol=1e-6)
    with pytest.raises(SystemExit, match="dec.pt: decoder of labels"):
        bench.load_decoder(str(path), ["teff", "fe_h"], mu, sd, npix=10, pixels=pixels)
    # a checkpoint that standardises its labels otherwise: the same physical labels give the same spectrum
    mu_c, sd_c = mu + np.array([120.0, -0.3]), sd * np.array([1.3, 0.8])
    other = bench.load_decoder(str(path), names, mu_c, sd_c, npix=10, pixels=pixels)
    x = np.array([[4500.0, 2.0], [5100.0, 3.1]])
    with torch.no_grad():
        got = other(torch.from_numpy(((x - mu_c) / sd_c).astype(np.float32))).numpy()
        want = full(torch.from_numpy(((x - mu) / sd).astype(np.float32))).numpy()[:, pixels]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    with pytest.raises(SystemExit, match="dec.pt: the decoder gives 10 pixels"):
        bench.load_decoder(str(path), names, mu, sd, npix=12, pixels=pixels)
