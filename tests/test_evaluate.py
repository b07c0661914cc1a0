import json

import numpy as np
import pytest
import torch

from pairspec import evaluate as E
from pairspec.store import create_store
from pairspec.surveys.apogee.layout import (
    APOGEE_CORE_SCHEMA,
    APOGEE_GRID,
    aspcap7214_index,
)
from pairspec.surveys.base import StarRecord

torch.set_num_threads(1)
N_STAR, N_VISIT = 40, 3
NOISE = np.array([30.0, 0.05, 0.02, 0.02])  # the fake predictor's scatter per label
OFFSET = np.array([10.0, 0.0, 0.0, 0.0])


def _truth(rng):
    giant = rng.random(N_STAR) < 0.6
    teff = np.where(giant, rng.uniform(4300, 5000, N_STAR), rng.uniform(5200, 6200, N_STAR))
    logg = np.where(giant, rng.uniform(1.8, 3.2, N_STAR), rng.uniform(4.0, 4.5, N_STAR))
    feh = rng.uniform(-0.6, 0.3, N_STAR)
    mgfe = rng.uniform(0.0, 0.3, N_STAR)
    return np.stack([teff, logg, feh, mgfe], axis=1)


class FakePredictor:
    """Reads the star index from pixel 0 (outside the chips) and returns truth + offset + noise."""

    schema = APOGEE_CORE_SCHEMA

    def __init__(self, truth, scale=1.0, seed=1):
        self.truth, self.scale, self.rng = truth, scale, np.random.default_rng(seed)

    def predict(self, flux, ivar, batch_size=256, denoise=False):
        idx = np.rint(flux[:, 0]).astype(int)
        n = len(idx)
        lab = self.truth[idx] + OFFSET + self.scale * NOISE * self.rng.normal(size=(n, 4))
        out = {"labels": lab, "sigma": np.tile(self.scale * NOISE, (n, 1)), "snr": np.full(n, 30.0),
               "frac_bad": np.zeros(n)}
        if denoise:
            out["denoised"] = np.ones((n, flux.shape[1]), dtype=np.float32)
        return out


def _build(tmp_path, emulator_spectra=False):
    from astropy.table import Table

    rng = np.random.default_rng(0)
    truth = _truth(rng)
    survey = truth + np.array([15.0, 0.03, 0.01, 0.01]) * rng.normal(size=truth.shape)
    store = create_store(str(tmp_path / "store.zarr"), "apogee", "dr17", APOGEE_GRID, APOGEE_CORE_SCHEMA)
    clean = None
    if emulator_spectra:
        from pairspec.surveys.apogee.fit import EmulatorFit

        emu = EmulatorFit().emulator
        alpha = truth.copy()
        clean = emu.torch_normalized(torch.as_tensor(alpha, dtype=torch.float64)).numpy()
    recs = []
    cluster = np.where(np.arange(N_STAR) < 8, "NGC1", np.where(np.arange(N_STAR) < 14, "M67", ""))
    for i in range(N_STAR):
        flux = np.ones((N_VISIT, APOGEE_GRID.npix), np.float32) * 1000
        if clean is not None:
            flux[:, aspcap7214_index()] = 1000 * clean[i]
        flux += rng.normal(size=flux.shape).astype(np.float32) * 5  # S/N ~ 200
        flux[:, 0] = i
        ivar = np.full_like(flux, 1 / 25.0)
        snr = np.array([15.0, 35.0, 80.0], np.float32)
        recs.append(StarRecord(
            star_id=f"2M{i:08d}", source=f"unit{i}", labels=survey[i].astype(np.float32),
            label_err=np.full(4, 0.01, np.float32), label_flags=np.zeros(4, np.int64), star_flags=0,
            coadd_flux=flux.mean(0), coadd_ivar=ivar.sum(0), coadd_pixmask=np.zeros(APOGEE_GRID.npix, np.int64),
            visit_flux=flux, visit_ivar=ivar, visit_pixmask=np.zeros(flux.shape, np.int64), visit_snr=snr,
            visit_snr_survey=snr, visit_mjd=np.arange(N_VISIT) + 57000.0,
            visit_id=[f"v{i}-{k}" for k in range(N_VISIT)], visit_fiber=np.zeros(N_VISIT, np.int32),
            snr=100.0, meta={"ra": 1.0, "dec": 2.0}))
    store.append(recs)
    tab = Table({"star_id": [r.star_id for r in recs], "teff": truth[:, 0], "logg": truth[:, 1],
                 "fe_h": truth[:, 2], "mg_fe": truth[:, 3], "alpha_fe": truth[:, 3], "cluster": cluster})
    tab.write(tmp_path / "truth.fits")
    return truth, survey


