"""Gaia RVS end to end through the command line: simulate -> ingest -> train (tiny, CPU) -> predict."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from astropy.table import Table
from typer.testing import CliRunner

from pairspec.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"pairspec {' '.join(map(str, args))} failed:\n{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gaia-cli")
    invoke("simulate", "gaia_rvs", root / "sim", "--stars", 24, "--seed", 5)
    invoke("ingest", "gaia_rvs", root / "sim", root / "store.zarr", "--workers", 1)
    return root


def test_simulate_is_deterministic_and_ingest_reads_it(survey, tmp_path):
    invoke("simulate", "gaia_rvs", tmp_path / "again", "--stars", 24, "--seed", 5)
    digest = {p.relative_to(survey / "sim"): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted((survey / "sim").rglob("*")) if p.is_file()}
    again = {p.relative_to(tmp_path / "again"): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((tmp_path / "again").rglob("*")) if p.is_file()}
    assert digest == again and len(digest) > 6
    info = json.loads(invoke("info", survey / "store.zarr", "--json"))
    truth = Table.read(survey / "sim" / "truth.fits", hdu=1)
    assert 18 <= info["n_stars"] <= 24  # a few sources are skipped (too few transits, duplicates)
    assert info["n_visits"] == 4 * info["n_stars"]  # four synthetic copies per star
    assert "valid: yes" in invoke("info", survey / "store.zarr")
    from pairspec.store import open_store

    ids = set(open_store(str(survey / "store.zarr")).star_table()["id"])
    assert ids <= set(np.char.strip(np.asarray(truth["star_id"]).astype(str)))


def test_train_and_predict_on_the_store_and_on_files(survey, tmp_path):
    store, run = survey / "store.zarr", tmp_path / "run"
    out = invoke("train", "recipes/gaia_rvs.yaml", "--set", f"data.store={store}", "--set", f"run.out_dir={run}",
                 "--set", "train.epochs=1", "--set", "model.preset=tsn_tiny", "--set", "train.batch_size=16",
                 "--set", "train.device=cpu")
    assert (run / "best.pt").exists() and f"best checkpoint: {run / 'best.pt'}" in out
    invoke("predict", run / "best.pt", store, "-o", tmp_path / "labels.fits", "--device", "cpu")
    visits = Table.read(tmp_path / "labels.fits", hdu="VISITS", unit_parse_strict="silent")
    stars = Table.read(tmp_path / "labels.fits", hdu="STARS", unit_parse_strict="silent")
    info = json.loads(invoke("info", store, "--json"))
    assert len(visits) == info["n_visits"] and len(stars) == info["n_stars"]
    for col in ("teff", "e_teff", "logg", "fe_h", "alpha_fe", "e_alpha_fe"):
        assert col in visits.colnames
    assert np.isfinite(np.asarray(visits["teff"], float)).mean() > 0.9
    # the star catalogue says the visits it combined are synthetic copies of one mean spectrum
    assert stars.meta["SURVEY"] == "gaia_rvs" and stars.meta["SFLAG0"] == "SYNTHETIC_TWINS"
    assert ((np.asarray(stars["survey_flags"]) & 1) != 0).all()
    # the datalink FITS files themselves: each one-spectrum file is one visit; the RAW file is refused
    files = sorted(str(p) for p in (survey / "sim" / "datalink").glob("*.fits"))
    invoke("predict", run / "best.pt", *files, "-o", tmp_path / "files.fits", "--device", "cpu")
    from_files = Table.read(tmp_path / "files.fits", hdu="VISITS", unit_parse_strict="silent")
    singles = [f for f in files if "RAW" not in f]
    assert len(from_files) == len(singles) and all(v.endswith(":mean") for v in from_files["visit_id"])
    file_stars = Table.read(tmp_path / "files.fits", hdu="STARS", unit_parse_strict="silent")
    assert ((np.asarray(file_stars["survey_flags"]) & 1) == 0).all()  # the mean itself: no synthetic twin
