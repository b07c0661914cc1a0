"""Crash safety proven by SIGKILL at random moments (tests/crashkit.py): an ingest killed anywhere, even
twice, then rerun, gives the uninterrupted store checksum for checksum; a predict killed anywhere leaves the
previous catalogue or the new one, whole, never a truncated or mixed one."""

import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import crashkit
from fake_survey import ModelFakeAdapter, SlowFakeAdapter, write_units
from tinymodel import make_checkpoint

from pairspec import catalog
from pairspec.ingest import ingest
from pairspec.store import open_store

LINES = ([f"A{i:04d}" for i in range(40)] + ["BAD B0001", "BOOM B0002"] + [f"C{i:04d}" for i in range(40)]
         + ["DUP A0003"])
CHUNK = dict(batch=16, chunk=16)


def _state(path) -> int:
    """Stars a killed ingest left committed (-1: no store yet). What is committed must be consistent."""
    if not Path(path).exists():
        return -1
    try:
        store = open_store(path)  # check=True: the committed rows are whole
    except ValueError as err:
        assert "not a pairspec store" in str(err), err  # a creation cut off before its marker
        return -1
    return store.n_stars


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_killed_at_random_moments_resumes_to_the_same_store(tmp_path, workers):
    src = write_units(tmp_path / "src", LINES)
    ref = tmp_path / "ref.zarr"
    adapter = SlowFakeAdapter()
    adapter.delay = 0.0
    ingest(adapter, str(src), str(ref), workers=1, batch_size=16, chunk=16, progress=False)
    reference, full = crashkit.store_digest(ref), open_store(str(ref)).n_stars
    span = crashkit.timed_run(crashkit.ingest_script(src, tmp_path / "timed.zarr", workers, delay=0.01, **CHUNK))
    assert crashkit.store_digest(tmp_path / "timed.zarr") == reference
    rng, partial = random.Random(13 + workers), []
    for trial in range(2):
        path = tmp_path / f"t{trial}.zarr"
        script = crashkit.ingest_script(src, path, workers, delay=0.01, **CHUNK)
        for kill in range(2):  # killed, and the resumed run killed again
            delay = rng.uniform(0.1, 0.9) * span
            for _ in range(6):
                crashkit.kill_at(script, delay)
                n = _state(path)
                if kill > 0 or 0 < n < full:
                    break
                # the first kill came before the first commit or after the last (this run slower or faster
                # than the timed one: the machine's load changed): start over, later or sooner
                shutil.rmtree(path, ignore_errors=True)
                delay = delay / 2 if n == full else min(delay * 1.6, 3 * span)
            partial.append(_state(path))
        ingest(SlowFakeAdapter(), str(src), str(path), workers=workers, batch_size=16, chunk=16, progress=False)
        assert crashkit.store_digest(path) == reference, f"trial {trial}, kills left {partial[-2:]} stars"
        assert open_store(str(path)).validate() == []
    assert any(0 < n < full for n in partial), partial  # some kills really landed mid-ingest


def _tables_equal(a, b):
    for x, y in zip(a, b):
        assert x.colnames == y.colnames
        for c in x.colnames:
            u, v = np.asarray(x[c]), np.asarray(y[c])
            assert u.tolist() == v.tolist() or np.array_equal(u, v, equal_nan=True), c


@pytest.fixture(scope="module")
def predict_setup(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("crash-predict")
    src = write_units(root / "src", [f"S{i:04d}" for i in range(60)])
    ingest(ModelFakeAdapter(), str(src), str(root / "s.zarr"), workers=1, batch_size=16, chunk=16, progress=False)
    ckpt = make_checkpoint(root / "tiny.pt")
    torch.set_num_threads(1)
    from pairspec.predict import predict

    for ext in (".fits", ".parquet"):
        predict(ckpt, str(root / "s.zarr"), root / f"ref{ext}", batch_size=8, progress=False, device="cpu")
    return root, ckpt


def _kill_within(script, delay, check, tries=6) -> bool:
    """Kill the child `delay` s after its GO; where it had already finished (this run faster than the timed
    one: the machine's load changed, caches warmed) run it again and kill sooner. `check` runs after each
    try, killed or not: what was left must be whole either way. True once a kill landed."""
    for _ in range(tries):
        landed = crashkit.kill_at(script, delay)
        check()
        if landed:
            return True
        delay /= 2
    return False


@pytest.mark.parametrize("ext", [".parquet", ".fits"])
def test_predict_killed_at_random_moments_leaves_a_whole_catalogue(predict_setup, tmp_path, ext):
    root, ckpt = predict_setup
    ref = catalog.read_catalogue(root / f"ref{ext}")
    out = tmp_path / f"cat{ext}"
    script = crashkit.predict_script(ckpt, root / "s.zarr", out)
    span = crashkit.timed_run(script)
    _tables_equal(catalog.read_catalogue(out), ref)
    rng, killed = random.Random(7), 0
    for _ in range(2):  # over an existing catalogue: the old one or the new one, whole
        killed += _kill_within(script, rng.uniform(0.05, 1.0) * span, lambda: _tables_equal(
            catalog.read_catalogue(out), ref))
    fresh = tmp_path / f"fresh{ext}"  # no catalogue yet: none, or a whole one
    killed += _kill_within(crashkit.predict_script(ckpt, root / "s.zarr", fresh), 0.5 * span, lambda: None)
    assert killed == 3
    if any(p.exists() for p in catalog.catalogue_paths(fresh)):
        _tables_equal(catalog.read_catalogue(fresh), ref)
    from pairspec.predict import predict

    predict(ckpt, str(root / "s.zarr"), out, batch_size=8, progress=False, device="cpu")
    predict(ckpt, str(root / "s.zarr"), fresh, batch_size=8, progress=False, device="cpu")
    _tables_equal(catalog.read_catalogue(fresh), ref)
    # the next writes swept the temporary files the killed runs left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


BETWEEN_RENAMES = """
import os, sys
sys.path.insert(0, {here!r})
from pairspec import catalog
from test_catalog import _tables
renames = []
real = os.replace
def dying_replace(a, b):
    real(a, b)
    if str(b).endswith(".visits.parquet"):
        os._exit(9)  # killed between the two renames of a two-file catalogue
os.replace = dying_replace
v, s = _tables()
catalog.write_catalogue(v, s, {out!r})
"""


def test_kill_between_the_renames_is_rolled_forward(tmp_path):
    import subprocess

    from test_catalog import _tables

    out = tmp_path / "cat.parquet"
    old_v, old_s = _tables()
    old_v["teff"] += 1000  # an older, different catalogue
    catalog.write_catalogue(old_v, old_s, out)
    run = subprocess.run([sys.executable, "-c", BETWEEN_RENAMES.format(here=str(HERE), out=str(out))],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 9, run.stderr
    from astropy.table import Table

    half_v, half_s = Table.read(tmp_path / "cat.visits.parquet"), Table.read(tmp_path / "cat.stars.parquet")
    assert half_v.meta["RUNID"] != half_s.meta["RUNID"]  # the mixed pair a kill leaves on disk ...
    assert (tmp_path / ".cat.catalogue-commit.json").exists()  # ... with its commit record
    visits, stars = catalog.read_catalogue(out)  # ... is completed by the next reader
    new_v, _ = _tables()
    assert visits.meta["RUNID"] == stars.meta["RUNID"]
    np.testing.assert_array_equal(np.asarray(visits["teff"]), np.asarray(new_v["teff"]))
    assert not (tmp_path / ".cat.catalogue-commit.json").exists()