def test_evaluate_with_fake_predictor(tmp_path):
    truth, _ = _build(tmp_path)
    out = tmp_path / "report"
    m = E.evaluate(FakePredictor(truth), str(tmp_path / "store.zarr"), split="all", truth=str(tmp_path / "truth.fits"),
                   out_dir=str(out), compare={"noisy": FakePredictor(truth, scale=3.0, seed=2)}, progress=False)
    assert m["n_visits"] == N_STAR * N_VISIT
    s = m["scatter"]["tsn"]["truth"]["teff"]
    assert [s[b]["n"] for b in m["snr_bins"]] == [40, 40, 0, 40]
    assert s["all"]["sigma"] == pytest.approx(30.0, rel=0.25)
    assert s["all"]["bias"] == pytest.approx(10.0, abs=8.0)
    noisy = m["scatter"]["noisy"]["truth"]["teff"]["all"]["sigma"]
    assert noisy == pytest.approx(90.0, rel=0.25)
    # against survey labels, their own noise (15 K) adds in quadrature
    assert m["scatter"]["tsn"]["survey"]["teff"]["all"]["sigma"] > s["all"]["sigma"] * 0.9
    assert m["survey_noise"]["teff"]["<60"]["sigma"] == pytest.approx(15.0, rel=0.4)
    cal = m["calibration"]["tsn"]
    assert cal["truth"]["logg"]["z_std"] == pytest.approx(1.0, abs=0.2)
    assert cal["repeat_pairs"]["fe_h"]["n"] == N_STAR
    assert cal["repeat_pairs"]["fe_h"]["z_std"] == pytest.approx(1.0, abs=0.3)
    assert m["slope"]["tsn"]["truth"]["teff"] == pytest.approx(1.0, abs=0.05)
    assert m["clusters"]["reference:truth"]["fe_h"]["n_clusters"] == 2
    assert m["clusters"]["tsn"]["fe_h"]["mean_sigma"] > 0
    assert m["recon_chi2"]["n"] == N_STAR * N_VISIT and m["recon_chi2"]["median"] > 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["scatter"]["tsn"]["truth"]["teff"]["all"]["n"] == 120
    report = (out / "report.md").read_text()
    assert "Paper targets" in report and "| teff | 19 |" in report  # the apogee adapter's paper_targets
    from pairspec.report import write_report

    write_report(out / "other.md", {**m, "paper_targets_lt60": {}})  # a survey with no published bar
    assert "publishes no visit-level targets" in (out / "other.md").read_text()
    for png in ("sigma_vs_snr_truth.png", "sigma_vs_snr_survey.png", "kiel.png", "mgfe_feh.png",
                "examples.png", "zscores.png", "tsn_vs_reference.png"):
        assert (out / png).stat().st_size > 1000, png
    table = E.format_table(m)
    assert "teff [K]" in table and "noisy vs truth" in table and "<20" in table and "survey vs truth" in table
    cell = m["scatter"]["tsn"]["truth"]["teff"]["<20"]
    assert f"{cell['sigma']:.0f} {cell['bias']:+.0f} ({cell['n']})" in table  # the bias beside the spread


