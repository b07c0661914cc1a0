"""Continuum normalisation against a known continuum, and its edge cases."""

import numpy as np
import pytest

from pairspec.grid import LogLinearGrid
from pairspec.preprocess import normalize
from pairspec.surveys.apogee.layout import (
    APOGEE_GRID,
    apogee_continuum_pixels,
    aspcap7214_index,
)

GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=3000, blocks=((0, 1500), (1500, 3000)))


def fake_star(n, npix, rng, cover=0.2):
    """(lines, continuum): Gaussian absorption lines (depth 0.02-0.4, ~20 % of pixels) x smooth continuum."""
    x = np.arange(npix, dtype=float)
    n_lines = int(cover * npix / 8)
    centre = rng.uniform(0, npix, (n, n_lines, 1))
    depth = rng.uniform(0.02, 0.4, (n, n_lines, 1))
    width = rng.uniform(1.5, 3.0, (n, n_lines, 1))
    tau = (depth * np.exp(-0.5 * ((x[None, None, :] - centre) / width) ** 2)).sum(axis=1)
    lines = np.clip(1.0 - tau, 0.3, 1.0)
    t = np.linspace(-1, 1, npix)[None, :]
    a, b = rng.uniform(-0.2, 0.2, (n, 1)), rng.uniform(-0.1, 0.1, (n, 1))
    phase = rng.uniform(0, 6, (n, 1))
    level = 1000 * rng.uniform(0.5, 2.0, (n, 1))
    cont = level * (1 + a * t + b * (2 * t**2 - 1) + 0.05 * np.sin(2.5 * t + phase))
    return lines, cont


# Bounds on median |C_fit/C_true - 1| (measured ~0.07 %, 0.3 %, 0.9 %, 1.7 %), stated in continuum.py.
@pytest.mark.parametrize("snr,bound", [(100, 0.003), (30, 0.006), (10, 0.013), (5, 0.025)])
def test_recovers_known_continuum(snr, bound):
    rng = np.random.default_rng(snr)
    lines, cont = fake_star(40, GRID.npix, rng)
    assert 0.15 < (lines < 0.98).mean() < 0.3  # the line coverage the bound is stated for
    sigma = cont / snr
    flux = lines * cont + rng.normal(size=cont.shape) * sigma
    nf, ni, c = normalize(flux, 1 / sigma**2, GRID)
    err = np.abs(c / cont - 1)
    assert np.median(err) < bound
    assert np.percentile(err, 95) < 4 * bound
    # normalised ivar follows the continuum: sigma/C ~ 1/snr
    assert np.median(1 / np.sqrt(ni)) == pytest.approx(1 / snr, rel=0.05)
    assert nf.dtype == np.float32 and np.isfinite(nf).all() and np.isfinite(ni).all()


def test_clipping_beats_plain_fit_and_survives_cosmics():
    rng = np.random.default_rng(3)
    lines, cont = fake_star(20, GRID.npix, rng)
    sigma = cont / 30
    flux = lines * cont + rng.normal(size=cont.shape) * sigma
    flux[:, ::97] += 50 * sigma[:, ::97]  # unmasked cosmic rays
    _, _, clipped = normalize(flux, 1 / sigma**2, GRID)
    _, _, plain = normalize(flux, 1 / sigma**2, GRID, n_iter=0)
    err_clip = np.median(np.abs(clipped / cont - 1))
    err_plain = np.median(np.abs(plain / cont - 1))
    assert err_clip < 0.006
    assert err_plain > 2 * err_clip


def test_bad_pixels_and_degenerate_blocks():
    rng = np.random.default_rng(4)
    lines, cont = fake_star(3, GRID.npix, rng)
    flux = lines * cont
    ivar = np.full_like(flux, 1e4 / 1000**2)
    flux[0, 200:400] = 0.0  # a masked gap must not pull the fit
    ivar[0, 200:400] = 0.0
    ivar[1, 1500:] = 0.0  # block 2 of spectrum 1 all bad
    ivar[2, 1500:] = 0.0
    ivar[2, 1600:1605] = 1e-2  # only 5 good pixels: constant continuum from their median
    flux[2, 1600:1605] = 777.0
    nf, ni, c = normalize(flux, ivar, GRID)
    assert np.median(np.abs(c[0, :1500] / cont[0, :1500] - 1)) < 0.01
    assert (ni[0, 200:400] == 0).all() and (ni[0, :200] > 0).all()
    assert (ni[1, 1500:] == 0).all() and (c[1, 1500:] == 1.0).all()
    assert c[2, 1500:] == pytest.approx(777.0)
    assert (ni[2, 1600:1605] > 0).all() and (ni[2, 1500:1600] == 0).all()
    assert np.isfinite(nf).all() and np.isfinite(ni).all() and (c > 0).all()


def test_never_nan_on_garbage():
    flux = np.array([[np.nan, -5.0, 0.0, np.inf] * 25, [0.0] * 100], dtype=np.float32)
    ivar = np.array([[1.0, 1.0, np.nan, 1.0] * 25, [1.0] * 100], dtype=np.float32)
    grid = LogLinearGrid(4.179, 6e-6, 100)
    nf, ni, c = normalize(flux, ivar, grid)
    assert np.isfinite(nf).all() and np.isfinite(ni).all() and (c > 0).all()
    assert ni[0, 0] == 0 and ni[0, 2] == 0 and ni[0, 3] == 0


def test_outside_blocks_is_filled_not_measured():
    grid = LogLinearGrid(4.179, 6e-6, 300, blocks=((10, 290),))
    flux = np.full((2, 300), 5.0)
    nf, ni, _c = normalize(flux, np.ones_like(flux), grid)
    assert (ni[:, :10] == 0).all() and (nf[:, :10] == 1).all()
    assert nf[:, 10:290] == pytest.approx(1.0, abs=1e-3)


def test_apogee_continuum_pixels_and_restricted_fit():
    cp = apogee_continuum_pixels()
    assert cp.shape == (8575,) and cp.sum() == 529
    assert set(np.flatnonzero(cp)) <= set(aspcap7214_index())
    assert (cp & APOGEE_GRID.usable()).sum() == 529
    rng = np.random.default_rng(5)
    lines, cont = fake_star(4, 8575, rng)
    lines[:, cp] = 1.0  # continuum pixels are line-free by construction
    sigma = cont / 20
    flux = lines * cont + rng.normal(size=cont.shape) * sigma
    _, _, c = normalize(flux, 1 / sigma**2, APOGEE_GRID, cont_pixels=cp)
    use = APOGEE_GRID.usable()
    assert np.median(np.abs(c[:, use] / cont[:, use] - 1)) < 0.01


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="cont_pixels"):
        normalize(np.ones((1, 100)), np.ones((1, 100)), LogLinearGrid(4.179, 6e-6, 100), cont_pixels=np.ones(5, bool))
    with pytest.raises(ValueError, match=r"\(N, 100\)"):
        normalize(np.ones((1, 90)), np.ones((1, 90)), LogLinearGrid(4.179, 6e-6, 100))


def test_noise_free_model_with_placeholder_ivar():
    # ivar = 1 says "sigma 1" for a flux of ~1000 that has no noise at all: lines must still be clipped.
    rng = np.random.default_rng(6)
    lines, cont = fake_star(5, GRID.npix, rng)
    _, _, c = normalize(lines * cont, np.ones_like(cont), GRID)
    assert np.median(np.abs(c / cont - 1)) < 0.01
