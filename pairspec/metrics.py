"""Evaluation metrics, pure numpy: robust scatter, S/N bins, calibration, slopes, clusters, C/N ages.

Every function ignores non-finite entries (a NaN label is a missing label, not a zero).
"""

from __future__ import annotations

import itertools
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


def snr_bin_index(snr, edges=DEFAULT_SNR_EDGES) -> np.ndarray:
    """Index of each visit's S/N bin [lo, hi) among `edges` (0 .. len(edges) - 2); a NaN S/N, or one past
    the last edge, falls in the top bin, one below the first in the bottom bin."""
    snr = np.nan_to_num(np.asarray(snr, dtype=np.float64), nan=np.inf)
    return np.clip(np.searchsorted(np.asarray(edges, dtype=np.float64), snr, side="right") - 1, 0, len(edges) - 2)


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


def sigma_ratio(resid_a, resid_b, star, n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """Robust sigma of `resid_a` over that of `resid_b`, two methods' residuals on the SAME visits (NaN where
    either is missing), with its 16-84 % interval from resampling the stars (`star`, one id per visit: a
    star's visits share its errors, so the stars are the independent draws). {n, n_stars, ratio, lo, hi}.

    Why: a comparison with a baseline run on a subset is only fair on that subset, and a bin of ~100 visits
    from a few dozen stars moves its robust sigma by 20 % or more (docs/evaluation.md: an [Fe/H] bin read
    as 1.59x the fit on 115 visits was 0.98x on all 1116 visits of that bin)."""
    a, b = np.asarray(resid_a, dtype=np.float64).ravel(), np.asarray(resid_b, dtype=np.float64).ravel()
    star = np.asarray(star).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b, star = a[ok], b[ok], star[ok]
    out = {"n": int(a.size), "n_stars": int(np.unique(star).size), "ratio": float("nan"), "lo": float("nan"),
           "hi": float("nan")}
    if a.size < 2:
        return out

    def ratio(x, y):
        sx, sy = robust_sigma(x), robust_sigma(y)
        return sx / sy if sy > 0 else float("nan")

    out["ratio"] = ratio(a, b)
    draws = [ratio(a[rows], b[rows]) for rows in star_resamples(star, n_boot, seed)]
    if np.isfinite(draws).any():
        out["lo"], out["hi"] = (float(v) for v in np.nanpercentile(draws, [16, 84]))
    return out


def star_resamples(star, n_boot: int = 200, seed: int = 0):
    """Yield `n_boot` bootstrap row sets that resample whole stars (`star`: one id per row) with replacement:
    a star's visits share its errors, so the stars, not the visits, are the independent draws."""
    _, inverse = np.unique(np.asarray(star).ravel(), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse))])
    rows_of = [order[s:e] for s, e in itertools.pairwise(bounds)]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([rows_of[i] for i in rng.integers(0, len(rows_of), len(rows_of))])


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
# regressed on ([C/N], [Fe/H]) for giants with known (asteroseismic) masses, and age follows from
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


# --- the [Mg/Fe]-[Fe/H] plane ---------------------------------------------------------------------
# A method whose [Mg/Fe] shrinks to the population's mean trend draws a clean-looking but false chemical
# sequence. These numbers say whether the structure at fixed [Fe/H] (the two disc sequences) survives.

DEFAULT_FEH_BINS = (-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5)
DISC_OVERLAP = (-0.7, -0.1)  # [Fe/H] range where the thin and the thick disc sequences overlap


def trend(x, y, degree: int = 2):
    """Robust-ish polynomial trend y(x) (least squares after one 3-sigma clip); returns a callable."""
    x, y = _finite(x, y)
    if x.size <= degree + 1:
        return lambda v: np.full(np.shape(v), np.nan)
    coef = np.polyfit(x, y, degree)
    r = y - np.polyval(coef, x)
    keep = np.abs(r) < 3 * max(robust_sigma(r), 1e-12)
    if keep.sum() > degree + 1:
        coef = np.polyfit(x[keep], y[keep], degree)
    return lambda v: np.polyval(coef, np.asarray(v, dtype=np.float64))


