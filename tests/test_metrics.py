import math

import numpy as np
import pytest

from pairspec import metrics as M


def test_robust_sigma_and_bias_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    # median 3, |x-3| = 2,1,0,1,97 -> MAD 1
    assert M.robust_sigma(x) == pytest.approx(1.4826)
    assert M.bias(x) == pytest.approx(3.0)
    assert math.isnan(M.robust_sigma([np.nan]))
    g = np.random.default_rng(1).normal(0.5, 2.0, 200_000)
    assert M.robust_sigma(g) == pytest.approx(2.0, rel=0.02)


def test_snr_bins_and_binned_scatter():
    assert M.snr_bin_labels() == ["<20", "20-40", "40-60", ">=60"]
    snr = np.array([10, 10, 10, 30, 30, 30, 50, 70, 70, 70])
    ref = np.zeros(10)
    pred = np.array([1.0, 2.0, 3.0, -1.0, 0.0, 1.0, 5.0, 0.0, 0.0, np.nan])
    out = M.binned_scatter(pred, ref, snr)
    assert out["<20"] == {"n": 3, "sigma": pytest.approx(1.4826), "bias": 2.0}
    assert out["20-40"]["bias"] == 0.0 and out["20-40"]["sigma"] == pytest.approx(1.4826)
    assert out["40-60"]["n"] == 1 and out["40-60"]["bias"] == 5.0
    assert out[">=60"]["n"] == 2 and out[">=60"]["sigma"] == 0.0


def test_zscore_stats_calibrated_and_overconfident():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=50_000)
    sig = rng.uniform(0.5, 2.0, ref.size)
    pred = ref + sig * rng.normal(size=ref.size)
    s = M.zscore_stats(pred, sig, ref)
    assert s["z_std"] == pytest.approx(1.0, abs=0.02)
    assert s["cov68"] == pytest.approx(0.683, abs=0.01)
    assert s["cov95"] == pytest.approx(0.950, abs=0.005)
    over = M.zscore_stats(pred, sig / 2, ref)  # sigmas too small by 2 -> z std 2
    assert over["z_std_robust"] == pytest.approx(2.0, rel=0.03)
    assert over["cov68"] < 0.45


def test_pair_zscores_and_repeat_pairs():
    z = M.pair_zscores([1.0, 0.0], [3.0, 1.0], [-3.0, 0.0], [0.0, 1.0])
    assert z[0] == pytest.approx(4.0 / 3.0) and z[1] == 0.0
    a, b = M.repeat_pairs([5, 2, 5, 2, 5, 7])
    pairs = sorted(zip(a.tolist(), b.tolist()))
    assert pairs == [(0, 2), (1, 3)]  # star 5 has three visits: one pair, visit 4 is left over
    rng = np.random.default_rng(3)
    truth = rng.normal(size=20_000)
    sa, sb = 0.3, 0.6
    s = M.pair_zscore_stats(truth + sa * rng.normal(size=truth.size), np.full(truth.size, sa),
                            truth + sb * rng.normal(size=truth.size), np.full(truth.size, sb))
    assert s["z_std"] == pytest.approx(1.0, abs=0.03)


def test_slope_detects_shrinkage_and_ignores_outliers():
    rng = np.random.default_rng(4)
    ref = rng.uniform(-1, 1, 3000)
    pred = 0.7 * ref + 0.1 + 0.02 * rng.normal(size=ref.size)
    pred[:100] = 50.0  # gross outliers
    assert M.slope(pred, ref) == pytest.approx(0.7, abs=0.02)
    assert M.slope([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]) == pytest.approx(1.0)


def test_cluster_dispersion():
    vals = np.array([0.0, 0.1, -0.1, 1.0, 1.2, 0.8, 5.0, 5.0, 9.0])
    ids = np.array(["A", "A", "A", "B", "B", "B", "C", "C", ""])
    out = M.cluster_dispersion(vals, ids)
    assert out["n_clusters"] == 2  # C has 2 members, "" is the field
    assert out["clusters"]["A"]["sigma"] == pytest.approx(0.14826)
    assert out["clusters"]["B"]["sigma"] == pytest.approx(0.29652)
    assert out["mean_sigma"] == pytest.approx((0.14826 + 0.29652) / 2)
    ints = M.cluster_dispersion(vals, np.array([1, 1, 1, 2, 2, 2, -1, -1, -1]))
    assert ints["n_clusters"] == 2


