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
    # the simulator writes 6 of DR17's 27 labels: the other 21 are named once, not listed at 0 % each
    assert "teff 100%" in out.replace("99%", "100%") and " 0%" not in out
    assert "21 labels of the schema no star has (c_fe, ci_fe ... yb_fe)" in out
    assert "provenance: " in out and "adapter ApogeeDR17Adapter with workers=" not in out
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
    # stdout is not a terminal here (as in a batch job's log): the epoch's summary and the bar's tenths are
    # plain lines, printed as the training goes, not a live bar drawn only at the end
    assert "demo-tsn epoch 1/1, step " in out and "train loss " in out and "val loss " in out
    assert "(100 %)" in out
    assert "tsn_mini" in invoke("info", run / "best.pt")
    # 24 stars leave too few repeat pairs in the val split to split the errors: said, and the catalogue's
    # star errors are not averaged down (CALMETH one-part)
    assert "repeat pairs, fewer than the 30" in out and "CALMETH one-part" in out

    invoke("predict", run / "best.pt", store, "-o", tmp_path / "labels.fits", "--device", "cpu")
    visits = Table.read(tmp_path / "labels.fits", hdu="VISITS", unit_parse_strict="silent")
    stars = Table.read(tmp_path / "labels.fits", hdu="STARS", unit_parse_strict="silent")
    assert stars.meta["CALMETH"] == "one-part"
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
    assert again.exit_code != 0 and "not empty" in again.output


