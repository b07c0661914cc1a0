"""C/N ages in evaluate (pairspec.evaluate_cn): a method whose [C/N] carries more of the truth gives ages
closer to the seismic ones; a masses table that cannot be used is a clear error naming it."""

import numpy as np
import pytest
from astropy.table import Table

from pairspec.evaluate_cn import cn_age_metrics, read_masses

NAMES = ["teff", "logg", "fe_h", "c_fe", "n_fe"]


def _population(n_star=400, n_vis=4, seed=0):
    rng = np.random.default_rng(seed)
    mass = rng.uniform(0.9, 2.2, n_star)
    feh = rng.normal(-0.1, 0.2, n_star)
    cn = -0.9 + 0.4 * (mass - 1.0) + 0.05 * feh  # [C/N] rises with mass after first dredge-up
    true = np.stack([np.full(n_star, 4700.0), np.full(n_star, 2.5), feh, 0.5 * cn, -0.5 * cn], axis=1)
    star = np.repeat(np.arange(n_star), n_vis)
    return rng, mass, true, star


def test_more_precise_cn_gives_better_ages_and_shrinkage_does_not():
    rng, mass, true, star = _population()
    survey = true + rng.normal(0, [30, 0.03, 0.02, 0.04, 0.04], true.shape)
    precise = {"labels": true[star] + rng.normal(0, [30, 0.03, 0.02, 0.02, 0.02], (star.size, 5))}
    shrunk = {"labels": np.where(np.arange(5) >= 3, true[star].mean(0), true[star])}  # [C/N] = the mean
    snr = np.full(star.size, 30.0)
    ids = [f"2M{k:08d}" for k in range(len(mass))]
    out = cn_age_metrics(mass, ids, NAMES, {"tsn": precise, "shrunk": shrunk}, survey, star, snr)
    assert out["n_calibration"] + out["n_test"] == len(mass) and min(out["n_calibration"], out["n_test"]) > 150
    assert out["tsn"]["star"] < out["survey"] < out["shrunk"]["star"]
    assert out["tsn"]["n_visits"] == 4 * out["n_test"]


def test_c_n_ages_need_the_labels():
    _rng, mass, true, star = _population(50)
    with pytest.raises(ValueError, match="c_fe, n_fe"):
        cn_age_metrics(mass, [str(i) for i in range(50)], ["teff", "logg", "fe_h"], {}, true[:, :3], star,
                       np.full(star.size, 30.0))


def test_read_masses_matches_by_star_id_and_names_the_file(tmp_path):
    path = tmp_path / "apokasc.csv"
    Table({"APOGEE_ID": ["2M1", "2M3", "2M9"], "mass": [1.2, 1.5, 0.9]}).write(path, format="ascii.csv")
    np.testing.assert_array_equal(read_masses(path, ["2M3", "2M2", "2M1"]), [1.5, np.nan, 1.2])
    bad = tmp_path / "nomass.csv"
    Table({"APOGEE_ID": ["2M1"], "radius": [10.0]}).write(bad, format="ascii.csv")
    with pytest.raises(ValueError, match="nomass.csv: a masses table needs"):
        read_masses(bad, ["2M1"])
    with pytest.raises(ValueError, match="apokasc.csv: none of its 3 rows names a star"):
        read_masses(path, ["2M7"])
    with pytest.raises(ValueError, match="no such masses table"):
        read_masses(tmp_path / "absent.fits", ["2M1"])
