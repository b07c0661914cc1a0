"""Post-hoc calibration of the predicted label sigmas on the validation split.

Per label k, z = (pred - label) / sigma over the validation twins, and the sigma scale is
s_k = 1.4826 * MAD(z) (median absolute deviation about the median: the standard deviation for a
Gaussian, but not inflated by the few catastrophic outliers every survey has). Optionally the same
per visit-S/N bin (edges 0, 20, 40, 60, inf); a bin with fewer than `min_count` usable twins for a
label falls back to that label's global scale, and a label with fewer than `min_count` in all keeps
scale 1 (an uncalibrated sigma is safer than one scaled by a handful of twins). Calibrated sigma = sigma * s.

The calibration is a plain dict (stored in the checkpoint):
    {"method": "mad", "label_names": [...], "scale": [K], "count": [K], "min_count": int,
     "snr_edges": [...] or None,
     "scale_by_snr": [[K] per bin] or None, "count_by_snr": [[K] per bin] or None}
"""

from __future__ import annotations

import numpy as np

from pairspec.metrics import DEFAULT_SNR_EDGES as SNR_EDGES
from pairspec.metrics import robust_std  # one robust sigma for the whole package


def fit_calibration(pred, sigma, labels, snr=None, label_names=None, snr_edges=SNR_EDGES,
                    min_count: int = 30) -> dict:
    """pred, sigma, labels (N, K) physical units, NaN label = missing; snr (N,) or None."""
    pred, sigma, labels = (np.asarray(a, dtype=np.float64) for a in (pred, sigma, labels))
    z = (pred - labels) / sigma
    z[~np.isfinite(z)] = np.nan
    K = z.shape[1]
    scale, count = np.ones(K), np.isfinite(z).sum(0)
    for k in range(K):
        if count[k] >= min_count:  # too few val twins: leave the network's sigma as it is
            scale[k] = robust_std(z[:, k])
    scale[~(scale > 0)] = 1.0  # a degenerate fit (all z equal) must not zero the sigmas
    cal = {"method": "mad", "label_names": list(label_names or []), "scale": scale.tolist(),
           "count": count.astype(int).tolist(), "min_count": int(min_count),
           "snr_edges": None, "scale_by_snr": None, "count_by_snr": None}
    if snr is None or snr_edges is None:
        return cal
    snr = np.asarray(snr, dtype=np.float64)
    edges = list(snr_edges)
    by_bin, counts = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = (snr >= lo) & (snr < hi)
        zb = z[rows]
        n = np.isfinite(zb).sum(0)
        s = scale.copy()
        for k in range(K):
            if n[k] >= min_count:
                s[k] = robust_std(zb[:, k])
        s[~(s > 0)] = scale[~(s > 0)]
        by_bin.append(s.tolist())
        counts.append(n.astype(int).tolist())
    cal.update(snr_edges=edges, scale_by_snr=by_bin, count_by_snr=counts)
    return cal


def sigma_scale(calibration: dict | None, snr, n_labels: int) -> np.ndarray:
    """(N, K) multiplicative sigma scale for twins of S/N `snr` (N,); ones when uncalibrated."""
    snr = np.atleast_1d(np.asarray(snr, dtype=np.float64))
    if not calibration:
        return np.ones((snr.size, n_labels))
    out = np.tile(np.asarray(calibration["scale"], dtype=np.float64), (snr.size, 1))
    if calibration.get("scale_by_snr"):
        edges = np.asarray(calibration["snr_edges"], dtype=np.float64)
        by_bin = np.asarray(calibration["scale_by_snr"], dtype=np.float64)
        b = np.searchsorted(edges, snr, side="right") - 1
        ok = np.isfinite(snr) & (b >= 0) & (b < len(by_bin))  # NaN S/N keeps the global scale
        out[ok] = by_bin[b[ok]]
    return out


def apply_calibration(sigma, snr, calibration: dict | None) -> np.ndarray:
    sigma = np.asarray(sigma, dtype=np.float64)
    return sigma * sigma_scale(calibration, snr, sigma.shape[1])
