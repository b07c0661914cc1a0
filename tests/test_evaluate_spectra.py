"""pairspec.evaluate_spectra without truth (real data): the noise-subtracted RMS against the leave-one-out
coadd must estimate the distance to the star's spectrum, even where a survey inflates flagged pixels' errors."""

from __future__ import annotations

import numpy as np
import pytest

from pairspec.evaluate_spectra import SpectrumScores, honest_pixels
from pairspec.grid import LogLinearGrid

GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=2000, blocks=((0, 2000),))


def _visits(rng, n=40, sigma_in=0.05, sigma_loo=0.02, sigma_den=0.01, inflated=0.04):
    """n visits of a star-like spectrum: input, coadd and denoised with known scatter around the truth;
    a fraction `inflated` of the pixels has a stated variance 300x the real one (APOGEE's flagged pixels)."""
    npix = GRID.npix
    truth = 1.0 - 0.3 * np.exp(-0.5 * ((np.arange(npix) % 100 - 50) / 3.0) ** 2)
    truth = np.broadcast_to(truth, (n, npix))
    inp = truth + rng.normal(0, sigma_in, (n, npix))
    loo = truth + rng.normal(0, sigma_loo, (n, npix))
    den = truth + rng.normal(0, sigma_den, (n, npix))
    iv_in, iv_loo = np.full((n, npix), sigma_in ** -2), np.full((n, npix), sigma_loo ** -2)
    flagged = rng.random((n, npix)) < inflated
    iv_in[flagged] /= 300.0
    iv_loo[flagged] /= 300.0
    return inp, iv_in, loo, iv_loo, den


def test_no_truth_rms_estimates_the_distance_to_the_star_despite_inflated_errors():
    rng = np.random.default_rng(3)
    inp, iv_in, loo, iv_loo, den = _visits(rng)
    scores = SpectrumScores(GRID, None)
    scores.add(inp, iv_in, loo, iv_loo, den, star=np.zeros(len(inp), int), snr=np.full(len(inp), 30.0))
    out = scores.result()
    rms = {m: out["rms"][m]["20-40"]["median"] for m in ("input", "denoised", "loo")}
    # the flagged 4 % hold ~93 % of the stated variance: subtracting it drove every RMS to 0 before
    assert rms["input"] == pytest.approx(0.05, rel=0.05)
    assert rms["denoised"] == pytest.approx(0.01, rel=0.15)
    assert rms["loo"] == pytest.approx(0.02, rel=0.05)
    assert out["denoised_over_input"]["20-40"]["median"] == pytest.approx(0.2, rel=0.15)


def test_honest_pixels_drops_only_the_inflated_ones():
    rng = np.random.default_rng(4)
    _, iv_in, _, iv_loo, _ = _visits(rng, n=5)
    good = np.ones_like(iv_in, dtype=bool)
    good[0, :10] = False
    keep = honest_pixels(good, iv_in, iv_loo)
    inflated = (iv_in < iv_in.max()) | (iv_loo < iv_loo.max())
    assert not keep[0, :10].any()  # a bad pixel stays bad
    assert np.array_equal(keep[:, 10:], ~inflated[:, 10:])


def test_a_visit_without_a_usable_pixel_gives_nan_quietly(recwarn):
    rng = np.random.default_rng(5)
    inp, iv_in, loo, iv_loo, den = _visits(rng, n=3)
    iv_loo[1] = 0.0  # a star's only visit: no leave-one-out coadd
    scores = SpectrumScores(GRID, None)
    scores.add(inp, iv_in, loo, iv_loo, den, star=np.zeros(3, int), snr=np.array([30.0, 30.0, 30.0]))
    out = scores.result()
    assert out["rms"]["input"]["20-40"]["n"] == 2
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_truth_spectra_are_taken_on_the_stores_grid(tmp_path):
    """SDSS-V's truth holds SPECTRA (APOGEE grid) and SPECTRA_BOSS: a BOSS store must get the BOSS
    spectra (it was scored against the APOGEE ones, indexed by BOSS pixel numbers)."""
    from astropy.io import fits

    from pairspec.evaluate_spectra import read_truth_spectra

    ids = np.array(["a", "b", "c"])
    table = fits.BinTableHDU.from_columns([fits.Column(name="star_id", format="1A", array=ids)])
    apogee = fits.ImageHDU(np.zeros((3, 8), np.float32), name="SPECTRA")
    boss = fits.ImageHDU(np.arange(15, dtype=np.float32).reshape(3, 5), name="SPECTRA_BOSS")
    path = tmp_path / "truth.fits"
    fits.HDUList([fits.PrimaryHDU(), table, apogee, boss]).writeto(path)
    got = read_truth_spectra(path, ["c", "a"], [0, 1], npix=5)
    np.testing.assert_array_equal(got[0], [10, 11, 12, 13, 14])
    assert got[1].tolist() == [0, 1, 2, 3, 4]
    assert read_truth_spectra(path, ["a"], [0], npix=8)[0].shape == (8,)
    with pytest.warns(UserWarning, match=r"SPECTRA: 8 px, SPECTRA_BOSS: 5 px\) are not on the store's grid \(7 px\)"):
        assert read_truth_spectra(path, ["a"], [0], npix=7) is None
