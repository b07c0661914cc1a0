"""The issue's probe, case by case, for ingest / predict / info / validate: each ordinary mistake ends in an
`error:` line naming the input (exit code 1) and writes nothing, or in a correct result. CORPUS lists the
cases; benchmarks/robustness.py runs the same list and counts them."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fake_survey import FakeAdapter, ModelFakeAdapter, write_units
from tinymodel import make_checkpoint

from pairspec.cli import app
from pairspec.ingest import ingest
from pairspec.store import create_store, open_store

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny store (on the tiny model's grid), its checkpoint, and some broken inputs."""
    root = tmp_path_factory.mktemp("bad-input")
    src = write_units(root / "src", [f"S{i:04d}" for i in range(12)])
    ingest(ModelFakeAdapter(), str(src), str(root / "s.zarr"), workers=1, batch_size=8, chunk=8, progress=False)
    ckpt = make_checkpoint(root / "best.pt")
    data = ckpt.read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    (root / "text.pt").write_text("this is not a checkpoint\n" * 20)
    (root / "regular.zarr").write_text("a file where a store should be")
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((4, 4))).writeto(root / "apStar-dr17-2MNOTASPECTRUM.fits")  # an image, by its name
    fits.PrimaryHDU(np.zeros(3)).writeto(root / "catalog.fits")
    return root


def _fail(args, *expect):
    result = runner.invoke(app, [str(a) for a in args])
    out = result.output
    assert result.exit_code == 1, f"exit {result.exit_code}:\n{out}\n{result.exception!r}"
    assert "error:" in out and "Traceback" not in out, out
    for e in expect:
        assert str(e) in out, f"{e!r} not in:\n{out}"
    return out