def _fails(*args, says: str):
    """The command ends with exit code 1 and one `error:` line that says `says` (no Python traceback)."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, f"pairspec {' '.join(map(str, args))}: exit {result.exit_code}\n{result.output}"
    assert says in result.output and "error:" in result.output, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (ValueError, OSError)), result.output
    return result.output


def test_user_mistakes_in_train_are_one_line_errors(tiny_survey, tmp_path):
    base = ["train", "recipes/demo.yaml", "--set", f"run.out_dir={tmp_path / 'run'}"]
    _fails(*base, "--set", f"data.store={tmp_path / 'nowhere.zarr'}", says="nowhere.zarr")
    _fails(*base, "--set", f"data.store={tiny_survey / 'store.zarr'}", "--set", "train.epochs=[1",
           says="not valid YAML")
    _fails(*base, "--set", f"data.store={tiny_survey / 'store.zarr'}", "--set", "train.device=gpu",
           says="train.device")
    _fails(*base, "--set", f"data.store={tiny_survey / 'store.zarr'}", "--set", "data.labels=[teff,nolabel]",
           says="nolabel")
    _fails("train", tiny_survey, says="a folder, not a recipe")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    _fails("train", binary, says="not a text file")


def test_resuming_on_other_stars_is_refused(tiny_survey, tmp_path):
    """data.store may move between runs of one recipe, but not change: a resume on a store that gives
    other train twins (here: a store of the first 12 stars) would continue weights learned elsewhere."""
    store, fewer, run = tiny_survey / "store.zarr", tmp_path / "fewer.zarr", tmp_path / "run"
    invoke("ingest", "apogee", tiny_survey / "sim", fewer, "--workers", 1, "--limit", 12)
    args = ["train", "recipes/demo.yaml", "--set", f"run.out_dir={run}", "--set", "train.epochs=1",
            "--set", "train.batch_size=4", "--set", "train.max_steps=2"]
    invoke(*args, "--set", f"data.store={store}")
    config_before = (run / "config.yaml").read_text()
    _fails(*args, "--set", f"data.store={fewer}", says="train twins")
    assert (run / "config.yaml").read_text() == config_before  # the run's record still names its own store
    moved = tmp_path / "moved.zarr"
    import shutil

    shutil.copytree(store, moved)  # the same store elsewhere: the resume goes on
    assert "best checkpoint" in invoke(*args, "--set", f"data.store={moved}")


def test_user_mistakes_in_ingest_predict_evaluate(tiny_survey, tmp_path):
    sim, store = tiny_survey / "sim", tiny_survey / "store.zarr"
    _fails("ingest", "apogee", sim, tmp_path / "o.zarr", "--workers", 1, "--option", 'strict="false"',
           says="true or false")
    _fails("ingest", "apogee", sim, tmp_path / "o.zarr", "--workers", 1, "--option", "strict=[1",
           says="not valid YAML")
    assert not (tmp_path / "o.zarr").exists()
    # appending with other reading rules would mix two maskings in one store
    _fails("ingest", "apogee", sim, store, "--workers", 1, "--strict", says="other adapter options")
    # every unit unreadable: an error, not a success with 0 stars
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(sim, broken)
    for f in broken.glob("*/*/a?Star-*.fits"):
        f.write_bytes(f.read_bytes()[:4000])
    _fails("ingest", "apogee", broken, tmp_path / "b.zarr", "--workers", 1, says="nothing was ingested")
    assert not (tmp_path / "b.zarr").exists()  # no 0-star store left to fix the grid and options of a rerun

    run = tmp_path / "run"
    invoke("train", "recipes/demo.yaml", "--set", f"data.store={store}", "--set", f"run.out_dir={run}",
           "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", "train.max_steps=2")
    n_visits = json.loads(invoke("info", store, "--json"))["n_visits"]
    _fails("predict", run / "best.pt", store, "--denoised", store, "-o", tmp_path / "c.fits", says="a pair store")
    assert json.loads(invoke("info", store, "--json"))["n_visits"] == n_visits  # the input store is whole
    a_file = tmp_path / "report.txt"
    a_file.write_text("not a folder")
    _fails("evaluate", run / "best.pt", store, "-o", a_file, says="a file is here")
    cut = tmp_path / "truth_cut.fits"
    cut.write_bytes((sim / "truth.fits").read_bytes()[:50000])
    _fails("evaluate", run / "best.pt", store, "--split", "all", "--truth", cut, "-o", tmp_path / "rep",
           says="truth_cut.fits")


def test_training_without_a_val_split_says_what_that_costs(tiny_survey, tmp_path):
    """A store too small to have val stars trains (a trial), but the user is told that best.pt is then the
    last epoch and its sigmas are uncalibrated."""
    few = tmp_path / "few.zarr"
    invoke("ingest", "apogee", tiny_survey / "sim", few, "--workers", 1, "--limit", 5)
    assert json.loads(invoke("info", few, "--json"))["splits"]["val"] == 0  # the hash split of these 5 stars
    out = invoke("train", "recipes/demo.yaml", "--set", f"data.store={few}", "--set", f"run.out_dir={tmp_path / 'r'}",
                 "--set", "train.epochs=1", "--set", "train.batch_size=2", "--set", "train.max_steps=2")
    assert "warning:" in out and "val split has no twins" in out and "uncalibrated" in out


def test_info_names_the_labels_no_star_has_once():
    from pairspec.info import _coverage_line

    assert _coverage_line({"teff": 1.0, "logg": 0.5, "c_fe": 0.0}) == (
        "  labels (fraction present): teff 100%, logg 50%; no star has c_fe")
    assert _coverage_line({"a": 0.0, "b": 0.0, "c": 0.0, "d": float("nan")}) == (
        "  labels (fraction present): none; 4 labels of the schema no star has (a, b ... d)")


def test_an_interrupted_training_says_how_to_resume(tmp_path, monkeypatch):
    import pairspec.train as T

    def interrupted(config, progress=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train", interrupted)
    result = runner.invoke(app, ["train", "recipes/demo.yaml", "--set", f"run.out_dir={tmp_path / 'run'}",
                                 "--set", f"data.store={tmp_path / 's.zarr'}"])
    assert result.exit_code == 130
    assert f"interrupted: rerun the same command to resume {tmp_path / 'run'} from its last.pt" in result.output


def test_compare_names_must_be_free_and_distinct(tmp_path):
    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(b"x")
    _fails("evaluate", ckpt, tmp_path, "--compare", f"tsn={ckpt}", says="'tsn' names one of evaluate's own rows")
    _fails("evaluate", ckpt, tmp_path, "--compare", f"a={ckpt}", "--compare", f"a={ckpt}",
           says="the name 'a' is given twice")
