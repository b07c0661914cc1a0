"""Spectra on the store grid: cleaning a published spectrum, the synthetic DR3 twins, and DR4 epoch visits.

Cleaning (formats.md 5.2): ivar = 1/flux_error^2; a pixel is bad (ivar 0, its bit kept) where flux is
null/NaN/inf or flux_error is null/NaN/<= 0; bad flux is set to 1 (the normalised continuum) so that no
NaN reaches the store. The outer `edge_px` pixels get PIX_EDGE (bad only when asked).

Synthetic twins (DR3 has no epoch spectra; formats.md 4.4 option 1): each visit is the mean spectrum plus
Gaussian noise that turns its sigma_mean into sigma_in = sigma_mean * sqrt(N / k), the noise of the mean of
a k-transit subset of its N = combined_transits transits (k drawn from 1..floor(N / min_gain^2), so every
copy has at most 1/min_gain of the mean's S/N). The added noise is white per native RVS pixel and
smoothed over the 0.01 nm bins (~2.5 bins per 0.0245 nm native pixel; unverified), as the mean's own noise
is. Draws are seeded by (twin_seed, source_id): a re-ingest makes the same visits.
What this does NOT give: independent noise. Every copy contains the mean's own noise realisation, which is
also in the target (the mean), so input and target noise are correlated; the copies know nothing of
per-transit effects (RV errors, LSF and normalisation differences, cosmic rays, blends). It is honest only
where the added noise dominates, i.e. where the mean's S/N is well above the copies' (min_gain >= 3
means the mean's noise is at most 1/3 of a copy's). Real epochs (DR4) remove the caveat.

Epoch visits (DR4, formats.md 4.3, unverified): epoch spectra are in the solar barycentric frame, so each
is Doppler-shifted to the rest frame (lambda_rest = lambda_obs / (1 + v/c)) with its own RV when the file
gives one, else the star's combined radial_velocity, and resampled onto the grid by linear interpolation
(variance propagated; a pixel fed by a bad one is bad; pixels the shifted epoch does not cover get
PIX_NO_COVERAGE and ivar 0).
"""

from __future__ import annotations

import math

import numpy as np

from pairspec.surveys.gaia_rvs.layout import (
    NATIVE_PIXEL_NM,
    PIX_BAD_ERROR,
    PIX_EDGE,
    PIX_NO_COVERAGE,
    PIX_NULL_FLUX,
    PIX_SYNTHETIC,
    STEP_NM,
)

C_KMS = 299792.458
GAIA_TIME_TO_MJD = 2455197.5 - 2400000.5  # epoch times are BJD(TCB) - 2455197.5 (formats.md 4.3)


def clean(flux: np.ndarray, error: np.ndarray, edge_px: int = 0, trim_edges: bool = False):
    """(flux float32, ivar float32, pixmask int64) of a published spectrum; see the module docstring."""
    flux = np.asarray(flux, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    mask = np.zeros(flux.size, dtype=np.int64)
    bad_flux = ~np.isfinite(flux)
    with np.errstate(invalid="ignore"):
        bad_err = ~np.isfinite(error) | (error <= 0)
    mask[bad_flux] |= PIX_NULL_FLUX
    mask[bad_err] |= PIX_BAD_ERROR
    good = ~(bad_flux | bad_err)
    if edge_px > 0:
        mask[:edge_px] |= PIX_EDGE
        mask[-edge_px:] |= PIX_EDGE
        if trim_edges:
            good[:edge_px] = good[-edge_px:] = False
    ivar = np.zeros(flux.size)
    ivar[good] = 1.0 / error[good] ** 2
    ivar[~np.isfinite(ivar)] = 0.0  # an error so small its square underflows the inverse
    out = np.where(good, flux, 1.0)
    return out.astype(np.float32), ivar.astype(np.float32), mask


def native_pixel_kernel() -> np.ndarray:
    """Unit-variance smoothing kernel: a Gaussian of FWHM one native RVS pixel, in 0.01 nm bins."""
    sigma = NATIVE_PIXEL_NM / STEP_NM / 2.3548
    x = np.arange(-4, 5, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / np.sqrt((w**2).sum())


def max_transits(n_transits: int, min_gain: float) -> int:
    """Largest subset size k whose copies keep S/N <= mean S/N / min_gain: floor(N / min_gain^2)."""
    return math.floor(n_transits / float(min_gain) ** 2 + 1e-9)


def synthetic_visits(flux: np.ndarray, ivar: np.ndarray, n_transits: int, source_id: int, n_twins: int = 4,
                     min_gain: float = 3.0, seed: int = 0, correlated: bool = True):
    """(visit flux (V, npix) float32, visit ivar float32, k per visit) of the degraded copies of one mean
    spectrum. ValueError (with the reason) when no k-transit subset is `min_gain` fainter than the mean."""
    n_transits = int(n_transits)
    kmax = max_transits(n_transits, min_gain)
    if kmax < 1:
        raise ValueError(f"combined_transits={n_transits}: even a 1-transit copy keeps 1/{math.sqrt(max(n_transits, 1)):.2f} "
                         f"of the mean's S/N, not the 1/{min_gain:g} that min_gain asks (needs N >= {math.ceil(min_gain ** 2)})")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(source_id) & ((1 << 64) - 1)]))
    ks = np.sort(rng.integers(1, kmax + 1, size=int(n_twins)))
    good = ivar > 0
    sigma = np.zeros(flux.size)
    sigma[good] = 1.0 / np.sqrt(ivar[good].astype(np.float64))
    kern = native_pixel_kernel() if correlated else None
    vflux = np.empty((ks.size, flux.size), dtype=np.float32)
    vivar = np.empty((ks.size, flux.size), dtype=np.float32)
    for j, k in enumerate(ks):
        z = rng.standard_normal(flux.size + (8 if correlated else 0))
        if correlated:
            z = np.convolve(z, kern, mode="valid")
        added = sigma * math.sqrt(n_transits / k - 1.0) * z
        vflux[j] = np.where(good, flux + added, flux)
        vivar[j] = np.where(good, ivar.astype(np.float64) * k / n_transits, 0.0)
    return vflux, vivar, ks


