"""Evaluation metrics, pure numpy: robust scatter, S/N bins, calibration, slopes, clusters, C/N ages.

Every function ignores non-finite entries (a NaN label is a missing label, not a zero).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_SNR_EDGES = (0.0, 20.0, 40.0, 60.0, math.inf)
MAD_TO_SIGMA = 1.4826  # robust sigma = 1.4826 * MAD for a Gaussian


def _finite(*arrays):
    """Flattened float64 copies restricted to the entries finite in every array."""
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    keep = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        keep &= np.isfinite(a)
    return [a[keep] for a in arrays]


def robust_std(values: np.ndarray, axis=0) -> np.ndarray:
    """1.4826 * median(|v - median(v)|) along `axis`, ignoring NaN (NaN where a slice is empty)."""
    values = np.asarray(values, dtype=float)
    med = np.nanmedian(values, axis=axis, keepdims=True)
    return MAD_TO_SIGMA * np.nanmedian(np.abs(values - med), axis=axis)


def robust_sigma(x) -> float:
    """1.4826 * median absolute deviation of the finite values (NaN if there are none)."""
    (x,) = _finite(x)
    if x.size == 0:
        return float("nan")
    return float(robust_std(x))


def bias(x) -> float:
    """Median of the finite values of a residual array (NaN if there are none)."""
    (x,) = _finite(x)
    return float(np.median(x)) if x.size else float("nan")


def snr_bin_labels(edges=DEFAULT_SNR_EDGES) -> list[str]:
    """Names of the S/N bins: (0,20,40,60,inf) -> ["<20", "20-40", "40-60", ">=60"]."""
    names = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo <= 0:
            names.append(f"<{hi:g}")
        elif math.isinf(hi):
            names.append(f">={lo:g}")
        else:
            names.append(f"{lo:g}-{hi:g}")
    return names


def binned_scatter(pred, ref, snr, edges=DEFAULT_SNR_EDGES) -> dict[str, dict]:
    """Per S/N bin [lo, hi): {bin name: {n, sigma (robust), bias (median)}} of pred - ref."""
    pred, ref, snr = (np.asarray(a, dtype=np.float64).ravel() for a in (pred, ref, snr))
    out = {}
    for name, lo, hi in zip(snr_bin_labels(edges), edges[:-1], edges[1:]):
        sel = (snr >= lo) & (snr < hi)
        resid = (pred - ref)[sel]
        resid = resid[np.isfinite(resid)]
        out[name] = {"n": int(resid.size), "sigma": robust_sigma(resid), "bias": bias(resid)}
    return out


def zscore_stats(pred, sigma, ref) -> dict[str, float]:
    """Calibration of predicted sigmas: z = (pred - ref) / sigma.

    Returns z_std (plain std), z_std_robust (1.4826 MAD), cov68 = P(|z| < 1), cov95 = P(|z| < 1.96),
    n. Well calibrated Gaussian errors give 1, 1, 0.683, 0.950.
    """
    pred, sigma, ref = _finite(pred, sigma, ref)
    ok = sigma > 0
    z = (pred[ok] - ref[ok]) / sigma[ok]
    return _z_summary(z)


def _z_summary(z) -> dict[str, float]:
    (z,) = _finite(z)
    if z.size == 0:
        nan = float("nan")
        return {"n": 0, "z_std": nan, "z_std_robust": nan, "cov68": nan, "cov95": nan}
    return {
        "n": int(z.size),
        "z_std": float(np.std(z)),
        "z_std_robust": robust_sigma(z),
        "cov68": float(np.mean(np.abs(z) < 1.0)),
        "cov95": float(np.mean(np.abs(z) < 1.959964)),
    }


def pair_zscores(pred_a, sig_a, pred_b, sig_b) -> np.ndarray:
    """z = (a - b) / sqrt(sa^2 + sb^2) for two visits of the same star (no truth needed).

    With honest independent errors z has unit std; use `pair_zscore_stats` for the summary.
    """
    a, sa, b, sb = (np.asarray(v, dtype=np.float64) for v in (pred_a, sig_a, pred_b, sig_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a - b) / np.sqrt(sa**2 + sb**2)


def pair_zscore_stats(pred_a, sig_a, pred_b, sig_b) -> dict[str, float]:
    """Summary (as zscore_stats) of the repeat-visit z-scores."""
    return _z_summary(pair_zscores(pred_a, sig_a, pred_b, sig_b))


def repeat_pairs(star_index) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of consecutive visits of the same star; each visit in at most one pair.

    Disjoint pairs keep the z-scores independent (visits 0-1, 2-3, ... of every star).
    """
    star_index = np.asarray(star_index)
    order = np.argsort(star_index, kind="stable")
    first, second = [], []
    i = 0
    while i + 1 < order.size:
        if star_index[order[i]] == star_index[order[i + 1]]:
            first.append(order[i])
            second.append(order[i + 1])
            i += 2
        else:
            i += 1
    return np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)


