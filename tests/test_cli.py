"""The command line end to end on a tiny synthetic survey, through typer's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from astropy.table import Table
from typer.testing import CliRunner

from pairspec.cli import app

runner = CliRunner()
COMMANDS = ["simulate", "ingest", "train", "predict", "evaluate", "demo", "info"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"pairspec {' '.join(map(str, args))} failed:\n{result.output}\n{result.exception!r}"
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    out = invoke(command, "--help")
    assert "Usage" in out and command in out


@pytest.fixture(scope="module")
def tiny_survey(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli")
    invoke("simulate", "apogee", root / "sim", "--stars", 24, "--seed", 5)
    invoke("ingest", "apogee", root / "sim", root / "store.zarr", "--workers", 1)
    return root


def test_simulate_ingest_info(tiny_survey):
    out = invoke("info", tiny_survey / "store.zarr")
    assert "apogee dr17" in out and "valid: yes" in out
    summary = json.loads(invoke("info", tiny_survey / "store.zarr", "--json"))
    assert summary["n_stars"] == 24  # duplicate allStar rows are skipped, not extra stars
    assert summary["n_visits"] >= summary["n_stars"]
    assert sum(summary["splits"].values()) == summary["n_stars"]
    assert (tiny_survey / "store.zarr.ingest-report.json").exists()
    # a rerun is idempotent: nothing new, nothing duplicated
    out = invoke("ingest", "apogee", tiny_survey / "sim", tiny_survey / "store.zarr", "--workers", 1)
    again = json.loads(invoke("info", tiny_survey / "store.zarr", "--json"))
    assert again["n_stars"] == summary["n_stars"] and again["n_visits"] == summary["n_visits"]


def test_train_predict_evaluate(tiny_survey, tmp_path):
    store, run = tiny_survey / "store.zarr", tmp_path / "run"
    out = invoke(
        "train", "recipes/demo.yaml", "--set", f"data.store={store}", "--set", f"run.out_dir={run}",
        "--set", "train.epochs=1", "--set", "train.batch_size=16",
    )
    assert (run / "best.pt").exists() and (run / "config.yaml").exists()
    assert f"best checkpoint: {run / 'best.pt'}" in out
    assert "tsn_mini" in invoke("info", run / "best.pt")

    invoke("predict", run / "best.pt", store, "-o", tmp_path / "labels.fits", "--device", "cpu")
    visits = Table.read(tmp_path / "labels.fits", hdu="VISITS", unit_parse_strict="silent")
    stars = Table.read(tmp_path / "labels.fits", hdu="STARS", unit_parse_strict="silent")
    info = json.loads(invoke("info", store, "--json"))
    assert len(visits) == info["n_visits"] and len(stars) == info["n_stars"]
    for col in ("teff", "e_teff", "logg", "e_logg", "fe_h", "e_fe_h", "flag"):
        assert col in visits.colnames
    assert np.isfinite(np.asarray(visits["teff"], float)).mean() > 0.9

    files = sorted(str(p) for p in (tiny_survey / "sim").glob("*/*/a?Star-*.fits"))[:3]
    invoke("predict", run / "best.pt", *files, "-o", tmp_path / "files.ecsv", "--device", "cpu")
    assert (tmp_path / "files.visits.ecsv").exists() and (tmp_path / "files.stars.ecsv").exists()
    invoke("predict", run / "best.pt", *files, "-o", tmp_path / "compiled.ecsv", "--device", "cpu", "--compile")
    eager, compiled = (Table.read(tmp_path / f"{n}.visits.ecsv") for n in ("files", "compiled"))
    assert len(compiled) == len(eager) and np.allclose(compiled["teff"], eager["teff"], rtol=1e-4)

    invoke("evaluate", run / "best.pt", store, "--split", "all", "--truth", tiny_survey / "sim" / "truth.fits",
           "-o", tmp_path / "report")
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["scatter"]["tsn"]["truth"]["teff"]["all"]["n"] == len(visits)


def test_clear_errors(tiny_survey, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 1 and "epochz" in result.output and "bad.yaml" in result.output

    result = runner.invoke(app, ["ingest", "apogee", str(tmp_path / "nowhere"), str(tmp_path / "s.zarr")])
    assert result.exit_code == 1 and "nowhere" in result.output
    assert not (tmp_path / "s.zarr").exists()

    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1 and "not a pairspec store" in result.output

    result = runner.invoke(app, ["simulate", "nosuch", str(tmp_path / "x")])
    assert result.exit_code == 1 and "apogee" in result.output  # the message lists the simulators there are


def test_simulate_store_only(tmp_path):
    out = invoke("simulate", "apogee", tmp_path / "s", "--stars", 6, "--seed", 3, "--store-only")
    assert "wrote 6 stars" in out
    assert (tmp_path / "s" / "truth.fits").exists() and not (tmp_path / "s" / "apo25m").exists()
    assert "6 stars" in invoke("info", tmp_path / "s" / "apogee.zarr")
    again = runner.invoke(app, ["simulate", "apogee", str(tmp_path / "s"), "--stars", "6", "--store-only"])
    assert again.exit_code != 0 and "already exists" in again.output