def test_evaluate_emulator_fit_and_split(tmp_path):
    truth, _ = _build(tmp_path, emulator_spectra=True)
    m = E.evaluate(FakePredictor(truth), str(tmp_path / "store.zarr"), split="all", truth=str(tmp_path / "truth.fits"),
                   out_dir=str(tmp_path / "r"), emulator_fit=True, max_fit=6, progress=False, plots=False)
    fit = m["scatter"]["emulator_fit"]["truth"]
    assert fit["teff"]["all"]["n"] == 6
    # S/N ~200 emulator spectra: the fit should land on the truth
    assert abs(fit["teff"]["all"]["bias"]) < 40 and fit["teff"]["all"]["sigma"] < 60
    assert abs(fit["fe_h"]["all"]["bias"]) < 0.05
    assert m["timings"]["emulator_fit"]["spectra_per_s"] > 0
    # its errors calibrated the way TSN's are (each half of the fitted stars from the other), the raw ones kept
    errors = m["emulator_fit_errors"]
    assert errors["raw"]["truth"]["teff"]["n"] == 6 and len(errors["scale"]) == 2
    assert m["calibration"]["emulator_fit"]["truth"]["teff"]["n"] == 6
    # the [Mg/Fe]-[Fe/H] plane of every method on the fit's own visits (S/N < 40): the same visits for all
    on_fit = m["chemical_plane_fit_visits"]
    assert set(on_fit) == set(m["chemical_plane"]) and len({c["n"] for c in on_fit.values()}) == 1
    assert 0 < on_fit["emulator_fit"]["n"] == m["chemical_plane"]["emulator_fit"]["n"] <= 6
    assert on_fit["tsn"]["n"] < m["chemical_plane"]["tsn"]["n"]  # TSN's own plane has all S/N < 40 visits
    # each method's separation over the fit's on those visits (6 visits are too few for a number: NaN)
    assert "separation_over_fit" not in on_fit["emulator_fit"]
    assert on_fit["tsn"]["separation_over_fit"]["n"] == on_fit["tsn"]["n"]
    assert "over the fit's" in (tmp_path / "r" / "report.md").read_text()
    # every method's sigma over the fit's on the fit's visits, per bin, with the interval over stars
    same = m["fit_same_visits"]
    assert set(same) == set(m["scatter"]) - {"emulator_fit"} and m["fit_same_visits_reference"] == "truth"
    cell = same["tsn"]["teff"]["<60"]
    n60 = int(np.isfinite(fit["teff"]["<60"]["sigma"])) and fit["teff"]["<60"]["n"]
    assert cell["n"] == n60 and cell["n"] <= 6
    if cell["n"] >= 2:
        assert cell["ratio"] == pytest.approx(cell["sigma"] / cell["sigma_fit"])
    assert "Against the emulator fit, on the fit's own visits" in (tmp_path / "r" / "report.md").read_text()
    with pytest.raises(ValueError, match="split"):
        E.evaluate(FakePredictor(truth), str(tmp_path / "store.zarr"), split="nope", out_dir=str(tmp_path / "x"),
                   progress=False, plots=False)


def test_paper_targets_come_from_the_survey_adapter():
    from pairspec.surveys import paper_targets

    assert paper_targets("apogee") == {"teff": 19.0, "logg": 0.06, "fe_h": 0.03}
    assert paper_targets("lamost") == {} and paper_targets("no_such_survey") == {}


def test_evaluate_with_a_truth_that_lacks_a_trained_label(tmp_path):
    """A truth table without one of the model's labels (the APOGEE simulator keeps no m_h or alpha_m, a
    paper-table run trains them): that label has no truth column, and the report and figures still come."""
    from astropy.table import Table

    truth, _ = _build(tmp_path)
    tab = Table.read(tmp_path / "truth.fits")
    tab.remove_columns(["mg_fe", "alpha_fe"])
    tab.write(tmp_path / "truth_partial.fits")
    out = tmp_path / "report"
    m = E.evaluate(FakePredictor(truth), str(tmp_path / "store.zarr"), split="all",
                   truth=str(tmp_path / "truth_partial.fits"), out_dir=str(out), progress=False)
    assert m["scatter"]["tsn"]["truth"]["mg_fe"]["all"]["n"] == 0
    assert m["scatter"]["tsn"]["truth"]["teff"]["all"]["n"] == N_STAR * N_VISIT
    assert m["scatter"]["tsn"]["survey"]["mg_fe"]["all"]["n"] == N_STAR * N_VISIT
    assert (out / "sigma_vs_snr_truth.png").stat().st_size > 1000 and (out / "report.md").exists()


def test_sample_visits_is_a_fixed_subset_of_the_splits_visits(tmp_path):
    from pairspec.store import open_store

    _build(tmp_path)
    store = open_store(str(tmp_path / "store.zarr"))
    visit_star = np.asarray(store.visit_table()["star"])
    snr = np.asarray(store.visit_table()["snr"])
    split = np.asarray(store.star_table()["split"])
    for name in ("train", "test", "all"):
        every = E.sample_visits(store, name, 10**6)
        mine = np.ones(visit_star.size, bool) if name == "all" else split[visit_star] == E.SPLIT_CODES[name]
        np.testing.assert_array_equal(every, np.flatnonzero(mine))
    few = E.sample_visits(store, "all", 7, seed=3)
    assert few.size == 7 and np.all(np.diff(few) > 0)
    np.testing.assert_array_equal(few, E.sample_visits(store, "all", 7, seed=3))
    assert not np.array_equal(few, E.sample_visits(store, "all", 7, seed=4))
    low = E.sample_visits(store, "all", 10**6, max_snr=40)
    assert low.size and np.all(snr[low] < 40) and low.size == int((snr < 40).sum())
    with pytest.raises(ValueError, match="split"):
        E.sample_visits(store, "nope", 5)
