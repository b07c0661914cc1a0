"""Post-hoc calibration of the predicted label sigmas on the validation split: a visit part and a star part.

A visit's error against the truth has two parts. One changes from visit to visit (photon noise, the
visit's bad pixels, its continuum): the repeat visits of a star disagree by it. The other is common to
all visits of a star (what the network gets wrong for that kind of star): repeat visits share it, so it
cancels in their difference and does not average down when visits are combined. One sigma cannot pass
both tests a survey pipeline uses on real data (z-scores against the reference labels AND from repeat
pairs), so the calibration splits it:

    sigma_visit = a_k * (S/N / 30)^c_k * sigma_net   a_k, c_k per label, from the repeat pairs:
                                                    z = (p_i - p_j) / sqrt(sigma_visit_i^2 + sigma_visit_j^2);
                                                    c_k makes the scale of z the same in the four S/N
                                                    quartiles of the pairs, a_k makes it 1
    sigma_star  = s_k,bin * h_k(labels)             s_k,bin per label and visit-S/N bin (edges 0, 20, 40, 60,
                                                    inf): the value that makes the scale of (pred - label) /
                                                    sqrt(sigma_visit^2 + sigma_star^2 + label_err^2) equal 1
                                                    (0 if already <= 1);
                                                    h_k = max(f, exp((x . b_k - o_k) / 2)), x the twin's
                                                    predicted labels standardised on the val split: the shape
                                                    of the star part over the stars' kinds, b_k by the
                                                    likelihood of the val residuals, o_k so that the exp has
                                                    geometric mean 1 there, f the floor (1 by default:
                                                    fit_calibration's shape_floor, stored with the shape)
    sigma       = sqrt(sigma_visit^2 + sigma_star^2)

The S/N term is there because the network's own sigma does not follow the photon noise: measured on the
standard synthetic survey (1500 stars), repeat-pair z-scores with one scale had a robust std of 1.3-1.9
at S/N 10-20 and 0.45-0.7 at S/N >= 40, a mixture whose heavy tails no single scale calibrates
(docs/evaluation.md). `label_err` (the survey's own error of the reference label, when the store has it)
is taken out of the star part: the labels the calibration is fitted against are noisy too, and sigma is
meant as the error against the true value. Against the reference labels, compare with
sqrt(sigma^2 + label_err^2) (pairspec evaluate does).

"The scale" of z is the statistic `mid_clip5` (the default since 2026-12-07): the geometric mean of the
coverage scale (the 68.27th percentile of |z|, so that 68 % of the z-scores fall within +-1) and the root
mean square of the z-scores below 5 coverage scales. Both are 1 for unit-Gaussian z. The network's z-scores
have tails heavier than a Gaussian's: matching the coverage alone (the default before, "coverage") left
their std at 1.11-1.14 for some labels of the paper table's checkpoints; matching the rms alone pushes the
68 % coverage above 0.73. The geometric mean keeps both inside the issue's target on 3 of 4 checkpoints
where the coverage scale did on 2 (docs/evaluation.md; benchmarks/calibration_split.py --scales). The clip
at 5 coverage scales keeps the few catastrophic outliers every survey has from setting the rms (a
MAD-matched scale, tried before both, left heavy-tailed z-scores with a 68 % coverage of 0.60-0.66).
The shape h_k is there because what the network gets wrong for a star depends on the kind of star. Measured
on the paper table's survey (seed 426, test split, 2026-12-07): with a star part flat within each S/N bin, the
z-std of log g against the truth was 1.33 for the most metal-poor fifth of the stars and 0.75 for the most
metal-rich; of Teff, 0.79 for the coolest fifth and 1.45 for the hottest. Such a mixture is peaked (robust
std 0.86-0.87 at a z-std of ~1.0) and puts the 68 % coverage against the truth above 0.73 whatever the
scale; the shaped star part brings the coverage inside the target (docs/evaluation.md). The shape only
raises the star part (the floor of 1, STAR_SHAPE_FLOOR): the calibration sees errors against the survey's
labels only, and a kind of star whose residuals against them are small may share the survey's own error
(the network learned from those labels). Measured on the second paper-table seed (427): without the floor
the star part of [Mg/Fe] for the hottest fifth of the stars fell from 0.020 to 0.005 dex, and their z-std
against the truth rose to 1.77 (1.26 flat). `shaped=False` fits the flat star part (pairspec's until
2026-12-07). The shape's coefficients are bounded (|b| <= STAR_SHAPE_MAX_COEF per standard deviation of a label), the standardised
labels clipped at +-STAR_SHAPE_MAX_X, and a label needs STAR_SHAPE_ROWS_PER_PARAM val twins per coefficient
(else its h is 1). A calibration with a shape needs the predicted labels wherever it is applied
(split_sigma(..., labels)): a ValueError says so when they are missing.
A bin with fewer than `min_count` usable twins falls back to the label's global value; with
fewer than `min_count` repeat pairs the visit part is the one-part scale (method "one-part"; "mad" in
older checkpoints), with fewer than 4 x `min_count` the S/N exponent c_k is 0. Combining the visits of a
star (catalog.combine_visits): weights w_i = 1/sigma_visit_i^2, error sqrt(1/sum w_i + sum w_i sigma_star_i^2
/ sum w_i); with a one-part calibration the split is unknown and the error is sum w_i sigma_i / sum w_i.

The calibration is a plain dict stored in the checkpoint:
    {"method": "visit+star" or "one-part", "statistic": "mid_clip5" | "coverage" | ... (STATISTICS),
     "label_names": [...], "scale": [K] (a_k),
     "visit_snr_slope": [K] (c_k), "visit_snr_ref": 30.0, "count": [K], "pair_count": [K], "min_count": int,
     "snr_edges": [...] or None, "star_sigma": [K], "star_sigma_by_snr": [[K] per bin] or None,
     "count_by_snr": [[K] per bin] or None, "scale_by_snr": [[K] per bin] (one-part only) or None,
     "star_shape": {"center": [K], "scale": [K], "coef": [[K] or None per label], "offset": [K], "floor": 1.0}
     or None}
Checkpoints written before the S/N exponent have no "visit_snr_slope" (read as 0); those written before
2026-12-07 have no "statistic" (theirs is "coverage") and no "star_shape" (flat). A stored calibration is a table of numbers: it is
applied as it was fitted, whatever the default statistic is now.
"""