def slope(pred, ref, max_pairs: int = 20000, seed: int = 0) -> float:
    """Theil-Sen slope of pred against ref on random pairs: 1 = no shrinkage, < 1 = pulled to the mean.

    Robust to outliers (the median of pairwise slopes); random pairs keep it O(max_pairs).
    """
    pred, ref = _finite(pred, ref)
    n = pred.size
    if n < 3:
        return float("nan")
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, max_pairs)
        j = rng.integers(0, n, max_pairs)
    dx = ref[j] - ref[i]
    ok = np.abs(dx) > 1e-12 * max(1.0, float(np.abs(ref).max()))
    if not ok.any():
        return float("nan")
    return float(np.median((pred[j] - pred[i])[ok] / dx[ok]))


def _is_field(cid) -> bool:
    """True for the 'no cluster' ids: None, '', 'none', 'field', NaN, negative integers."""
    if cid is None:
        return True
    if isinstance(cid, (str, bytes)):
        s = cid.decode() if isinstance(cid, bytes) else cid
        return s.strip().lower() in ("", "none", "field", "nan")
    try:
        v = float(cid)
    except (TypeError, ValueError):
        return False
    return not np.isfinite(v) or v < 0


def cluster_dispersion(values, cluster_ids, min_members: int = 3) -> dict:
    """Robust sigma of a label within each cluster, and their mean over clusters.

    Field stars (see _is_field) and clusters with fewer than `min_members` finite values are left
    out. Returns {"clusters": {id: {"n", "sigma", "median"}}, "mean_sigma", "n_clusters"}.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    ids = np.asarray(cluster_ids).ravel()
    clusters = {}
    for cid in np.unique(ids):
        if _is_field(cid):
            continue
        v = values[(ids == cid) & np.isfinite(values)]
        if v.size < min_members:
            continue
        key = cid.item() if hasattr(cid, "item") else cid
        clusters[str(key)] = {"n": int(v.size), "sigma": robust_sigma(v), "median": float(np.median(v))}
    sigmas = [c["sigma"] for c in clusters.values()]
    return {
        "clusters": clusters,
        "mean_sigma": float(np.mean(sigmas)) if sigmas else float("nan"),
        "n_clusters": len(sigmas),
    }


def recon_chi2(denoised, target, target_ivar) -> np.ndarray:
    """Per-spectrum chi^2 per good pixel, sum((d - t)^2 ivar) / n(ivar > 0); NaN with no good pixel."""
    d = np.atleast_2d(np.asarray(denoised, dtype=np.float64))
    t = np.atleast_2d(np.asarray(target, dtype=np.float64))
    w = np.atleast_2d(np.asarray(target_ivar, dtype=np.float64))
    good = (w > 0) & np.isfinite(d) & np.isfinite(t)
    chi = np.where(good, (d - t) ** 2 * np.where(good, w, 0.0), 0.0).sum(axis=1)
    n = good.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, chi / np.maximum(n, 1), np.nan)


# --- C/N ages of giants ------------------------------------------------------------------------
# The giant-branch [C/N] is set by first dredge-up, which deepens with stellar mass; so mass is
# regressed on ([C/N], [Fe/H]) for giants with known masses (APOKASC-like), and age follows from
# mass through the main-sequence lifetime.


def _cn_design(cn, feh) -> np.ndarray:
    cn, feh = np.asarray(cn, dtype=np.float64), np.asarray(feh, dtype=np.float64)
    return np.stack([np.ones_like(cn), cn, feh, cn**2, cn * feh], axis=-1)


def fit_mass_from_cn(cn, feh, mass) -> np.ndarray:
    """Least-squares coefficients of mass = c0 + c1 [C/N] + c2 [Fe/H] + c3 [C/N]^2 + c4 [C/N][Fe/H].

    Train on giants with reference masses; finite rows only. Returns coef (5,).
    """
    cn, feh, mass = _finite(cn, feh, mass)
    if cn.size < 5:
        raise ValueError(f"fit_mass_from_cn needs at least 5 giants with finite values, got {cn.size}")
    coef, *_ = np.linalg.lstsq(_cn_design(cn, feh), mass, rcond=None)
    return coef


def mass_from_cn(cn, feh, coef) -> np.ndarray:
    """Mass (Msun) from [C/N] and [Fe/H] with coefficients from fit_mass_from_cn."""
    return _cn_design(cn, feh) @ np.asarray(coef, dtype=np.float64)


def age_from_mass(mass, feh) -> np.ndarray:
    """Giant age in Gyr ~ main-sequence lifetime: t = 10 Gyr * M^-2.5 * 10^(0.25 [Fe/H]).

    A deliberately simple relation (metal-rich stars of a given mass live longer); NaN for M <= 0.
    """
    mass = np.asarray(mass, dtype=np.float64)
    feh = np.asarray(feh, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(mass > 0, mass, np.nan)
        return 10.0 * m**-2.5 * 10.0 ** (0.25 * feh)


def cn_age_precision(cn, feh, age_ref, coef) -> float:
    """Robust scatter (Gyr) of C/N ages from (cn, feh) labels against reference ages."""
    age = age_from_mass(mass_from_cn(cn, feh, coef), feh)
    return robust_sigma(age - np.asarray(age_ref, dtype=np.float64))
