"""LAMOST end to end through the command line (typer's CliRunner): simulate -> ingest (MRS and LRS) ->
train a tiny TSN from recipes/lamost_mrs.yaml on the CPU -> predict."""

from __future__ import annotations

import json

import numpy as np
import torch
from astropy.table import Table
from typer.testing import CliRunner

from pairspec.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"pairspec {' '.join(map(str, args))} failed:\n{result.output}\n{result.exception!r}"
    return result.output


def test_simulate_ingest_train_predict(tmp_path):
    torch.set_num_threads(1)
    sim, store, run = tmp_path / "sim", tmp_path / "mrs.zarr", tmp_path / "run"
    assert "MRS files" in invoke("simulate", "lamost", sim, "--stars", 14, "--seed", 4)
    invoke("ingest", "lamost", sim, store, "--workers", 1)
    info = json.loads(invoke("info", store, "--json"))
    assert info["n_stars"] == 14 and info["n_visits"] > 28
    assert "lamost mrs" in invoke("info", store) and "valid: yes" in invoke("info", store)

    out = invoke("train", "recipes/lamost_mrs.yaml", "--set", f"data.store={store}", "--set", f"run.out_dir={run}",
                 "--set", "train.epochs=1", "--set", "model.preset=tsn_tiny", "--set", "train.batch_size=16",
                 "--set", "train.device=cpu")
    assert f"best checkpoint: {run / 'best.pt'}" in out

    invoke("predict", run / "best.pt", store, "-o", tmp_path / "labels.fits", "--device", "cpu")
    visits = Table.read(tmp_path / "labels.fits", hdu="VISITS", unit_parse_strict="silent")
    stars = Table.read(tmp_path / "labels.fits", hdu="STARS", unit_parse_strict="silent")
    assert len(visits) == info["n_visits"] and len(stars) == info["n_stars"]
    for col in ("teff", "e_teff", "logg", "fe_h", "alpha_fe", "e_alpha_fe", "flag"):
        assert col in visits.colnames
    assert np.isfinite(np.asarray(visits["teff"], float)).mean() > 0.9

    lrs = tmp_path / "lrs.zarr"
    invoke("ingest", "lamost", sim, lrs, "--workers", 1, "--option", "resolution=lrs")
    lrs_info = json.loads(invoke("info", lrs, "--json"))
    assert 0 < lrs_info["n_stars"] < 14 and "3534 px" in invoke("info", lrs)


def test_clear_errors(tmp_path):
    result = runner.invoke(app, ["simulate", "lamost", str(tmp_path / "s"), "--stars", "2", "--store-only"])
    assert result.exit_code == 1 and "not supported" in result.output
    result = runner.invoke(app, ["ingest", "lamost", str(tmp_path), str(tmp_path / "s.zarr")])
    assert result.exit_code == 1 and "no LAMOST MRS files" in result.output
    result = runner.invoke(app, ["ingest", "lamost", str(tmp_path), str(tmp_path / "s.zarr"), "--option",
                                 "resolution=hrs"])
    assert result.exit_code == 1 and "resolution" in result.output
    assert not (tmp_path / "s.zarr").exists()