from __future__ import annotations

import itertools

import numpy as np

from pairspec.metrics import DEFAULT_SNR_EDGES as SNR_EDGES
from pairspec.metrics import repeat_pairs

COVERAGE = 0.6827  # P(|z| < 1) for a unit Gaussian
SNR_REF = 30.0
_SLOPES = np.round(np.arange(-2.0, 1.0001, 0.05), 2)  # the S/N exponents tried for the visit part


def coverage_scale(z) -> float:
    """The 68.27th percentile of |z| over the finite values (1 for unit-Gaussian z; NaN if none)."""
    z = np.asarray(z, dtype=np.float64)
    z = np.abs(z[np.isfinite(z)])
    return float(np.quantile(z, COVERAGE)) if z.size else float("nan")


def rms_scale(z, clip: float | None = None) -> float:
    """Root mean square of the finite z; `clip`: only |z| below clip x coverage_scale(z) (NaN if none)."""
    z = np.asarray(z, dtype=np.float64)
    z = np.abs(z[np.isfinite(z)])
    if clip is not None and z.size:
        z = z[z < clip * coverage_scale(z)]
    return float(np.sqrt(np.mean(z * z))) if z.size else float("nan")


def mid_clip5_scale(z) -> float:
    """sqrt(coverage_scale(z) * rms_scale(z, clip=5)): the calibration's default statistic."""
    return float(np.sqrt(coverage_scale(z) * rms_scale(z, 5.0)))