def synthetic_pixmask(coadd_mask: np.ndarray, n_visits: int) -> np.ndarray:
    """The copies' pixmask: the mean's bits plus PIX_SYNTHETIC on every pixel."""
    return np.repeat((coadd_mask | PIX_SYNTHETIC)[None], n_visits, axis=0)


def resample(src_nm: np.ndarray, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, dst_nm: np.ndarray):
    """(flux, ivar, pixmask) on `dst_nm` of a cleaned spectrum sampled at `src_nm`, by linear interpolation:
    variance (1-t)^2 s_a^2 + t^2 s_b^2, a pixel fed by a bad one is bad, bits OR-ed, no coverage -> PIX_NO_COVERAGE."""
    src = np.asarray(src_nm, dtype=np.float64)
    order = np.argsort(src, kind="stable")
    src, f = src[order], np.asarray(flux, np.float64)[order]
    iv, m = np.asarray(ivar, np.float64)[order], np.asarray(mask, np.int64)[order]
    dst = np.asarray(dst_nm, dtype=np.float64)
    tol = 1e-6 * float(np.median(np.diff(src))) if src.size > 1 else 0.0
    inside = (dst >= src[0] - tol) & (dst <= src[-1] + tol)
    x = np.clip(dst, src[0], src[-1])
    j = np.clip(np.searchsorted(src, x, side="right"), 1, src.size - 1)
    a, b = j - 1, j
    span = src[b] - src[a]
    t = np.clip(np.where(span > 0, (x - src[a]) / np.where(span > 0, span, 1.0), 0.0), 0.0, 1.0)
    # a pixel is good when the samples it takes weight from are good (weight 0 lets a bad neighbour pass)
    ok = inside & ((iv[a] > 0) | (t >= 1.0)) & ((iv[b] > 0) | (t <= 0.0))
    sa2 = np.where(iv[a] > 0, 1.0 / np.where(iv[a] > 0, iv[a], 1.0), 0.0)
    sb2 = np.where(iv[b] > 0, 1.0 / np.where(iv[b] > 0, iv[b], 1.0), 0.0)
    var = (1 - t) ** 2 * sa2 + t**2 * sb2
    out_f = np.where(ok, (1 - t) * f[a] + t * f[b], 1.0)
    out_i = np.where(ok & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    out_m = np.where(inside, m[a] | m[b], PIX_NO_COVERAGE).astype(np.int64)
    return out_f.astype(np.float32), out_i.astype(np.float32), out_m


def to_rest_frame(wave_obs_nm: np.ndarray, flux: np.ndarray, error: np.ndarray, rv_kms: float,
                  grid_nm: np.ndarray):
    """(flux, ivar, pixmask) on `grid_nm` of one barycentric epoch spectrum shifted by -rv_kms."""
    f, ivar, mask = clean(flux, error)
    rest = np.asarray(wave_obs_nm, dtype=np.float64) / (1.0 + rv_kms / C_KMS)
    return resample(rest, f, ivar, mask, grid_nm)