def test_recon_chi2():
    t = np.ones((2, 4))
    d = np.array([[1.1, 0.9, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    w = np.array([[100.0, 100.0, 100.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    chi = M.recon_chi2(d, t, w)
    assert chi[0] == pytest.approx(2.0 / 3.0)  # (1 + 1 + 0) / 3 good pixels
    assert math.isnan(chi[1])


def test_cn_age_precision_scales_with_cn_noise():
    rng = np.random.default_rng(5)
    n = 4000
    mass = rng.uniform(0.9, 2.2, n)
    feh = rng.normal(-0.1, 0.2, n)
    cn = -0.2 - 0.4 * (mass - 1.0) + 0.1 * feh  # deeper dredge-up for heavier giants
    coef = M.fit_mass_from_cn(cn, feh, mass)
    np.testing.assert_allclose(M.mass_from_cn(cn, feh, coef), mass, atol=1e-8)
    age = M.age_from_mass(mass, feh)
    assert M.age_from_mass(1.0, 0.0) == pytest.approx(10.0)
    assert M.cn_age_precision(cn, feh, age, coef) < 1e-6
    sig = []
    for noise in (0.02, 0.05, 0.1):
        sig.append(M.cn_age_precision(cn + noise * rng.normal(size=n), feh, age, coef))
    assert sig[0] < sig[1] < sig[2]
    # linear propagation: dM = d[C/N] / 0.4, dt = 2.5 t / M dM
    pred = M.robust_sigma(2.5 * age / mass * (0.05 / 0.4) * rng.normal(size=n))
    assert sig[1] == pytest.approx(pred, rel=0.2)


def test_sigma_ratio_interval_covers_the_true_ratio_and_resamples_stars():
    rng = np.random.default_rng(3)
    n_star, per = 400, 4
    star = np.repeat(np.arange(n_star), per)
    # a star part shared by the star's visits plus a visit part: method a has 0.8x method b's total noise
    shared = rng.normal(size=n_star)[star]
    b = 1.0 * (0.6 * shared + 0.8 * rng.normal(size=star.size))
    a = 0.8 * (0.6 * shared + 0.8 * rng.normal(size=star.size))
    r = M.sigma_ratio(a, b, star, n_boot=300)
    assert r["n"] == star.size and r["n_stars"] == n_star
    assert r["lo"] < r["ratio"] < r["hi"]
    assert r["lo"] < 0.8 < r["hi"] and r["hi"] - r["lo"] < 0.15
    # NaN in either method drops the visit from both; a few stars give a wide interval
    a2 = a.copy()
    a2[:8] = np.nan
    assert M.sigma_ratio(a2, b, star)["n"] == star.size - 8
    few = star < 12
    r_few = M.sigma_ratio(a[few], b[few], star[few])
    assert r_few["hi"] - r_few["lo"] > r["hi"] - r["lo"]
    assert math.isnan(M.sigma_ratio(a[:1], b[:1], star[:1])["ratio"])


def _two_discs(rng, n_star, per):
    """A thin and a thick disc: [Mg/Fe] = a shared trend in [Fe/H] plus 0 or 0.15 dex, per star."""
    star = np.repeat(np.arange(n_star), per)
    feh = rng.uniform(-0.8, 0.0, n_star)[star]
    thick = (rng.random(n_star) < 0.4)[star]
    mgfe = 0.05 - 0.2 * feh + 0.15 * thick + 0.02 * rng.normal(size=n_star)[star]
    return star, feh, mgfe


def test_separation_ratio_sees_a_shrunk_plane_and_agrees_with_chemical_plane():
    rng = np.random.default_rng(5)
    star, feh, mgfe = _two_discs(rng, 300, 3)
    trend = 0.05 - 0.2 * feh
    fit = mgfe + 0.02 * rng.normal(size=star.size)  # measures each visit
    shrunk = trend + 0.4 * (mgfe - trend) + 0.02 * rng.normal(size=star.size)  # pulled to the mean trend
    r = M.separation_ratio(feh, shrunk, feh, fit, star, n_boot=100)
    assert r["n"] == star.size and r["n_stars"] == 300
    assert r["lo"] <= r["ratio"] <= r["hi"] < 1.0
    # the full-sample ratio is the ratio of chemical_plane's separations on the same visits
    a = M.chemical_plane(feh, shrunk, feh, mgfe)["separation"]
    b = M.chemical_plane(feh, fit, feh, mgfe)["separation"]
    assert r["ratio"] == pytest.approx(a / b, rel=1e-9)
    # a method against itself: every resample gives exactly 1
    same = M.separation_ratio(feh, fit, feh, fit, star, n_boot=20)
    assert same["ratio"] == same["lo"] == same["hi"] == pytest.approx(1.0)
    # fewer stars, wider interval; too few visits, no number
    few = star < 60
    r_few = M.separation_ratio(feh[few], shrunk[few], feh[few], fit[few], star[few], n_boot=100)
    assert r_few["hi"] - r_few["lo"] > r["hi"] - r["lo"]
    assert math.isnan(M.separation_ratio(feh[:5], fit[:5], feh[:5], fit[:5], star[:5])["ratio"])


def test_separation_ratios_of_several_methods_match_one_at_a_time():
    rng = np.random.default_rng(6)
    star, feh, mgfe = _two_discs(rng, 200, 3)
    fit = mgfe + 0.02 * rng.normal(size=star.size)
    noisy = mgfe + 0.04 * rng.normal(size=star.size)
    holed = fit + 0.01 * rng.normal(size=star.size)
    holed[:30] = np.nan  # another set of usable visits: the reference is recomputed on it
    both = M.separation_ratios({"noisy": (feh, noisy), "holed": (feh, holed)}, feh, fit, star, n_boot=50)
    assert both["noisy"] == M.separation_ratio(feh, noisy, feh, fit, star, n_boot=50)
    assert both["holed"] == M.separation_ratio(feh, holed, feh, fit, star, n_boot=50)
    assert both["holed"]["n"] == star.size - 30 and both["noisy"]["ratio"] < 1.0