# The statistics of the z-scores a calibration can make 1, by the name stored in it.
STATISTICS = {
    "coverage": coverage_scale,
    "rms": rms_scale,
    "rms_clip5": lambda z: rms_scale(z, 5.0),
    "mid": lambda z: float(np.sqrt(coverage_scale(z) * rms_scale(z))),
    "mid_clip5": mid_clip5_scale,
}
DEFAULT_STATISTIC = "mid_clip5"


def _star_term(resid: np.ndarray, sv: np.ndarray, scale=mid_clip5_scale, shape=None) -> float:
    """The s >= 0 with scale(resid / sqrt(sv^2 + (s shape)^2)) = 1 (bisection; 0 when sv alone suffices);
    `shape` (per row, star_shape's factor) None = 1."""
    h = np.ones_like(resid) if shape is None else np.asarray(shape, dtype=np.float64)
    ok = np.isfinite(resid) & np.isfinite(sv) & (sv > 0) & np.isfinite(h)
    r, v, h = resid[ok], sv[ok], h[ok]
    if r.size == 0 or scale(r / v) <= 1.0:
        return 0.0
    lo, hi = 0.0, max(scale(r / np.maximum(h, 1e-3)) * 2.0, 1e-12)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if scale(r / np.sqrt(v * v + (mid * h) ** 2)) > 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


STAR_SHAPE_ROWS_PER_PARAM = 20  # val twins per coefficient a label's star-part shape needs (else no shape)
STAR_SHAPE_MAX_COEF = 3.0  # |coefficient| bound: the variance changes by at most e^3 per standard deviation
STAR_SHAPE_MAX_X = 4.0  # standardised labels are clipped here, so that the shape does not extrapolate
STAR_SHAPE_FLOOR = 1.0  # the shape only raises the star part (see the module docstring)


def _shape_features(labels, center, scale) -> np.ndarray:
    """(N, K) standardised predicted labels, clipped to +-STAR_SHAPE_MAX_X; NaN (a missing label) -> 0."""
    x = (np.asarray(labels, dtype=np.float64) - np.asarray(center)) / np.asarray(scale)
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -STAR_SHAPE_MAX_X, STAR_SHAPE_MAX_X)


def _fit_star_shape(resid, sv, x, scale=mid_clip5_scale) -> tuple[np.ndarray, float] | None:
    """(coef (K,), offset) of log star variance = x . coef + b, by the Gaussian likelihood of
    resid ~ N(0, sv^2 + exp(x . coef + b)) (L-BFGS, coefficients bounded by STAR_SHAPE_MAX_COEF; rows beyond
    5 coverage scales of the shape-free z dropped as outliers); offset = the mean of x . coef over the
    rows, so that the shape exp((x . coef - offset) / 2) has geometric mean 1 there. None when there are
    fewer than STAR_SHAPE_ROWS_PER_PARAM rows per coefficient or no star part to shape."""
    from scipy.optimize import minimize

    ok = np.isfinite(resid) & np.isfinite(sv) & (sv > 0)
    r, v2, x = resid[ok], sv[ok] ** 2, x[ok]
    n_par = x.shape[1] + 1
    if r.size < STAR_SHAPE_ROWS_PER_PARAM * n_par:
        return None
    s0 = _star_term(r, np.sqrt(v2), scale)  # the flat star part: the start and the outlier clip
    if not s0 > 0:
        return None
    z0 = r / np.sqrt(v2 + s0 * s0)
    keep = np.abs(z0) < 5.0 * coverage_scale(z0)
    r2, v2, f = r[keep] ** 2, v2[keep], np.column_stack([x[keep], np.ones(keep.sum())])

    def nll(b):
        t2 = np.exp(np.clip(f @ b, -700, 700))
        var = v2 + t2
        grad = 0.5 * ((1.0 / var - r2 / var**2) * t2) @ f
        return 0.5 * np.sum(r2 / var + np.log(var)) / r2.size, grad / r2.size

    b0 = np.zeros(n_par)
    b0[-1] = 2.0 * np.log(s0)
    bounds = [(-STAR_SHAPE_MAX_COEF, STAR_SHAPE_MAX_COEF)] * (n_par - 1) + [(None, None)]
    res = minimize(nll, b0, jac=True, method="L-BFGS-B", bounds=bounds)
    if not np.all(np.isfinite(res.x)):
        return None
    coef = res.x[:-1]
    return coef, float(np.mean(x @ coef))