def two_gaussian_separation(values, n_iter: int = 300) -> dict:
    """1-D two-component Gaussian mixture by EM (started at the 25th and 75th percentiles):
    {"separation": |mu1 - mu2| / sqrt((s1^2 + s2^2) / 2), "mu", "sigma", "weight", "n"}. A single blob gives
    a small separation; two resolved sequences a large one."""
    (v,) = _finite(values)
    if v.size < 10:
        return {"separation": float("nan"), "mu": [], "sigma": [], "weight": [], "n": int(v.size)}
    mu = np.percentile(v, [25, 75]).astype(np.float64)
    sig = np.full(2, max(np.std(v) / 2, 1e-6))
    w = np.array([0.5, 0.5])
    for _ in range(n_iter):
        pdf = w / sig * np.exp(-0.5 * ((v[:, None] - mu) / sig) ** 2)
        resp = pdf / np.maximum(pdf.sum(1, keepdims=True), 1e-300)
        nk = resp.sum(0) + 1e-12
        w = nk / nk.sum()
        mu = (resp * v[:, None]).sum(0) / nk
        sig = np.sqrt(np.maximum((resp * (v[:, None] - mu) ** 2).sum(0) / nk, 1e-10))
    order = np.argsort(mu)
    mu, sig, w = mu[order], sig[order], w[order]
    return {"separation": float(abs(mu[1] - mu[0]) / np.sqrt(0.5 * (sig[0] ** 2 + sig[1] ** 2))),
            "mu": mu.tolist(), "sigma": sig.tolist(), "weight": w.tolist(), "n": int(v.size)}


def chemical_plane(feh, mgfe, feh_true, mgfe_true, bins=DEFAULT_FEH_BINS, overlap=DISC_OVERLAP) -> dict:
    """Structure of a method's [Mg/Fe]-[Fe/H] plane beside the truth's, for the same visits.

    - spread: per [Fe/H] bin (each on its own [Fe/H]), the robust sigma of [Mg/Fe] at fixed [Fe/H], for
      the method and for the truth;
    - separation: two_gaussian_separation of [Mg/Fe] minus its own mean trend over `overlap` (where the
      thin and thick discs overlap in [Fe/H]), method and truth;
    - detrended_slope: with each one's own mean trend [Mg/Fe]([Fe/H]) removed, the Theil-Sen slope of the
      method's detrended [Mg/Fe] against the truth's (1 = the structure at fixed [Fe/H] is measured,
      0 = only the mean trend is reproduced)."""
    feh, mgfe, feh_true, mgfe_true = (np.asarray(a, dtype=np.float64) for a in (feh, mgfe, feh_true, mgfe_true))
    ok = np.isfinite(feh) & np.isfinite(mgfe) & np.isfinite(feh_true) & np.isfinite(mgfe_true)
    feh, mgfe, feh_true, mgfe_true = feh[ok], mgfe[ok], feh_true[ok], mgfe_true[ok]
    out = {"n": int(ok.sum()), "bins": [float(b) for b in bins], "spread": [], "spread_truth": []}
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (feh >= lo) & (feh < hi)
        t = (feh_true >= lo) & (feh_true < hi)
        out["spread"].append(robust_sigma(mgfe[m]) if m.sum() >= 5 else float("nan"))
        out["spread_truth"].append(robust_sigma(mgfe_true[t]) if t.sum() >= 5 else float("nan"))
    if feh.size < 10:
        out.update(separation=float("nan"), separation_truth=float("nan"), detrended_slope=float("nan"))
        return out
    own, true_trend = trend(feh, mgfe), trend(feh_true, mgfe_true)
    d_pred, d_true = mgfe - own(feh), mgfe_true - true_trend(feh_true)
    m = (feh >= overlap[0]) & (feh < overlap[1])
    t = (feh_true >= overlap[0]) & (feh_true < overlap[1])
    out["separation"] = two_gaussian_separation(d_pred[m])["separation"]
    out["separation_truth"] = two_gaussian_separation(d_true[t])["separation"]
    out["detrended_slope"] = slope(d_pred, d_true)
    return out


def separation_ratio(feh_a, mgfe_a, feh_b, mgfe_b, star, overlap=DISC_OVERLAP, n_boot: int = 200,
                     seed: int = 0) -> dict[str, float]:
    """Disc separation (chemical_plane's) of method a over that of method b on the SAME visits, with its
    16-84 % interval from resampling the stars: {n, n_stars, ratio, lo, hi}. Each method's own mean trend is
    fitted once on all visits and kept in the resamples (the statistic's noise is the stars in the overlap).

    Why: "TSN's separation at least the fit's" read from two numbers of a ~150-star test split is a coin
    toss; the interval says whether a split resolves it."""
    return separation_ratios({"a": (feh_a, mgfe_a)}, feh_b, mgfe_b, star, overlap, n_boot, seed)["a"]


