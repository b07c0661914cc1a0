"""APOGEE DR17 bitmasks (formats.md 1.11) and the per-row pixel cleaning that uses them."""

from __future__ import annotations

import numpy as np

from pairspec.surveys.base import median_1d

# APOGEE_PIXMASK bits the DRP calls "bad" (level 1): BADPIX..NOSKY (0-7) and NOT_ENOUGH_PSF (14).
PIXMASK_BAD_BITS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 14})
# strict mode also drops persistence (9-11) and significant sky-line (12) pixels.
PIXMASK_STRICT_BITS = PIXMASK_BAD_BITS | {9, 10, 11, 12}

EXTRATARG_DUPLICATE = 4  # non-primary row of a star that has another allStar row
ASPCAPFLAG_STAR_BAD = 23
# ASPCAPFLAG bit names (DR17 bitmask documentation; bits above 33 are not named here)
ASPCAPFLAG_BITS = dict(enumerate(
    ["TEFF_WARN", "LOGG_WARN", "VMICRO_WARN", "M_H_WARN", "ALPHA_M_WARN", "C_M_WARN", "N_M_WARN", "STAR_WARN", "CHI2_WARN", "COLORTE_WARN", "ROTATION_WARN", "SN_WARN", "SPEC_HOLE_WARN", "ATMOS_HOLE_WARN", "VSINI_WARN"]))
ASPCAPFLAG_BITS.update(enumerate(
    ["TEFF_BAD", "LOGG_BAD", "VMICRO_BAD", "M_H_BAD", "ALPHA_M_BAD", "C_M_BAD", "N_M_BAD", "STAR_BAD", "CHI2_BAD", "COLORTE_BAD", "ROTATION_BAD", "SN_BAD", "SPEC_HOLE_BAD", "ATMOS_HOLE_BAD", "VSINI_BAD", "NO_ASPCAP_RESULT", "MISSING_APSTAR", "NO_GRID"], 16))

# Errors at or above this are the pipeline's "infinite" errors (chip edges reach 1e14).
ERR_CEILING = 1e5
# ... and errors this many times the row's typical error are junk even when no bit says so.
ERR_OUTLIER_FACTOR = 50.0


def bits_value(bits) -> int:
    """Integer mask with the given bit numbers set."""
    value = 0
    for b in bits:
        value |= 1 << int(b)
    return value


def has_bit(flags: int, bit: int) -> bool:
    return bool(int(flags) >> bit & 1)


def clean_row(flux, err, pixmask, bad_mask: int, usable: np.ndarray):
    """Return (flux float32, ivar float32) for one apStar row.

    ivar = 1/err^2 on good pixels and 0 where err <= 0, err or flux non-finite, err >= 1e5,
    err > 50x the row's median good err, outside the usable chip blocks, or any bad bit set.
    Flux stays as published (finite) so masked pixels keep the pipeline's smooth fill values.
    """
    flux = np.asarray(flux, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    pixmask = np.asarray(pixmask, dtype=np.int64)
    # Few passes over the row (this runs for every visit of every star). NaN fails both comparisons
    # and +inf fails the ceiling, so they also stand for isfinite(err).
    flux_finite = np.isfinite(flux)
    with np.errstate(invalid="ignore"):
        good = err > 0
        good &= err < ERR_CEILING
    good &= flux_finite
    good &= usable
    good &= (pixmask & bad_mask) == 0
    if good.any():
        good &= err <= ERR_OUTLIER_FACTOR * median_1d(err[good], overwrite=True)
    out_ivar = np.zeros(flux.shape, dtype=np.float32)
    good_err = err[good]
    out_ivar[good] = 1.0 / (good_err * good_err)  # computed in float64, rounded once to float32
    out_flux = flux.astype(np.float32)
    if not flux_finite.all():
        out_flux[~flux_finite] = 0.0
    # float32 overflow (|flux| > 3e38, err < 5e-20) would bring inf back: zero it and mask the pixel.
    ok = np.isfinite(out_flux)
    ok &= np.isfinite(out_ivar)
    if not ok.all():
        out_flux[~ok] = 0.0
        out_ivar[~ok] = 0.0
    return out_flux, out_ivar
