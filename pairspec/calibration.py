"""Post-hoc calibration of the predicted label sigmas on the validation split: a visit part and a star part.

A visit's error against the truth has two parts. One changes from visit to visit (photon noise, the
visit's bad pixels, its continuum): the repeat visits of a star disagree by it. The other is common to
all visits of a star (what the network gets wrong for that kind of star, and the noise of the survey
label it learned): repeat visits share it, so it cancels in their difference and does not average down
when visits are combined. One sigma cannot pass both tests a survey pipeline uses on real data (z-scores against
the reference labels AND from repeat pairs), so the calibration splits it:

    sigma_visit = a_k * sigma_net               a_k: 1.4826 MAD of the repeat-pair z-scores
                                                z = (p_i - p_j) / sqrt(sigma_net_i^2 + sigma_net_j^2)
    sigma_star  = s_k,bin                       per label and visit-S/N bin (edges 0, 20, 40, 60, inf): the
                                                value that makes 1.4826 MAD of (pred - label) /
                                                sqrt(sigma_visit^2 + sigma_star^2) equal 1 (0 if already <= 1)
    sigma       = sqrt(sigma_visit^2 + sigma_star^2)

Robust (MAD) scales, so the few catastrophic outliers every survey has do not inflate them. A bin with
fewer than `min_count` usable twins falls back to the label's global value; with fewer than `min_count`
repeat pairs the visit scale is the plain one-part scale of the old calibration (method "mad").
Combining the visits of a star: weights 1/sigma_visit^2, error sqrt(1 / sum(1/sigma_visit^2) +
sigma_star^2) (catalog.combine_visits).

The calibration is a plain dict stored in the checkpoint:
    {"method": "visit+star" or "mad", "label_names": [...], "scale": [K] (visit scale a_k),
     "count": [K], "pair_count": [K], "min_count": int, "snr_edges": [...] or None,
     "star_sigma": [K], "star_sigma_by_snr": [[K] per bin] or None, "count_by_snr": [[K] per bin] or None,
     "scale_by_snr": None (old one-part checkpoints may hold a per-bin scale here; still honoured)}
"""

from __future__ import annotations

import numpy as np

from pairspec.metrics import DEFAULT_SNR_EDGES as SNR_EDGES
from pairspec.metrics import (
    repeat_pairs,
    robust_std,  # one robust sigma for the whole package
)


