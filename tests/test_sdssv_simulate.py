"""The SDSS-V simulator writes astra's formats that the adapter reads, and the whole chain runs through the
command line: simulate -> ingest (APOGEE and BOSS) -> train (tiny, CPU) -> predict (store and files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from typer.testing import CliRunner

from pairspec.cli import app
from pairspec.preprocess import normalize
from pairspec.surveys.sdssv import SdssvAdapter
from pairspec.surveys.sdssv.layout import HDU_NAMES
from pairspec.surveys.sdssv.simulate import boss_available

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"pairspec {' '.join(map(str, args))} failed:\n{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdssv")
    out = invoke("simulate", "sdssv", root / "sim", "--stars", 14, "--seed", 11)
    assert "wrote 14 stars" in out
    return root


def _visit_files(root):
    return sorted((root / "sim" / "spectra" / "visit").glob("*/*/mwmVisit-*.fits"))


def test_files_are_in_astra_format(sim):
    in_stack, apogee_snr, empty_apogee, n_rows = [], [], 0, {n: 0 for n in HDU_NAMES}
    for path in _visit_files(sim):
        with fits.open(path) as h:
            assert [x.name for x in h] == ["PRIMARY", *HDU_NAMES]
            for name in HDU_NAMES:
                hdr = h[name].header
                assert (hdr["CRVAL"], hdr["NPIXELS"]) == ((3.5523, 4648) if name.startswith("BOSS") else (4.179, 8575))
                n_rows[name] += hdr["NAXIS2"]
                if hdr["NAXIS2"] and name.startswith("APOGEE"):
                    d = h[name].data
                    assert d["pixel_flags"].dtype == np.uint64 and d["flux"].shape[1] == 8575
                    in_stack += list(d["in_stack"])
                    apogee_snr += list(d["snr"])
            if h["APOGEE/APO"].header["NAXIS2"] + h["APOGEE/LCO"].header["NAXIS2"] == 0:
                empty_apogee += 1
                assert h[0].header["N_APOGEE"] in (None, fits.card.UNDEFINED)  # astra's blank card
    assert empty_apogee >= 1 and all(n_rows[n] > 0 for n in ("APOGEE/APO", "APOGEE/LCO"))
    assert 0 < np.mean(in_stack) < 1, "a mix of in_stack True and False visits"
    assert np.mean(np.array(apogee_snr) < 60) > 0.3, "many visits below S/N 60"
    with fits.open(sim / "sim/summary/astraAllStarASPCAP-0.8.1.fits.gz") as h:
        assert h[1].header["INSTRMNT"] == "BOSS" and h[1].header["NAXIS2"] == 0 and h[2].header["NAXIS2"] > 0
        assert {"mg_h", "e_mg_h", "fe_h_flags", "flag_warn", "flag_bad"} <= set(h[2].columns.names)
    if boss_available():
        assert n_rows["BOSS/APO"] + n_rows["BOSS/LCO"] > 0
        with fits.open(sim / "sim/summary/astraAllStarBossNet-0.8.1.fits.gz") as h:
            assert h[1].header["NAXIS2"] > 0 and h[2].header["NAXIS2"] == 0


@pytest.mark.parametrize("instrument", ["apogee", "boss"])
def test_visits_scatter_around_the_truth_with_their_ivar(sim, instrument):
    """A normalised visit minus the star's noiseless truth, in units of its own noise, has a robust std near 1;
    against the truth of the star most different in Teff its (clipped) chi^2 is far larger: flux, ivar and
    truth.fits agree."""
    if instrument == "boss" and not boss_available():
        pytest.skip("BOSS spectra need pairspec.surveys.linegen")
    with fits.open(sim / "sim/truth.fits") as h:
        ids = list(np.char.strip(np.asarray(h[1].data["star_id"]).astype(str)))
        teff = np.asarray(h[1].data["teff"], float)
        truth = h["SPECTRA" if instrument == "apogee" else "SPECTRA_BOSS"].data.astype(float)
    adapter = SdssvAdapter(instrument=instrument)
    robust, chi2_own, chi2_other = [], [], []
    for unit in adapter.discover(str(sim / "sim")).units:
        rec = adapter.read(unit)
        k = ids.index(rec.star_id)
        far = int(np.argmax(np.abs(teff - teff[k])))
        flux, ivar, _ = normalize(rec.visit_flux, rec.visit_ivar, adapter.grid)
        for f, w in zip(flux, ivar):
            good = w > 0
            chi = (f[good] - truth[k][good]) * np.sqrt(w[good])
            robust.append(1.4826 * np.median(np.abs(chi - np.median(chi))))
            chi2_own.append(np.mean(np.clip(chi**2, 0, 25)))  # clipped: unflagged cosmic rays stay in the data
            chi_far = (f[good] - truth[far][good]) * np.sqrt(w[good])
            chi2_other.append(np.mean(np.clip(chi_far**2, 0, 25)))
    assert 0.8 < np.median(robust) < (1.2 if instrument == "apogee" else 1.35), np.median(robust)
    assert np.median(chi2_other) > 1.5 * np.median(chi2_own), (np.median(chi2_other), np.median(chi2_own))


def test_same_seed_same_files_for_any_worker_count(tmp_path):
    from pairspec.surveys.sdssv.simulator import SIMULATOR

    for workers in (1, 2):
        SIMULATOR.simulate(tmp_path / f"w{workers}", n_stars=3, seed=4, workers=workers, progress=False)
    one = sorted(p.relative_to(tmp_path / "w1") for p in (tmp_path / "w1").rglob("mwm*.fits"))
    assert one == sorted(p.relative_to(tmp_path / "w2") for p in (tmp_path / "w2").rglob("mwm*.fits"))
    for rel in one:
        assert (tmp_path / "w1" / rel).read_bytes() == (tmp_path / "w2" / rel).read_bytes(), rel
    with pytest.raises(ValueError, match="not supported"):
        SIMULATOR.simulate(tmp_path / "s", n_stars=3, store_only=True)


@pytest.mark.slow
def test_simulate_ingest_train_predict_through_the_cli(sim, tmp_path):
    import torch

    torch.set_num_threads(1)
    store = tmp_path / "apogee.zarr"
    out = invoke("ingest", "sdssv", sim / "sim", store, "--workers", 1)
    info = json.loads(invoke("info", store, "--json"))
    with fits.open(sim / "sim/truth.fits") as h:
        truth = Table(h[1].data)
    n_apogee = int(np.sum(truth["has_apogee"]))
    assert info["n_stars"] == n_apogee and info["survey"] == "sdssv" and info["n_visits"] >= n_apogee
    assert "no APOGEE spectra" in out or n_apogee == len(truth)
    if boss_available():
        boss = tmp_path / "boss.zarr"
        invoke("ingest", "sdssv", sim / "sim", boss, "--workers", 1, "--option", "instrument=boss")
        assert json.loads(invoke("info", boss, "--json"))["n_stars"] == int(np.sum(truth["has_boss"]))

    run = tmp_path / "run"
    out = invoke("train", "recipes/sdssv_apogee.yaml", "--set", f"data.store={store}", "--set", f"run.out_dir={run}",
                 "--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "model.preset=tsn_tiny",
                 "--set", "model.drop_path=0.0", "--set", "data.stream=false", "--set", "train.device=cpu",
                 "--set", "train.bf16=false", "--set", "train.compile=false", "--set", "train.num_workers=0",
                 "--set", "train.init_from=null")
    assert (run / "best.pt").exists() and f"best checkpoint: {run / 'best.pt'}" in out

    invoke("predict", run / "best.pt", store, "-o", tmp_path / "labels.fits", "--device", "cpu")
    visits = Table.read(tmp_path / "labels.fits", hdu="VISITS", unit_parse_strict="silent")
    stars = Table.read(tmp_path / "labels.fits", hdu="STARS", unit_parse_strict="silent")
    assert len(visits) == info["n_visits"] and len(stars) == info["n_stars"]
    for col in ("teff", "e_teff", "logg", "fe_h", "mg_fe", "flag"):
        assert col in visits.colnames
    assert np.isfinite(np.asarray(visits["teff"], float)).all()
    assert set(np.char.strip(np.asarray(stars["star_id"]).astype(str))) <= set(truth["star_id"])

    with_apogee = set(truth["star_id"][truth["has_apogee"]])
    files = [str(p) for p in _visit_files(sim) if p.stem.split("-")[-1] in with_apogee][:3]
    invoke("predict", run / "best.pt", *files, "-o", tmp_path / "files.ecsv", "--device", "cpu")
    assert len(Table.read(tmp_path / "files.visits.ecsv")) >= 1
