"""benchmarks/posthoc_label_decoder.py: the star-level labels a label decoder can learn from instead of the
survey's (`--train-labels network|blend`)."""


import benchscript
import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench():
    return benchscript.load("posthoc_label_decoder")


def _survey(seed=0, n_stars=400, n_vis=5):
    """Stars with a true label; the survey's label off by err_s (large for half the stars, as for faint
    stars); each visit's prediction off by sigma_v, its visit part."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(n_stars, 2))
    err_s = np.where(np.arange(n_stars) % 2 == 0, 0.1, 0.6)[:, None] * np.ones((1, 2))
    survey = truth + rng.normal(size=truth.shape) * err_s
    star = np.repeat(np.arange(n_stars), n_vis)
    sigma_v = np.full((star.size, 2), 0.5)
    out = {"labels": truth[star] + rng.normal(size=sigma_v.shape) * sigma_v, "sigma": sigma_v, "sigma_visit": sigma_v}
    return truth, survey, err_s, star, out


def test_network_labels_average_the_visits_and_the_blend_beats_both_sources(bench):
    truth, survey, err_s, star, out = _survey()
    uniq, net = bench.star_training_labels("network", out, star, survey, err_s)
    np.testing.assert_array_equal(uniq, np.arange(truth.shape[0]))
    for s in (0, 7, 123):  # equal visit sigmas: the plain mean of the star's visits
        np.testing.assert_allclose(net[s], out["labels"][star == s].mean(0), rtol=1e-12)
    _, blend = bench.star_training_labels("blend", out, star, survey, err_s)
    rms = lambda x: float(np.sqrt(np.mean((x - truth) ** 2)))
    # five visits at 0.5 average to 0.22: better than the survey's 0.1/0.6 mix (rms 0.43), and the
    # inverse-variance blend beats both (expected ~0.19)
    assert rms(net) < 0.8 * rms(survey)
    assert rms(blend) < 0.95 * min(rms(net), rms(survey))
    # where the survey is good (err 0.1) the blend stays near it; where it is poor, near the network's mean
    good, poor = np.arange(0, truth.shape[0], 2), np.arange(1, truth.shape[0], 2)
    assert np.abs(blend[good] - survey[good]).mean() < np.abs(blend[good] - net[good]).mean()
    assert np.abs(blend[poor] - net[poor]).mean() < np.abs(blend[poor] - survey[poor]).mean()


def test_an_unknown_kind_is_refused(bench):
    _, survey, err_s, star, out = _survey(n_stars=4)
    with pytest.raises(ValueError, match="'survey'"):
        bench.star_training_labels("survey", out, star, survey, err_s)
