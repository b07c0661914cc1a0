"""Twins: a low-S/N visit paired with a high-S/N spectrum of the same star.

The default target of a visit is the leave-one-out coadd of the star's OTHER visits: its noise is
independent of the input's, which the Noise2Noise argument needs (the survey's combined spectrum
contains the visit itself). Visits must be continuum-normalised first (data.py does it), so that
visits with different flux calibration combine correctly.
"""

from __future__ import annotations

import numpy as np


def _exclusive_sum(values: np.ndarray) -> np.ndarray:
    """out[v] = sum over the other rows u != v, from prefix and suffix sums.

    Unlike total - own, no subtraction happens, so a visit with a huge ivar next to weak ones cannot
    cancel the others' contribution away (exact up to ordinary rounding).
    """
    zero = np.zeros((1,) + values.shape[1:], dtype=values.dtype)
    before = np.concatenate([zero, np.cumsum(values, axis=0)[:-1]])
    after = np.concatenate([np.cumsum(values[::-1], axis=0)[::-1][1:], zero])
    return before + after


def leave_one_out(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per visit v of one star, the ivar-weighted mean of the other visits: (loo_flux, loo_ivar) (V, npix).

    loo_ivar is the sum of the other visits' ivar (the ivar of that mean). Where no other visit has
    ivar > 0, the result is flux 0 and ivar 0. Computed in float64, returned float32, never NaN.
    """
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    if flux.ndim != 2 or flux.shape != ivar.shape:
        raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must both be (n_visit, npix)")
    good = (ivar > 0) & np.isfinite(ivar) & np.isfinite(flux)
    w = np.where(good, ivar, 0.0)
    wf = np.where(good, w * flux, 0.0)
    loo_w = _exclusive_sum(w)
    loo_wf = _exclusive_sum(wf)
    has = loo_w > 0
    loo_flux = np.where(has, loo_wf / np.where(has, loo_w, 1.0), 0.0)
    return loo_flux.astype(np.float32), loo_w.astype(np.float32)


def coadd(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ivar-weighted mean of all visits of one star: (flux (npix,), ivar (npix,)); flux 0 where no ivar."""
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    good = (ivar > 0) & np.isfinite(ivar) & np.isfinite(flux)
    w = np.where(good, ivar, 0.0).sum(axis=0)
    wf = np.where(good, ivar * flux, 0.0).sum(axis=0)
    mean = np.where(w > 0, wf / np.where(w > 0, w, 1.0), 0.0)
    return mean.astype(np.float32), w.astype(np.float32)


def select_twins(
    n_visits: np.ndarray,
    snr: np.ndarray | None = None,
    min_visits: int = 2,
    min_snr: float | None = None,
) -> np.ndarray:
    """Stars usable for twins: bool (n_star,). At least `min_visits` visits (2: one input plus at least
    one other visit for its target) and, if `min_snr` is given, a finite star-level S/N >= min_snr."""
    n_visits = np.asarray(n_visits)
    keep = n_visits >= min_visits
    if min_snr is not None:
        if snr is None:
            raise ValueError("select_twins: min_snr given without snr")
        snr = np.asarray(snr, dtype=np.float64)
        keep &= np.isfinite(snr) & (snr >= min_snr)
    return keep


def visit_groups(visit_star: np.ndarray) -> list[np.ndarray]:
    """Visit indices of each star (stars in ascending index, visits ascending), from the per-visit star index."""
    visit_star = np.asarray(visit_star)
    order = np.argsort(visit_star, kind="stable")
    stars, starts = np.unique(visit_star[order], return_index=True)
    return [np.sort(g) for g in np.split(order, starts[1:])] if len(stars) else []
