"""benchmarks/learning_curve.py: the equal-compute epoch rule and the aggregation of run records written
by several processes (one per training seed) into one table. The training itself is the package's own."""

import json
from pathlib import Path

import benchscript
import pytest


@pytest.fixture(scope="module")
def lc():
    return benchscript.load("learning_curve")


def test_epochs_for_budget_is_the_nearest_whole_epoch_and_at_least_one(lc):
    assert lc.epochs_for_budget(1340, 193) == 7  # 1351 steps, the nearest to the budget
    assert lc.epochs_for_budget(1340, 1340) == 1
    assert lc.epochs_for_budget(1340, 5000) == 1  # never zero: a size larger than the budget trains one epoch
    assert lc.epochs_for_budget(1340, 335) == 4


def _summary(sigma):
    row = {b: {"sigma": sigma, "bias": 0.0, "n": 10} for b in lc_bins()}
    row["slope"] = 1.0
    return {name: dict(row) for name in ("teff", "logg", "fe_h", "mg_fe")}


def lc_bins():
    return ("<20", "20-40", "40-60", ">=60", "<60")


def _write(work: Path, n, k, sigma, methods=("tsn", "ridge")):
    runs = [{"n_train": n, "seed": 100 + k, "method": m, "summary": _summary(sigma + (m == "ridge")),
             "train_s": 1.0} for m in methods]
    (work / "records").mkdir(parents=True, exist_ok=True)
    (work / "records" / f"n{n}_s{k}.json").write_text(json.dumps(
        {"n_train": n, "seed_index": k, "n_test_stars": 5, "n_test_visits": 20, "runs": runs}))


def test_records_of_two_processes_aggregate_with_their_seed_spread(lc, tmp_path):
    _write(tmp_path, 100, 0, 2.0)
    _write(tmp_path, 100, 1, 4.0)  # the second process's seed
    _write(tmp_path, 200, 0, 1.0, methods=("tsn",))
    _write(tmp_path, 999, 0, 9.0)  # a size not asked for is left out
    runs = lc.collect(tmp_path, [100, 200])
    assert sorted({r["n_train"] for r in runs}) == [100, 200]
    agg = lc.aggregate(runs)
    s = agg["100"]["tsn"]["teff"]["<20"]["sigma"]
    assert (s["mean"], s["min"], s["max"], s["n"]) == (3.0, 2.0, 4.0, 2)
    assert agg["100"]["ridge"]["teff"]["<20"]["sigma"]["mean"] == 4.0
    assert set(agg["200"]) == {"tsn"}
    md = lc.markdown({"tag": "t", "stars": 10, "n_test_visits": 20, "n_test_stars": 5, "aggregate": agg,
                      "budget_steps": 7, "epochs": {"100": 2, "200": 1}, "train_core_s": 60.0, "machine": "m"})
    assert "| 100 | tsn | 3 [2-4] |" in md  # teff in K: mean [min-max] over the two seeds
    assert "100 stars 2 epochs" in md
    # the fit's row, and TSN over the fit on the fit's own visits with its interval over the stars
    fit = {n: {**{b: {"sigma": 5.0} for b in lc.BINS + ("<60",)}, "slope": 1.0} for n in ("teff", "fe_h")}
    same = {"fe_h": {b: {"ratio": 0.98, "lo": 0.93, "hi": 1.03} for b in ("<20", "20-40", "40-60", "<60")}}
    md = lc.markdown({"tag": "t", "stars": 10, "n_test_visits": 20, "n_test_stars": 5, "aggregate": agg,
                      "budget_steps": 7, "epochs": {"100": 2, "200": 1}, "train_core_s": 60.0, "machine": "m",
                      "emulator_fit": fit, "emulator_fit_same_visits": same, "emulator_fit_n_train": 200})
    assert "| (any) | emulator fit | 5 | 5 |" in md
    assert "| 200 | TSN / fit, same visits | 0.980 [0.930-1.030] | 0.980 [0.930-1.030] | 0.980 [0.930-1.030] | - |" in md
    assert md.count("TSN / fit, same visits") == 1  # only where the evaluation measured it


