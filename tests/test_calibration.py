"""The two-part sigma calibration: a visit part that repeat pairs check and a star part they cannot see."""

import numpy as np
import pytest

from pairspec.calibration import fit_calibration, split_sigma
from pairspec.metrics import pair_zscore_stats, repeat_pairs, zscore_stats


def _twins(n_star, seed, star_err=30.0):
    """4 visits per star: error = star part (shared, sd star_err) + visit part (sd 2 x the net's sigma)."""
    rng = np.random.default_rng(seed)
    star = np.repeat(np.arange(n_star), 4)
    snr = rng.uniform(10, 100, star.size)
    net_sigma = (600.0 / snr)[:, None]  # the network's sigma follows the noise, but half too small
    truth = rng.uniform(4000, 6000, n_star)[star][:, None]
    pred = truth + star_err * rng.normal(size=(n_star, 1))[star] + 2 * net_sigma * rng.normal(size=(star.size, 1))
    return pred, net_sigma, truth, snr, star


def test_visit_and_star_parts_pass_both_tests():
    cal = fit_calibration(*_twins(600, 0), label_names=["teff"])
    assert cal["method"] == "visit+star"
    assert cal["scale"][0] == pytest.approx(2.0, rel=0.08)  # pairs see the visit noise only
    assert 0.8 * 30 < np.median(np.asarray(cal["star_sigma_by_snr"])[:, 0]) < 1.2 * 30
    pred, net, truth, snr, star = _twins(600, 1)  # fresh twins: the calibration must generalise
    total, visit, star_part = split_sigma(net, snr, cal)
    assert np.allclose(total**2, visit**2 + star_part**2)
    z_truth = zscore_stats(pred[:, 0], total[:, 0], truth[:, 0])
    a, b = repeat_pairs(star)
    z_pairs = pair_zscore_stats(pred[a, 0], visit[a, 0], pred[b, 0], visit[b, 0])
    for z in (z_truth, z_pairs):
        assert 0.9 < z["z_std_robust"] < 1.1 and 0.63 < z["cov68"] < 0.73
    # the one-part sigma cannot pass the pair test: it folds the shared star error into each visit
    one = fit_calibration(pred, net, truth, snr=snr, label_names=["teff"])
    old = split_sigma(net, snr, one)[0]
    assert pair_zscore_stats(pred[a, 0], old[a, 0], pred[b, 0], old[b, 0])["z_std_robust"] < 0.85


def test_no_star_part_when_visits_explain_everything():
    pred, net, truth, snr, star = _twins(800, 2, star_err=0.0)
    cal = fit_calibration(pred, net, truth, snr=snr, star=star)
    visit = split_sigma(net, snr, cal)[1]
    # only sampling noise of the robust scales is left to explain: a star term far below the visit term
    assert cal["star_sigma"][0] < 0.25 * float(np.median(visit))