def _star_term(resid: np.ndarray, sv: np.ndarray) -> float:
    """The s >= 0 with robust_std(resid / sqrt(sv^2 + s^2)) = 1 (bisection; 0 when sv alone suffices)."""
    ok = np.isfinite(resid) & np.isfinite(sv) & (sv > 0)
    r, v = resid[ok], sv[ok]
    if r.size == 0 or robust_std(r / v) <= 1.0:
        return 0.0
    lo, hi = 0.0, max(float(robust_std(r)) * 2.0, 1e-12)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if robust_std(r / np.sqrt(v * v + mid * mid)) > 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def fit_calibration(pred, sigma, labels, snr=None, star=None, label_names=None, snr_edges=SNR_EDGES,
                    min_count: int = 30) -> dict:
    """pred, sigma, labels (N, K) physical units, NaN label = missing; snr (N,) visit S/N or None; star (N,)
    the star of each twin (for the repeat pairs) or None (then the one-part "mad" calibration)."""
    pred, sigma, labels = (np.asarray(a, dtype=np.float64) for a in (pred, sigma, labels))
    K = pred.shape[1]
    resid = pred - labels
    z = resid / sigma
    z[~np.isfinite(z)] = np.nan
    count = np.isfinite(z).sum(0)
    one_part = np.ones(K)
    for k in range(K):
        if count[k] >= min_count:  # too few val twins: leave the network's sigma as it is
            one_part[k] = robust_std(z[:, k])
    one_part[~(one_part > 0)] = 1.0  # a degenerate fit (all z equal) must not zero the sigmas

    visit_scale, pair_count = one_part.copy(), np.zeros(K, dtype=int)
    method = "mad"
    if star is not None:
        a, b = repeat_pairs(np.asarray(star))
        if a.size:
            zp = (pred[a] - pred[b]) / np.sqrt(sigma[a] ** 2 + sigma[b] ** 2)
            zp[~np.isfinite(zp)] = np.nan
            pair_count = np.isfinite(zp).sum(0)
            for k in range(K):
                if pair_count[k] >= min_count:
                    visit_scale[k] = robust_std(zp[:, k])
                    method = "visit+star"
            visit_scale[~(visit_scale > 0)] = one_part[~(visit_scale > 0)]
    sv = sigma * visit_scale
    star_sigma = np.zeros(K)
    if method == "visit+star":
        for k in range(K):
            if count[k] >= min_count:
                star_sigma[k] = _star_term(resid[:, k], sv[:, k])
    cal = {"method": method, "label_names": list(label_names or []), "scale": visit_scale.tolist(),
           "count": count.astype(int).tolist(), "pair_count": np.asarray(pair_count).astype(int).tolist(),
           "min_count": int(min_count), "snr_edges": None, "star_sigma": star_sigma.tolist(),
           "star_sigma_by_snr": None, "scale_by_snr": None, "count_by_snr": None}
    if snr is None or snr_edges is None:
        return cal
    snr = np.asarray(snr, dtype=np.float64)
    edges = list(snr_edges)
    by_bin, counts, scale_bins = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = (snr >= lo) & (snr < hi)
        n = np.isfinite(z[rows]).sum(0)
        s = star_sigma.copy()
        sc = one_part.copy()
        for k in range(K):
            if n[k] >= min_count:
                if method == "visit+star":
                    s[k] = _star_term(resid[rows, k], sv[rows, k])
                else:
                    sc[k] = robust_std(z[rows, k])
        sc[~(sc > 0)] = one_part[~(sc > 0)]
        by_bin.append(s.tolist())
        scale_bins.append(sc.tolist())
        counts.append(n.astype(int).tolist())
    cal.update(snr_edges=edges, count_by_snr=counts)
    if method == "visit+star":
        cal["star_sigma_by_snr"] = by_bin
    else:
        cal["scale_by_snr"] = scale_bins
    return cal


def _bin_values(calibration: dict, key: str, snr: np.ndarray, default: np.ndarray) -> np.ndarray:
    """(N, K) per-twin values of a per-S/N-bin calibration table (`default` rows where S/N is NaN)."""
    out = np.tile(default, (snr.size, 1))
    table = calibration.get(key)
    if table:
        edges = np.asarray(calibration["snr_edges"], dtype=np.float64)
        by_bin = np.asarray(table, dtype=np.float64)
        b = np.searchsorted(edges, snr, side="right") - 1
        ok = np.isfinite(snr) & (b >= 0) & (b < len(by_bin))  # NaN S/N keeps the global value
        out[ok] = by_bin[b[ok]]
    return out


def split_sigma(sigma, snr, calibration: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sigma, sigma_visit, sigma_star), each (N, K), from the network's sigma (N, K) and the visits' S/N."""
    sigma = np.asarray(sigma, dtype=np.float64)
    snr = np.atleast_1d(np.asarray(snr, dtype=np.float64))
    K = sigma.shape[1]
    if not calibration:
        return sigma, sigma, np.zeros_like(sigma)
    scale = np.asarray(calibration["scale"], dtype=np.float64)
    visit = sigma * _bin_values(calibration, "scale_by_snr", snr, scale)
    star = _bin_values(calibration, "star_sigma_by_snr", snr, np.asarray(calibration.get("star_sigma") or [0.0] * K))
    return np.sqrt(visit**2 + star**2), visit, star


def apply_calibration(sigma, snr, calibration: dict | None) -> np.ndarray:
    """The calibrated total sigma (see split_sigma)."""
    return split_sigma(sigma, snr, calibration)[0]