def test_extras_take_calibration_plane_survey_ratio_and_spectra_from_one_evaluation(lc, tmp_path):
    """extras() reads what the evaluation measured beside sigma; a record written before extras existed is
    filled from its saved report, and the markdown shows one row per TSN run."""
    labels = ("teff", "logg", "fe_h", "mg_fe")
    bins = ("<20", "20-40", "40-60", ">=60")
    metrics = {
        "scatter": {"tsn": {"truth": {n: {b: {"sigma": 4.0, "bias": 0.0, "n": 9} for b in lc_bins()} for n in labels}}},
        "survey_noise": {n: {">=60": {"sigma": 2.0}} for n in labels},
        "calibration": {"tsn": {"truth": {n: {"z_std": 0.9 + 0.05 * i, "cov68": 0.66} for i, n in enumerate(labels)},
                                "repeat_pairs": {n: {"z_std": 1.0, "cov68": 0.70} for n in labels}}},
        "chemical_plane": {"tsn": {"detrended_slope": 0.81, "separation": 3.5, "separation_truth": 4.4}},
        "spectra": {"rms": {"input": {b: 0.04 for b in bins}, "denoised": {b: 0.01 for b in bins}},
                    "depth": {"denoised": {b: -0.05 for b in bins}}},
    }
    metrics["spectra"] = {k: {m: {b: {"median": v} for b, v in d.items()} for m, d in kinds.items()}
                          for k, kinds in metrics["spectra"].items()}
    e = lc.extras(metrics, "tsn")
    assert e["over_survey_ge60"] == {n: 2.0 for n in labels}
    assert e["calibration"]["truth"]["logg"]["z_std"] == pytest.approx(0.95)
    assert e["chemical_plane"]["detrended_slope"] == 0.81
    assert e["spectra"]["rms"]["denoised"]["<20"] == 0.01
    _write(tmp_path, 100, 0, 2.0, methods=("tsn",))
    (tmp_path / "reports" / "n100_s0").mkdir(parents=True)
    (tmp_path / "reports" / "n100_s0" / "metrics.json").write_text(json.dumps(metrics))
    runs = lc.collect(tmp_path, [100])
    assert runs[0]["extras"] == json.loads(json.dumps(e))
    md = "\n".join(lc.extras_markdown(runs))
    assert "| 100 | 100 | 0.90-1.05 | 0.66-0.66 | 1.00-1.00 | 0.70-0.70 | 0.81 | 3.50 (4.40) |" in md
    assert "0.25 / 0.25 / 0.25 / 0.25 | -5.0 % / -5.0 % |" in md


def _metrics(methods, sigma):
    labels = ("teff", "logg", "fe_h", "mg_fe")
    return {"n_stars": 5, "n_visits": 20,
            "scatter": {m: {"truth": {n: {b: {"sigma": sigma[m], "bias": 0.0, "n": 9} for b in lc_bins()}
                                      for n in labels}} for m in methods}}


def test_a_baseline_added_to_a_finished_point_gets_its_own_record_and_tsn_network_its_row(lc, tmp_path,
                                                                                         monkeypatch):
    """`--methods direct` on a point whose TSN record exists trains and evaluates the baseline alone, files it
    under its own name (the TSN record stays), and reports it as "direct" although evaluate calls its main
    model "tsn"; a TSN checkpoint with a refit also records the network's own labels as "tsn_network"."""
    import pairspec.evaluate
    import pairspec.train

    trained = []

    def fake_train(cfg, progress=False):
        trained.append(cfg)
        return tmp_path / f"ckpt{len(trained)}.pt"

    calls = []

    def fake_evaluate(checkpoint, store, compare=None, **kw):
        assert not compare  # each run here trains one method
        calls.append(checkpoint)
        if len(calls) == 1:  # the TSN run: a checkpoint with a refit
            return _metrics(("tsn", "tsn_network"), {"tsn": 7.0, "tsn_network": 8.0})
        return _metrics(("tsn",), {"tsn": 9.0})  # the direct run, as evaluate names its main model

    monkeypatch.setattr(pairspec.train, "train", fake_train)
    monkeypatch.setattr(pairspec.evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr(lc, "steps_per_epoch", lambda store, n, batch: 10)
    monkeypatch.setattr(lc, "plot", lambda result, path: None)
    args = ["--store", str(tmp_path / "s" / "apogee.zarr"), "--sizes", "40", "--epochs", "1", "--seeds", "1",
            "--max-fit", "0", "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r"), "--tag", "t"]
    lc.main(args + ["--methods", "tsn"])
    lc.main(args + ["--methods", "direct"])
    recs = sorted(p.name for p in (tmp_path / "w" / "t" / "records").glob("*.json"))
    assert recs == ["n40_s0-direct.json", "n40_s0.json"]
    assert len(trained) == 2 and len(calls) == 2
    runs = {r["method"]: r for r in lc.collect(tmp_path / "w" / "t", [40])}
    assert set(runs) == {"tsn", "tsn_network", "direct"}
    assert runs["tsn"]["summary"]["teff"]["<20"]["sigma"] == 7.0
    assert runs["tsn_network"]["summary"]["teff"]["<20"]["sigma"] == 8.0
    assert runs["direct"]["summary"]["teff"]["<20"]["sigma"] == 9.0  # evaluate's "tsn", filed as direct
    assert runs["direct"]["steps"] is None and runs["tsn_network"]["train_s"] == 0.0
    lc.main(args + ["--methods", "direct"])  # both records exist: nothing is trained again
    assert len(trained) == 2
    md = (tmp_path / "r" / "learning_curve-t.md").read_text()
    assert "| 40 | direct | 9 |" in md and "| 40 | tsn_network | 8 |" in md
