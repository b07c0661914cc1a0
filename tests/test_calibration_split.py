"""benchmarks/calibration_split.py --subsample: how far the 68 % coverage of a calibration fitted on a
small val split can land from 68 % on a small test split (the paper table's ~140 stars each)."""


import benchscript
import numpy as np
import pytest

from pairspec.calibration import rms_scale

NAMES = ["teff", "logg"]


@pytest.fixture(scope="module")
def bench():
    return benchscript.load("calibration_split")


def _block(rng, n_star, first_id):
    """Stars with 3 visits: a star part (common to the visits) and a visit part that falls with S/N; the
    network's raw sigma is twice the visit part (the calibration has to find the factor and the star part)."""
    star = np.repeat(np.arange(first_id, first_id + n_star), 3)
    snr = rng.uniform(10, 100, star.size)
    visit_sigma = np.array([40.0, 0.08]) * (30.0 / snr)[:, None]
    star_err = rng.normal(size=(n_star, 2)) * np.array([15.0, 0.03])
    truth = np.repeat(rng.normal(size=(n_star, 2)) * [500.0, 1.0] + [4800.0, 2.5], 3, axis=0)
    pred = truth + np.repeat(star_err, 3, axis=0) + rng.normal(size=truth.shape) * visit_sigma
    return {"pred": pred, "sigma": 2.0 * visit_sigma, "snr": snr, "star": star, "survey": truth,
            "label_err": np.zeros_like(truth), "truth": truth}


def test_large_splits_calibrate_to_68_percent_and_small_ones_scatter_around_it(bench):
    rng = np.random.default_rng(0)
    val, test = _block(rng, 1500, 0), _block(rng, 1500, 10_000)
    _, full = bench.calibrate_and_score(val, test, NAMES)
    for n in NAMES:  # 1500 stars still leave ~0.02 of noise (seeds 0-7: 0.636-0.704 from the pairs)
        assert 0.62 < full[n]["truth"]["cov68"] < 0.74
        assert 0.62 < full[n]["repeat_pairs"]["cov68"] < 0.74
    sub = bench.subsample(val, test, NAMES, [40, 600], draws=30, seed=1)
    for n in NAMES:
        small, large = sub["40"][n]["truth"]["cov68"], sub["600"][n]["truth"]["cov68"]
        assert small[0] <= small[1] <= small[2] and 0.6 < large[1] < 0.76
        assert small[2] - small[0] > 1.5 * (large[2] - large[0])  # fewer stars, a wider spread
    assert 0.0 <= sub["600"]["draws_outside_target"] < sub["40"]["draws_outside_target"] <= 1.0
    assert bench.meets_target(full) != any(not 0.63 <= full[n][r]["cov68"] <= 0.73 or not 0.9 <= full[n][r]["z_std"] <= 1.1
                                           for n in NAMES for r in ("truth", "repeat_pairs"))
    # the star errors here do not depend on the labels: the shape fitted from them stays near flat, and the
    # flat calibration (--flat) scores the same within the noise
    cal, _ = bench.calibrate_and_score(val, test, NAMES)
    assert np.abs(np.asarray(cal["star_shape"]["coef"], dtype=float)).max() < 0.3
    flat_cal, flat = bench.calibrate_and_score(val, test, NAMES, shaped=False)
    assert flat_cal["star_shape"] is None
    for n in NAMES:
        assert abs(flat[n]["truth"]["cov68"] - full[n]["truth"]["cov68"]) < 0.02
    with pytest.raises(SystemExit, match="--subsample 5000"):
        bench.subsample(val, test, NAMES, [5000], draws=1)


def test_scales_trade_the_z_std_against_the_68_percent_coverage_when_errors_have_heavy_tails(bench):
    """Student-t visit errors (5 degrees of freedom): the coverage-matched calibration puts 68 % of the pairs'
    z inside +-1 and leaves a z-std above 1; the rms-matched one makes the z-std 1 and over-covers; the
    geometric mean of the two lands between them on both. (Bounds from seeds 0-9: coverage z-std 1.05-1.16,
    cov68 0.67-0.71; rms z-std 0.94-1.04, cov68 0.71-0.76.)"""
    rng = np.random.default_rng(3)

    def heavy(n_star, first_id):
        block = _block(rng, n_star, first_id)
        scale = block["sigma"] / 2.0
        block["pred"] = block["truth"] + rng.standard_t(5, size=scale.shape) * scale
        return block

    val, test = heavy(3000, 0), heavy(3000, 10_000)
    got = {name: bench.calibrate_and_score(val, test, NAMES, name)[1]["teff"]["repeat_pairs"]
           for name in ("coverage", "rms", "mid")}
    assert abs(got["coverage"]["cov68"] - 0.683) < 0.035 and got["coverage"]["z_std"] > 1.03
    assert abs(got["rms"]["z_std"] - 1.0) < 0.08 and got["rms"]["cov68"] > 0.70
    for stat in ("z_std", "cov68"):
        lo, hi = sorted((got["coverage"][stat], got["rms"][stat]))
        assert lo < got["mid"][stat] < hi
    assert rms_scale([3.0, -4.0, np.nan]) == pytest.approx(np.sqrt(12.5))
    assert rms_scale([1.0, 1.0, 1.0, 100.0], clip=5.0) == pytest.approx(1.0)  # the outlier is clipped


def test_unused_train_stars_are_the_train_twins_the_cap_left_out(bench, tmp_path):
    """--score-on unused-train scores on train-split stars with >= 2 visits that a checkpoint trained with
    data.max_stars never saw: disjoint from the stars it trained on, none from val or test, and a clear
    exit when the checkpoint trained on every train star."""
    from fake_survey import make_record

    from pairspec.data import select_stars
    from pairspec.grid import LogLinearGrid
    from pairspec.store import create_store
    from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

    grid = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=64, blocks=((0, 64),))
    store = create_store(str(tmp_path / "s.zarr"), "fake", "t1", grid, APOGEE_CORE_SCHEMA, chunk=8)
    store.append([make_record(f"2M{i:05d}", f"u/{i}") for i in range(120)])
    config = {"data": {"mode": "loo", "min_visits": 2, "max_stars": 10}}
    unused = bench.unused_train_stars(store, config)
    used = select_stars(store, "train", "loo", 2, 10)
    stars = store.star_table()
    assert used.size == 10 and unused.size > 0
    assert np.intersect1d(unused, used).size == 0
    assert np.all(np.asarray(stars["n_visits"])[unused] >= 2)
    train_code = np.asarray(stars["split"])[used[0]]
    assert np.all(np.asarray(stars["split"])[unused] == train_code)
    assert unused.size + used.size == select_stars(store, "train", "loo", 2).size
    with pytest.raises(SystemExit, match="data.max_stars is unset"):
        bench.unused_train_stars(store, {"data": {"max_stars": None}})
