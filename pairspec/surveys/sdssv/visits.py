"""Per-visit rules of the SDSS-V adapter: pixel cleaning (the DR17 policy, on an ivar that astra gives),
the rest-frame shift of `in_stack = False` visits, and duplicate visits (one exposure reduced twice)."""

from __future__ import annotations

import math

import numpy as np

from pairspec.surveys.apogee.bits import clean_row

# an "infinite" variance that stays finite through linear interpolation (inf * 0 would give NaN)
_HUGE_VAR = 1e30


def clean_spectrum(flux, ivar, pixmask, bad_mask: int, usable: np.ndarray):
    """(flux float32, ivar float32) of one mwm row under APOGEE DR17's rules (apogee.bits.clean_row): ivar = 0
    where ivar <= 0 or non-finite, flux non-finite, a bad bit set, outside the usable blocks, or the implied
    error >= 1e5 or > 50x the row's median (astra turns apStar errors of 1e10 into ivar 1e-20, which is not
    a usable weight). The rules run on err = ivar^-1/2, so ivar comes back unchanged on good pixels."""
    ivar = np.asarray(ivar, dtype=np.float64)
    err = np.zeros(ivar.shape)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(ivar) & (ivar > 0)
    err[good] = 1.0 / np.sqrt(ivar[good])
    return clean_row(flux, err, pixmask, bad_mask, usable)


def to_rest_frame(flux, ivar, pixmask, v_kms: float, cdelt1: float):
    """Undo a Doppler shift of v_kms on a log-linear grid: (flux, ivar, pixmask) resampled by -v.

    Flux: windowed sinc (simtools.lanczos_shift) after bad pixels are filled with a smooth continuum, so no
    junk value leaks into its neighbours; variance: linear interpolation (a pixel fed by a bad one is bad);
    bits: OR of the two feeding pixels; pixels fed from beyond the grid's ends are bad."""
    from pairspec.surveys import simtools  # scipy: only when a visit is shifted

    d = simtools.velocity_to_pixels(float(v_kms), cdelt1)
    good = ivar > 0
    filled = np.where(good, flux, simtools.smooth_continuum(flux, good)) if good.any() else np.zeros_like(flux)
    var = np.full(flux.shape, _HUGE_VAR)
    var[good] = 1.0 / ivar[good]
    out_flux = simtools.lanczos_shift(filled.astype(np.float64), -d)
    out_var = simtools.shift_linear(var, -d)
    out_ivar = np.where(out_var < 0.5 * _HUGE_VAR, 1.0 / out_var, 0.0)
    n_edge = math.ceil(abs(d)) + 1
    if d > 0:
        out_ivar[-n_edge:] = 0.0
    elif d < 0:
        out_ivar[:n_edge] = 0.0
    return out_flux.astype(np.float32), out_ivar.astype(np.float32), simtools.shift_mask(np.asarray(pixmask), -d)


def duplicate_visits(keys: list, releases: list, snr: np.ndarray) -> dict[int, int]:
    """Rows that repeat an exposure already present (same key: telescope, MJD, fibre or field), as
    {duplicate row: kept row}. The kept row is the SDSS-V reduction (release 'sdss5') over 'dr17', then the
    higher S/N. Rows whose key has an unknown part (None) are never duplicates."""
    def rank(i):
        s = float(snr[i]) if np.isfinite(snr[i]) else -math.inf
        return (str(releases[i]).strip().lower() != "sdss5", -s, i)

    kept: dict[tuple, int] = {}
    dup = {}
    for i in sorted(range(len(keys)), key=rank):
        if any(k is None for k in keys[i]):
            continue
        if keys[i] in kept:
            dup[i] = kept[keys[i]]
        else:
            kept[keys[i]] = i
    return dup
