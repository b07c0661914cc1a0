"""The ingest's faster median / clean_row / recompute_snr give bit-identical results to the plain
numpy versions they replaced (kept here as the reference)."""

import warnings

import numpy as np
import pytest

from pairspec.surveys.apogee.bits import (
    ERR_CEILING,
    ERR_OUTLIER_FACTOR,
    PIXMASK_BAD_BITS,
    bits_value,
    clean_row,
)
from pairspec.surveys.base import median_1d, recompute_snr


def _reference_clean_row(flux, err, pixmask, bad_mask, usable):
    flux = np.asarray(flux, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    pixmask = np.asarray(pixmask, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        good = (np.isfinite(flux) & np.isfinite(err) & (err > 0) & (err < ERR_CEILING) & usable
                & ((pixmask & bad_mask) == 0))
    if good.any():
        good &= err <= ERR_OUTLIER_FACTOR * np.median(err[good])
    ivar = np.zeros(flux.shape, dtype=np.float64)
    ivar[good] = 1.0 / err[good] ** 2
    out_flux = np.where(np.isfinite(flux), flux, 0.0).astype(np.float32)
    out_ivar = ivar.astype(np.float32)
    overflow = ~np.isfinite(out_flux) | ~np.isfinite(out_ivar)
    out_flux[overflow] = 0.0
    out_ivar[overflow] = 0.0
    return out_flux, out_ivar


def _reference_snr(flux, ivar):
    flux, ivar = np.atleast_2d(flux), np.atleast_2d(ivar)
    out = np.full(flux.shape[0], np.nan, dtype=np.float32)
    for i in range(flux.shape[0]):
        good = ivar[i] > 0
        if good.any():
            out[i] = np.median(flux[i, good] * np.sqrt(ivar[i, good]))
    return out


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_median_1d_is_np_median():
    rng = np.random.default_rng(0)
    for trial in range(3000):
        n = int(rng.integers(1, 40)) if trial % 2 else int(rng.integers(1, 9000))
        kind = trial % 6
        x = [rng.normal(size=n), rng.integers(-3, 3, n).astype(float), rng.normal(size=n) * 1e300,
             np.where(rng.random(n) < 0.5, -0.0, 0.0), rng.lognormal(size=n) * 1e-310,
             np.where(rng.random(n) < 0.1, np.inf, rng.normal(size=n))][kind]
        for dtype in (np.float32, np.float64):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                v = x.astype(dtype)
                expect = np.median(v)
                got, got_inplace = median_1d(v.copy()), median_1d(v.copy(), overwrite=True)
            assert type(got) is type(expect) and type(got_inplace) is type(expect)
            assert _same(got, expect) and _same(got_inplace, expect), (trial, dtype)
    for odd in (np.array([1.0, np.nan, 2.0]), np.array([3, 1, 2]), np.arange(6).reshape(2, 3)):
        assert _same(median_1d(odd), np.median(odd))  # NaN, integers, 2-D: np.median itself


@pytest.mark.parametrize("err_dtype", [np.float64, np.float32])
def test_clean_row_is_the_reference(err_dtype):
    rng = np.random.default_rng(1)
    npix = 4000
    usable = np.ones(npix, bool)
    usable[:100] = usable[1900:2100] = False
    bad_mask = bits_value(PIXMASK_BAD_BITS)
    for trial in range(200):
        flux = rng.normal(1e3, 50, npix)
        err = np.abs(rng.normal(20, 3, npix)).astype(err_dtype)
        pixmask = np.where(rng.random(npix) < 0.05, 1 << int(rng.integers(0, 16)), 0).astype(np.int64)
        pick = rng.random(npix)
        flux[pick < 0.01] = np.nan
        flux[(pick > 0.01) & (pick < 0.015)] = np.inf
        flux[(pick > 0.015) & (pick < 0.02)] = 1e39 if trial % 2 else -np.inf  # float32 overflow
        err[(pick > 0.02) & (pick < 0.03)] = 0
        err[(pick > 0.03) & (pick < 0.035)] = -1
        err[(pick > 0.035) & (pick < 0.04)] = np.nan
        err[(pick > 0.04) & (pick < 0.045)] = 1e14
        err[(pick > 0.045) & (pick < 0.05)] = 5e3  # > 50x the median: junk
        err[(pick > 0.05) & (pick < 0.052)] = 1e-30 if err_dtype == np.float64 else 1e-25  # ivar overflows
        err[(pick > 0.052) & (pick < 0.054)] = np.inf
        if trial == 7:
            err[:] = np.nan  # nothing good
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = clean_row(flux, err, pixmask, bad_mask, usable)
            expect = _reference_clean_row(flux, err, pixmask, bad_mask, usable)
        assert _same(got[0], expect[0]) and _same(got[1], expect[1]), trial


def test_recompute_snr_is_the_reference():
    rng = np.random.default_rng(2)
    for flux_dtype, ivar_dtype in ((np.float32, np.float32), (np.float64, np.float32), (np.float32, np.float64)):
        flux = rng.normal(1, 0.1, (5, 3001)).astype(flux_dtype)
        ivar = (rng.random((5, 3001)) * 900).astype(ivar_dtype)
        ivar[rng.random((5, 3001)) < 0.1] = 0
        ivar[3] = 0  # an all-bad row: NaN
        ivar[4, 1:] = 0  # one good pixel
        assert _same(recompute_snr(flux, ivar), _reference_snr(flux, ivar))
        assert _same(recompute_snr(flux[0], ivar[0]), _reference_snr(flux[0], ivar[0]))