def star_shape(labels, calibration: dict | None) -> np.ndarray | None:
    """(N, K) factor of the star part of each twin from its predicted labels (calibration["star_shape"]:
    max(floor, exp((x . coef_k - offset_k) / 2)), x the standardised labels, floor as stored (1); 1 for a
    label without a shape), or None when the calibration has no shape."""
    shape = (calibration or {}).get("star_shape")
    if not shape:
        return None
    if labels is None:
        raise ValueError("this calibration's star part depends on the predicted labels (calibration['star_shape']): "
                         "pass the labels the sigmas belong to")
    x = _shape_features(labels, shape["center"], shape["scale"])
    out = np.ones(x.shape)
    for k, (coef, off) in enumerate(zip(shape["coef"], shape["offset"])):
        if coef is not None:
            out[:, k] = np.exp(0.5 * (x @ np.asarray(coef, dtype=np.float64) - off))
    return np.maximum(out, float(shape.get("floor", STAR_SHAPE_FLOOR)))


def snr_factor(snr, slope, ref: float = SNR_REF) -> np.ndarray:
    """(N, K) factor (S/N / ref)^slope of the visit part; 1 where S/N is NaN or the slope is 0."""
    snr = np.atleast_1d(np.asarray(snr, dtype=np.float64))
    slope = np.asarray(slope, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_snr = np.log(np.clip(snr, 1.0, None) / ref)
    log_snr = np.where(np.isfinite(log_snr), log_snr, 0.0)
    return np.exp(log_snr[:, None] * slope[None, :])


def _visit_part(d, sa, sb, snr_a, snr_b, min_count: int, scale=mid_clip5_scale) -> tuple[float, float]:
    """(a, c) for one label from its repeat pairs: differences d, network sigmas sa, sb, the visits' S/N."""
    candidates = [0.0]
    if snr_a is not None and d.size >= 4 * min_count:
        low = np.fmin(snr_a, snr_b)  # a pair's S/N: its noisier visit's
        if np.isfinite(low).sum() >= 4 * min_count:
            candidates = _SLOPES
            quart = np.searchsorted(np.nanquantile(low, [0.25, 0.5, 0.75]), low, side="right")
            quart[~np.isfinite(low)] = -1  # pairs without an S/N count in the overall scale only
    # log(S/N / ref) of each visit, once: the factor of exponent c is exp(c * log)
    la, lb = (0.0, 0.0) if len(candidates) == 1 else (np.log(snr_factor(s, [1.0])[:, 0]) for s in (snr_a, snr_b))
    best = (np.inf, 1.0, 0.0)
    for c in candidates:
        z = d / np.sqrt((sa * np.exp(c * la)) ** 2 + (sb * np.exp(c * lb)) ** 2)
        a = scale(z)
        if not a > 0:
            continue
        cost = 0.0 if len(candidates) == 1 else sum(np.log(scale(z[quart == i] / a)) ** 2 for i in range(4))
        if cost < best[0]:
            best = (cost, a, float(c))
    return best[1], best[2]


def fit_calibration(pred, sigma, labels, snr=None, star=None, label_names=None, snr_edges=SNR_EDGES,
                    min_count: int = 30, label_err=None, scale=DEFAULT_STATISTIC, shaped: bool = True,
                    shape_floor: float = STAR_SHAPE_FLOOR) -> dict:
    """pred, sigma, labels (N, K) physical units, NaN label = missing; snr (N,) visit S/N or None; star (N,)
    the star of each twin (for the repeat pairs) or None (then the one-part calibration); label_err (N, K)
    the reference labels' own errors (NaN = unknown, taken as 0) or None. `scale` is the statistic of the
    z-scores that the calibration makes 1: a name in STATISTICS (stored in the result) or a function of
    the z-scores (stored as its __name__; benchmarks/calibration_split.py --scales compares them).
    `shaped` fits the star part's shape over the predicted labels, which never goes below `shape_floor`
    (stored with it; benchmarks/calibration_split.py --floors compares floors)."""
    if not (np.isfinite(shape_floor) and shape_floor >= 0):
        raise ValueError(f"shape_floor must be a number >= 0, got {shape_floor!r}")
    if isinstance(scale, str):
        if scale not in STATISTICS:
            raise ValueError(f"unknown calibration statistic {scale!r}; known: {', '.join(STATISTICS)}")
        statistic, scale = scale, STATISTICS[scale]
    else:
        statistic = next((n for n, f in STATISTICS.items() if f is scale), getattr(scale, "__name__", "custom"))
    pred, sigma, labels = (np.asarray(a, dtype=np.float64) for a in (pred, sigma, labels))
    K = pred.shape[1]
    resid = pred - labels
    z = resid / sigma
    z[~np.isfinite(z)] = np.nan
    count = np.isfinite(z).sum(0)
    lerr = np.zeros_like(pred) if label_err is None else np.nan_to_num(np.asarray(label_err, np.float64), nan=0.0)
    snr_arr = None if snr is None else np.asarray(snr, dtype=np.float64)
    one_part = np.ones(K)
    for k in range(K):
        if count[k] >= min_count:  # too few val twins: leave the network's sigma as it is
            one_part[k] = scale(z[:, k])
    one_part[~(one_part > 0)] = 1.0  # a degenerate fit (all z equal) must not zero the sigmas

    visit_scale, slope, pair_count = one_part.copy(), np.zeros(K), np.zeros(K, dtype=int)
    method = "one-part"
    if star is not None:
        a, b = repeat_pairs(np.asarray(star))
        for k in range(K):
            d = pred[a, k] - pred[b, k]
            ok = np.isfinite(d) & (sigma[a, k] > 0) & (sigma[b, k] > 0)
            pair_count[k] = int(ok.sum())
            if pair_count[k] >= min_count:
                aa, bb = a[ok], b[ok]
                visit_scale[k], slope[k] = _visit_part(
                    d[ok], sigma[aa, k], sigma[bb, k], None if snr_arr is None else snr_arr[aa],
                    None if snr_arr is None else snr_arr[bb], min_count, scale)
                method = "visit+star"
    sv = sigma * visit_scale * (1.0 if snr_arr is None else snr_factor(snr_arr, slope))
    sv_ref = np.sqrt(sv**2 + lerr**2)  # what the residuals against the noisy reference labels hold beside the star part
    shape_meta, h = None, np.ones_like(pred)
    if method == "visit+star" and shaped:
        with np.errstate(all="ignore"):
            center, spread = np.nanmean(pred, axis=0), np.nanstd(pred, axis=0)
        center = np.where(np.isfinite(center), center, 0.0)
        spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
        x = _shape_features(pred, center, spread)
        fits = [_fit_star_shape(resid[:, k], sv_ref[:, k], x, scale) if count[k] >= min_count else None
                for k in range(K)]
        if any(f is not None for f in fits):
            shape_meta = {"center": center.tolist(), "scale": spread.tolist(),
                          "coef": [None if f is None else f[0].tolist() for f in fits],
                          "offset": [0.0 if f is None else f[1] for f in fits], "floor": float(shape_floor)}
            h = star_shape(pred, {"star_shape": shape_meta})
    star_sigma = np.zeros(K)
    if method == "visit+star":
        for k in range(K):
            if count[k] >= min_count:
                star_sigma[k] = _star_term(resid[:, k], sv_ref[:, k], scale, h[:, k])
    cal = {"method": method, "statistic": statistic, "label_names": list(label_names or []),
           "scale": visit_scale.tolist(),
           "visit_snr_slope": slope.tolist(), "visit_snr_ref": SNR_REF,
           "count": count.astype(int).tolist(), "pair_count": np.asarray(pair_count).astype(int).tolist(),
           "min_count": int(min_count), "snr_edges": None, "star_sigma": star_sigma.tolist(),
           "star_sigma_by_snr": None, "scale_by_snr": None, "count_by_snr": None, "star_shape": shape_meta}
    if snr_arr is None or snr_edges is None:
        return cal
    edges = list(snr_edges)
    by_bin, counts, scale_bins = [], [], []
    for lo, hi in itertools.pairwise(edges):
        rows = (snr_arr >= lo) & (snr_arr < hi)
        n = np.isfinite(z[rows]).sum(0)
        s = star_sigma.copy()
        sc = one_part.copy()
        for k in range(K):
            if n[k] >= min_count:
                if method == "visit+star":
                    s[k] = _star_term(resid[rows, k], sv_ref[rows, k], scale, h[rows, k])
                else:
                    sc[k] = scale(z[rows, k])
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


def split_sigma(sigma, snr, calibration: dict | None, labels=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sigma, sigma_visit, sigma_star), each (N, K), from the network's sigma (N, K), the visits' S/N and,
    for a calibration with a star-part shape, the predicted labels (N, K) the sigmas belong to."""
    sigma = np.asarray(sigma, dtype=np.float64)
    snr = np.atleast_1d(np.asarray(snr, dtype=np.float64))
    K = sigma.shape[1]
    if not calibration:
        return sigma, sigma, np.zeros_like(sigma)
    scale = np.asarray(calibration["scale"], dtype=np.float64)
    visit = sigma * _bin_values(calibration, "scale_by_snr", snr, scale)
    slope = calibration.get("visit_snr_slope")
    if slope is not None and np.any(np.asarray(slope) != 0):
        visit = visit * snr_factor(snr, slope, float(calibration.get("visit_snr_ref", SNR_REF)))
    star = _bin_values(calibration, "star_sigma_by_snr", snr, np.asarray(calibration.get("star_sigma") or [0.0] * K))
    shape = star_shape(labels, calibration)
    if shape is not None:
        star = star * shape
    return np.sqrt(visit**2 + star**2), visit, star


def apply_calibration(sigma, snr, calibration: dict | None, labels=None) -> np.ndarray:
    """The calibrated total sigma (see split_sigma)."""
    return split_sigma(sigma, snr, calibration, labels)[0]


def cross_calibrate(pred, sigma, labels, snr, star, label_names=None, label_err=None, folds: int = 2,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Calibrate the sigmas of a method that has no validation predictions of its own (a visit-level fit run
    on test visits only) the same way as TSN's, without letting a star's own residuals set its scale: the
    stars are dealt into `folds` groups, and each group's (sigma, sigma_visit) comes from fit_calibration on
    the other groups' visits (against the same reference labels, with their label_err). Rows with no finite
    prediction keep NaN. Returns (sigma, sigma_visit, the calibration of each fold)."""
    pred, sigma, labels = (np.asarray(a, dtype=np.float64) for a in (pred, sigma, labels))
    snr, star = np.asarray(snr, dtype=np.float64), np.asarray(star)
    total, visit = np.full_like(sigma, np.nan), np.full_like(sigma, np.nan)
    have = np.flatnonzero(np.isfinite(pred).any(axis=1))
    stars = np.unique(star[have])
    group = dict(zip(stars, np.random.default_rng(seed).permutation(stars.size) % folds))
    fold = np.array([group[s] for s in star[have]], dtype=int)
    lerr = None if label_err is None else np.asarray(label_err, dtype=np.float64)
    cals = []
    for f in range(folds):
        fit_rows, out_rows = have[fold != f], have[fold == f]
        if out_rows.size == 0:
            continue
        cal = fit_calibration(pred[fit_rows], sigma[fit_rows], labels[fit_rows], snr=snr[fit_rows],
                              star=star[fit_rows], label_names=label_names,
                              label_err=None if lerr is None else lerr[fit_rows])
        total[out_rows], visit[out_rows], _ = split_sigma(sigma[out_rows], snr[out_rows], cal, pred[out_rows])
        cals.append(cal)
    return total, visit, cals
