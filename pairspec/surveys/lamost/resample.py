"""Spectra of one LAMOST file onto the store's fixed log-linear grid, and the star-level combination.

Resampling is linear interpolation in log10(lambda) (the physics in the open, as spender does it):
out = (1 - t) f_j + t f_j+1, with the variance propagated as (1 - t)^2 / ivar_j + t^2 / ivar_j+1 (pixel
noise taken independent; the covariance interpolation creates between neighbouring output pixels is not
kept). An output pixel is bad (ivar 0) when a neighbour that contributes (weight > 0) is bad, and its
pixmask is the OR of both neighbours' bits, so masks survive as bits. Outside the input's coverage:
flux 0, ivar 0, NOCOVER. A Doppler shift to the rest frame is a shift of log10(lambda) by
log10(1 + v/c) (non-relativistic, as LAMOST's own RVs are).
"""

from __future__ import annotations

import math

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.surveys.lamost.layout import C_KMS, NOCOVER


def rest_shift(rv_kms: float) -> float:
    """log10(lambda_obs) - log10(lambda_rest) of a star moving at rv_kms (0 for NaN: no shift)."""
    return 0.0 if not math.isfinite(rv_kms) else math.log10(1.0 + rv_kms / C_KMS)


def grid_loglam(grid: LogLinearGrid) -> np.ndarray:
    return grid.crval1 + grid.cdelt1 * np.arange(grid.npix, dtype=np.float64)


def to_grid(loglam: np.ndarray, flux: np.ndarray, ivar: np.ndarray, bits: np.ndarray, bad: np.ndarray,
            grid: LogLinearGrid, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux f4, ivar f4, pixmask i8) on `grid` of one spectrum given on increasing `loglam` (observed
    frame), shifted to the grid's frame by `shift` (rest_shift(rv)). `bad`: input pixels not to use."""
    src = np.asarray(loglam, dtype=np.float64) - shift
    x = grid_loglam(grid)
    n = src.size
    j = np.searchsorted(src, x, side="right") - 1
    inside = (j >= 0) & ((j < n - 1) | (x == src[-1]))
    j = np.clip(j, 0, n - 2)
    t = np.where(inside, (x - src[j]) / (src[j + 1] - src[j]), 0.0)
    t = np.clip(t, 0.0, 1.0)
    f = np.where(np.isfinite(flux), flux, 0.0)
    good = ~np.asarray(bad, dtype=bool)
    iv = np.where(good, ivar, 1.0)  # placeholder where bad: those pixels never reach the output ivar
    w0, w1 = 1.0 - t, t
    use0, use1 = w0 > 0, w1 > 0
    ok = inside & (~use0 | good[j]) & (~use1 | good[j + 1])
    var = np.where(use0, w0 * w0 / iv[j], 0.0) + np.where(use1, w1 * w1 / iv[j + 1], 0.0)
    out_flux = np.where(inside, w0 * f[j] + w1 * f[j + 1], 0.0)
    out_ivar = np.where(ok & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    b = np.asarray(bits, dtype=np.int64)
    out_bits = np.where(use0, b[j], 0) | np.where(use1, b[j + 1], 0)
    out_bits = np.where(inside, out_bits, NOCOVER)
    return out_flux.astype(np.float32), out_ivar.astype(np.float32), out_bits.astype(np.int64)


def block_snr(flux: np.ndarray, ivar: np.ndarray) -> float:
    good = ivar > 0
    return float(np.median(flux[good] * np.sqrt(ivar[good]))) if good.any() else math.nan


def combine(flux: np.ndarray, ivar: np.ndarray, bits: np.ndarray, blocks, min_snr: float = 2.0):
    """Star-level coadd of spectra already on one grid: (flux f4, ivar f4, pixmask i8).

    LAMOST flux is only relatively calibrated (throughput changes from night to night), so in each block
    every spectrum is first scaled to the median level of the one with the most ivar, then the
    ivar-weighted mean is taken. A spectrum's block enters only with median S/N >= min_snr (below that
    its level, and so its scale, is noise). The pixmask is the AND of the bits of the spectra that
    contribute to a pixel (as APOGEE's coadd row), the AND of all where none does."""
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    bits = np.asarray(bits, dtype=np.int64)
    n, npix = flux.shape
    out_f, out_w = np.zeros(npix), np.zeros(npix)
    out_bits = np.bitwise_and.reduce(bits, axis=0) if n else np.zeros(npix, dtype=np.int64)
    for a, b in (blocks or ((0, npix),)):
        fb, wb = flux[:, a:b], ivar[:, a:b]
        levels = np.full(n, np.nan)
        for i in range(n):
            good = wb[i] > 0
            if good.sum() >= 10 and block_snr(fb[i], wb[i]) >= min_snr:
                levels[i] = np.median(fb[i][good])
        usable = np.isfinite(levels) & (levels > 0)
        if not usable.any():
            continue
        ref = levels[usable][np.argmax([wb[i].sum() for i in np.flatnonzero(usable)])]
        scale = np.where(usable, levels / ref, 1.0)
        w = np.where(usable[:, None], wb * scale[:, None] ** 2, 0.0)
        sf = np.where(usable[:, None], fb / scale[:, None], 0.0)
        wsum = w.sum(axis=0)
        out_w[a:b] = wsum
        out_f[a:b] = np.where(wsum > 0, (w * sf).sum(axis=0) / np.where(wsum > 0, wsum, 1.0), 0.0)
        contrib = w > 0
        if contrib.any():
            anded = np.bitwise_and.reduce(np.where(contrib, bits[:, a:b], -1), axis=0)
            out_bits[a:b] = np.where(contrib.any(axis=0), anded, out_bits[a:b])
    return out_f.astype(np.float32), out_w.astype(np.float32), out_bits