def separation_ratios(methods: dict, feh_ref, mgfe_ref, star, overlap=DISC_OVERLAP, n_boot: int = 200,
                      seed: int = 0) -> dict[str, dict[str, float]]:
    """separation_ratio of each of `methods` ({name: (feh, mgfe)}) over one reference on the same visits.
    The reference's separations (whole sample and every resample) are computed once per set of usable
    visits, not once per method."""
    ref = [np.asarray(v, dtype=np.float64).ravel() for v in (feh_ref, mgfe_ref)]
    star = np.asarray(star).ravel()

    def detrended(feh, mgfe):
        return mgfe - trend(feh, mgfe)(feh), (feh >= overlap[0]) & (feh < overlap[1])

    def separations(d, inside, row_sets):
        return np.array([two_gaussian_separation(d[rows][inside[rows]])["separation"] for rows in row_sets])

    ref_cache: dict[bytes, np.ndarray] = {}
    out = {}
    for name, (feh, mgfe) in methods.items():
        cols = [np.asarray(v, dtype=np.float64).ravel() for v in (feh, mgfe)]
        ok = np.all([np.isfinite(c) for c in cols + ref], axis=0)
        st = star[ok]
        res = {"n": int(ok.sum()), "n_stars": int(np.unique(st).size), "ratio": float("nan"), "lo": float("nan"),
               "hi": float("nan")}
        out[name] = res
        if ok.sum() < 10:
            continue
        row_sets = [np.arange(ok.sum()), *star_resamples(st, n_boot, seed)]
        key = ok.tobytes()
        if key not in ref_cache:  # [whole sample, resample 1, ...] of the reference on these visits
            ref_cache[key] = separations(*detrended(ref[0][ok], ref[1][ok]), row_sets)
        b = ref_cache[key]
        a = separations(*detrended(cols[0][ok], cols[1][ok]), row_sets)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)
        res["ratio"] = float(r[0])
        if np.isfinite(r[1:]).any():
            res["lo"], res["hi"] = (float(v) for v in np.nanpercentile(r[1:], [16, 84]))
    return out


# --- denoised spectra -------------------------------------------------------------------------------
# A denoised visit is judged against the star's noiseless spectrum where a simulator kept it (truth), and
# against the leave-one-out coadd of the star's other visits where there is none (real data).


def line_centres(truth: np.ndarray, good: np.ndarray, n: int = 10, min_depth: float = 0.15,
                 half_width: int = 3) -> np.ndarray:
    """Pixel indices of the `n` deepest absorption lines of one noiseless spectrum (local minima at least
    `min_depth` below the continuum, at least 2 * half_width + 1 pixels apart, good pixels only)."""
    t = np.where(good, np.asarray(truth, dtype=np.float64), np.inf)
    interior = np.arange(half_width, t.size - half_width)
    window = np.lib.stride_tricks.sliding_window_view(t, 2 * half_width + 1)
    is_min = (t[interior] == window.min(axis=1)) & (1.0 - t[interior] >= min_depth)
    cands = interior[is_min]
    order = cands[np.argsort(t[cands], kind="stable")]
    chosen: list[int] = []
    for c in order:
        if all(abs(c - k) > 2 * half_width for k in chosen):
            chosen.append(int(c))
        if len(chosen) == n:
            break
    return np.asarray(sorted(chosen), dtype=np.int64)


def spectrum_errors(spectra: dict, truth: np.ndarray, good: np.ndarray, n_lines: int = 10) -> dict:
    """Per row: RMS of each spectrum minus the truth over `good` pixels, and the mean fractional error of
    the line depth (1 - flux at the line centre) at the truth's `n_lines` deepest lines (negative = too
    shallow). `spectra`: {name: (N, L)} on the same pixels as truth (N, L) and good (N, L) bool.
    Returns {name: {"rms": (N,), "depth": (N,)}} (NaN where a row has no good pixel or no line)."""
    truth = np.asarray(truth, dtype=np.float64)
    good = np.asarray(good, dtype=bool) & np.isfinite(truth)
    out = {name: {"rms": np.full(truth.shape[0], np.nan), "depth": np.full(truth.shape[0], np.nan)} for name in spectra}
    for i in range(truth.shape[0]):
        g = good[i]
        if not g.any():
            continue
        lines = line_centres(truth[i], g, n_lines)
        depth_true = 1.0 - truth[i, lines]
        for name, s in spectra.items():
            row = np.asarray(s[i], dtype=np.float64)
            ok = g & np.isfinite(row)
            if ok.any():
                out[name]["rms"][i] = float(np.sqrt(np.mean((row[ok] - truth[i, ok]) ** 2)))
            use = np.isfinite(row[lines])
            if use.any():
                out[name]["depth"][i] = float(np.mean(((1.0 - row[lines]) - depth_true)[use] / depth_true[use]))
    return out


def binned_median(values, snr, edges=DEFAULT_SNR_EDGES) -> dict:
    """{bin name: {"n", "median"}} of the finite values per S/N bin."""
    values, snr = np.asarray(values, dtype=np.float64), np.asarray(snr, dtype=np.float64)
    out = {}
    for name, lo, hi in zip(snr_bin_labels(edges), edges[:-1], edges[1:]):
        v = values[(snr >= lo) & (snr < hi) & np.isfinite(values)]
        out[name] = {"n": int(v.size), "median": float(np.median(v)) if v.size else float("nan")}
    return out
