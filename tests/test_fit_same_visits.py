"""benchmarks/fit_same_visits.py: the emulator fit is kept per visit, resumed and extended by S/N range,
and every checkpoint is compared with it on the very visits it has."""

import json

import benchscript
import numpy as np
import pytest
from test_evaluate import N_STAR, N_VISIT, FakePredictor, _build


@pytest.fixture
def bench():
    return benchscript.load("fit_same_visits")


class _Fitter:
    """Truth plus twice the fake predictor's noise, counting the visits it is asked to fit."""

    label_names = ("teff", "logg", "fe_h", "alpha_fe")
    catalogue_names = ("teff", "logg", "fe_h", "mg_fe")

    def __init__(self, truth):
        self.truth, self.rng, self.n = truth, np.random.default_rng(7), 0

    def fit(self, flux, ivar, pixmask=None):
        idx = np.rint(flux[:, 0]).astype(int)
        self.n += idx.size
        noise = 2 * np.array([30.0, 0.05, 0.02, 0.02]) * self.rng.normal(size=(idx.size, 4))
        return {"labels": self.truth[idx] + noise, "sigma": np.ones((idx.size, 4))}


def test_fit_is_kept_per_visit_and_each_checkpoint_compared_on_the_same_visits(bench, tmp_path, monkeypatch, capsys):
    truth, _ = _build(tmp_path)
    fitter = _Fitter(truth)
    from pairspec import surveys

    monkeypatch.setattr(surveys, "visit_fitter", lambda *a, **k: fitter)
    names = ["teff", "logg", "fe_h", "mg_fe"]

    def predict(store, rows, predictor, batch=512):
        flux, ivar, _ = store.visit_spectra(rows, pixmask=False)
        lab = FakePredictor(truth).predict(flux, ivar)["labels"]
        return {"tsn": lab, "tsn_network": lab}, names

    monkeypatch.setattr(bench, "_predict", predict)

    class _Names:  # what main reads from the checkpoint: the label names (predicting is faked above)
        schema = type("S", (), {"names": names})

    from pairspec import inference

    monkeypatch.setattr(inference.LabelPredictor, "from_checkpoint", classmethod(lambda cls, *a, **k: _Names()))
    args = ["ckpt.pt", str(tmp_path / "store.zarr"), str(tmp_path / "truth.fits"), "--work", str(tmp_path / "w"),
            "--split", "all", "--chunk", "16"]
    low = bench.main(args + ["--snr-max", "60"])
    n_low = N_STAR * 2  # the fake store's visits have S/N 15, 35 and 80
    assert fitter.n == n_low and low["n_visits"] == n_low and low["n_stars"] == N_STAR
    assert set(low["bins"]) == {"<20", "20-40", "<60"}
    cell = low["bins"]["<60"]["teff"]
    assert cell["tsn_over_fit"] == pytest.approx(cell["sigma_tsn"] / cell["sigma_emulator_fit"])
    assert cell["lo"] <= cell["tsn_over_fit"] <= cell["hi"] and 0.3 < cell["tsn_over_fit"] < 0.8
    plane = low["chemical_plane_snr40"]
    assert set(plane) == {"tsn", "tsn_network", "emulator_fit"} and plane["tsn"]["n"] == n_low
    assert plane["tsn"]["separation_over_fit"]["n"] == n_low and "separation_over_fit" not in plane["emulator_fit"]
    assert set(low["slope_snr20"]["emulator_fit"]) == set(names)
    # a second range adds its visits; the ones fitted before are not fitted again
    both = bench.main(args + ["--snr-min", "60", "--snr-max", "1000"])
    assert fitter.n == N_STAR * N_VISIT and both["n_visits"] == N_STAR * N_VISIT and ">=60" in both["bins"]
    # the same range again fits nothing; --report-only never fits
    bench.main(args + ["--snr-max", "60"])
    bench.main(args + ["--report-only"])
    assert fitter.n == N_STAR * N_VISIT
    capsys.readouterr()
    with np.load(tmp_path / "w" / "visits.npz") as d:
        assert np.unique(d["rows"]).size == d["rows"].size == N_STAR * N_VISIT
        assert d["emulator_fit"].shape == (N_STAR * N_VISIT, 4)
    json.dumps(both, default=float)