# (name, arguments given the world folder, what the error line must contain)
CORPUS = [
    ("predict: missing file", lambda w: ["predict", w / "best.pt", w / "nope.fits", "-o", w / "o1.fits"], "nope.fits"),
    ("predict: unmatched glob", lambda w: ["predict", w / "best.pt", str(w / "apStar-*-X*.fits"), "-o", w / "o2.fits"],
     "no file matches"),
    ("predict: FITS that is not a spectrum", lambda w: ["predict", w / "best.pt", w / "apStar-dr17-2MNOTASPECTRUM.fits",
                                                        "-o", w / "o3.fits"], "none of the 1 input file(s) could be read"),
    ("predict: FITS not named as the survey's", lambda w: ["predict", w / "best.pt", w / "catalog.fits", "-o",
                                                           w / "o4.fits"], "catalog.fits"),
    ("predict: truncated checkpoint", lambda w: ["predict", w / "truncated.pt", w / "s.zarr", "-o", w / "o5.fits"],
     "truncated.pt: not a readable pairspec checkpoint"),
    ("predict: text checkpoint", lambda w: ["predict", w / "text.pt", w / "s.zarr", "-o", w / "o6.fits"],
     "text.pt: not a readable pairspec checkpoint"),
    ("predict: missing checkpoint", lambda w: ["predict", w / "none.pt", w / "s.zarr", "-o", w / "o7.fits"],
     "none.pt: no such checkpoint"),
    ("predict: store path is a regular file", lambda w: ["predict", w / "best.pt", w / "regular.zarr", "-o",
                                                         w / "o8.fits"], "regular.zarr: is a file"),
    ("predict: missing store", lambda w: ["predict", w / "best.pt", w / "absent.zarr", "-o", w / "o9.fits"],
     "absent.zarr: no such store"),
    ("predict: bad --split", lambda w: ["predict", w / "best.pt", w / "s.zarr", "--split", "tset", "-o", w / "o10.fits"],
     "--split must be one of train, val, test"),
    ("predict: --batch-size 0", lambda w: ["predict", w / "best.pt", w / "s.zarr", "--batch-size", 0, "-o",
                                           w / "o11.fits"], "--batch-size must be at least 1"),
    ("predict: unknown catalogue format", lambda w: ["predict", w / "best.pt", w / "s.zarr", "-o", w / "o12.csv"],
     "unknown catalogue format"),
    ("predict: --dask with files", lambda w: ["predict", w / "best.pt", w / "apStar-dr17-2MNOTASPECTRUM.fits", "-o",
                                              w / "o13.fits", "--dask", "local:1"], "predict on Dask reads a pair store"),
    ("evaluate: --masses for a model without c_fe/n_fe", lambda w: ["evaluate", w / "best.pt", w / "s.zarr",
                                                                    "--masses", w / "catalog.fits",
                                                                    "-o", w / "rep"],
     "C/N ages need the labels"),
    ("info: regular file", lambda w: ["info", w / "regular.zarr"], "regular.zarr: is a file"),
    ("info: truncated checkpoint", lambda w: ["info", w / "truncated.pt"], "truncated.pt: not a readable"),
    ("validate: regular file", lambda w: ["validate", w / "regular.zarr"], "regular.zarr: is a file"),
    ("validate: missing store", lambda w: ["validate", w / "absent.zarr"], "absent.zarr: not a pairspec store"),
    ("ingest: --limit -5", lambda w: ["ingest", "apogee", w, w / "i1.zarr", "--limit", -5], "--limit must be at least 1"),
    ("ingest: --batch-size 0", lambda w: ["ingest", "apogee", w, w / "i2.zarr", "--batch-size", 0],
     "--batch-size must be at least 1"),
    ("ingest: --workers 0", lambda w: ["ingest", "apogee", w, w / "i3.zarr", "--workers", 0], "--workers must be"),
    ("ingest: --dask and --scheduler", lambda w: ["ingest", "apogee", w, w / "i4.zarr", "--dask", "local",
                                                  "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    ("ingest: unknown survey", lambda w: ["ingest", "nosuchsurvey", w, w / "i5.zarr"], "nosuchsurvey"),
]


@pytest.mark.parametrize("name,args,expect", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_case_ends_in_a_clear_error(world, name, args, expect):
    before = sorted(p.name for p in world.iterdir())
    _fail(args(world), expect)
    after = sorted(p.name for p in world.iterdir())
    assert after == before  # nothing written: no empty catalogue, no half store


def test_ingest_api_refuses_bad_arguments(tmp_path):
    src = str(write_units(tmp_path / "src", ["A0001"]))
    for kw, msg in ((dict(limit=-5), "limit must be"), (dict(batch_size=0), "batch_size must be"),
                    (dict(chunk=0), "chunk must be"), (dict(workers=0), "workers must be")):
        with pytest.raises(ValueError, match=msg):
            ingest(FakeAdapter(), src, str(tmp_path / "s.zarr"), progress=False, **kw)
    assert not (tmp_path / "s.zarr").exists()


def test_store_path_that_is_a_file_is_refused_by_ingest(tmp_path):
    src = str(write_units(tmp_path / "src", ["A0001"]))
    (tmp_path / "s.zarr").write_text("precious")
    with pytest.raises(FileNotFoundError, match="s.zarr: is a file, not a pairspec store"):
        ingest(FakeAdapter(), src, str(tmp_path / "s.zarr"), workers=1, progress=False)
    assert (tmp_path / "s.zarr").read_text() == "precious"


class OtherRelease(FakeAdapter):
    release = "t2"


def test_appending_another_release_is_refused(tmp_path):
    """The probe appended DR17 data to a DR16 store silently."""
    src = str(write_units(tmp_path / "src", ["A0001", "A0002"]))
    ingest(FakeAdapter(), src, str(tmp_path / "s.zarr"), workers=1, progress=False, chunk=4)
    more = str(write_units(tmp_path / "more", ["B0001"]))
    with pytest.raises(ValueError, match="store holds fake t1; refusing to append fake t2 data"):
        ingest(OtherRelease(), more, str(tmp_path / "s.zarr"), workers=1, progress=False)
    assert open_store(str(tmp_path / "s.zarr")).n_stars == 2


def test_validate_reports_problems_with_exit_code_1(world, tmp_path):
    import shutil

    import zarr

    ok = runner.invoke(app, ["validate", str(world / "s.zarr")])
    assert ok.exit_code == 0 and "valid" in ok.output
    bad = tmp_path / "bad.zarr"
    shutil.copytree(world / "s.zarr", bad)
    g = zarr.open_group(str(bad), mode="r+")
    g["visits/ivar"][1, 5] = -2.0
    g["visits/flux"][3, 7] = np.nan
    split = g["stars/split"][:]
    split[0] = 7
    g["stars/split"][:] = split
    result = runner.invoke(app, ["validate", str(bad), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["valid"] is False
    text = "\n".join(report["problems"])
    assert "visits/ivar < 0 in rows [1]" in text and "visits/flux has NaN/inf in rows [3]" in text
    assert "stars/split has codes other than 0/1/2: [7]" in text
    g.attrs["n_visits"] = int(g.attrs["n_visits"]) + 4  # the probe's "n_visits sums to 540, but 544"
    out = runner.invoke(app, ["validate", str(bad)]).output
    assert "has" in out and "committed" in out
    # every reader refuses it now: predict (and train, which opens stores the same way)
    _fail(["predict", world / "best.pt", bad, "-o", tmp_path / "c.fits"], "bad.zarr: the store is inconsistent")
    info = runner.invoke(app, ["info", str(bad)])
    assert info.exit_code == 0 and "PROBLEMS" in info.output  # info describes, with the problems


def test_empty_new_store_then_validate(tmp_path):
    from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

    create_store(str(tmp_path / "e.zarr"), "fake", "t1", FakeAdapter.grid, APOGEE_CORE_SCHEMA)
    assert runner.invoke(app, ["validate", str(tmp_path / "e.zarr")]).exit_code == 0
