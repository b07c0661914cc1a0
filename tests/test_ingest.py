"""Ingest: skips reported, resume after a crash gives the uninterrupted store, reruns add nothing."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fake_survey import FakeAdapter, write_units  # noqa: E402

from pairspec.ingest import format_report, ingest  # noqa: E402
from pairspec.store import open_store  # noqa: E402

LINES = [f"2M{i:05d}" for i in range(23)] + ["BAD 2M90001", "BOOM 2M90002", "DUP 2M00003", "SKIPROW 2M90003"]


def test_skips_reported_rest_ingested(tmp_path):
    src = write_units(tmp_path / "src", LINES)
    store_path = str(tmp_path / "s.zarr")
    report = ingest(FakeAdapter(), str(src), store_path, workers=1, batch_size=8, progress=False, chunk=4)
    assert (report.n_stars, report.store_n_stars) == (23, 23)
    problems = sorted((s.star_id, s.problem.split(":")[0]) for s in report.skipped)
    assert problems == [("2M00003", "star 2M00003 is already in the store"), ("2M90001", "corrupt file"),
                        ("2M90002", "RuntimeError"), ("2M90003", "row without a file")]
    store = open_store(store_path)
    assert store.validate() == [] and store.n_visits == report.n_visits
    assert sorted(store.star_table()["id"]) == [f"2M{i:05d}" for i in range(23)]
    assert 0.02 < report.masked_fraction < 0.09  # fake visits mask ~5 % of pixels
    on_disk = json.loads(Path(store_path + ".ingest-report.json").read_text())
    assert len(on_disk["skipped"]) == 4 and on_disk["n_stars"] == 23
    assert len(store.attrs["last_ingest"]["skipped"]) == 4
    text = format_report(report)
    assert "ingested 23 stars" in text and "skipped 4 units" in text and "corrupt file" in text
    again = ingest(FakeAdapter(), str(src), store_path, workers=1, batch_size=8, progress=False, chunk=4)
    assert (again.n_stars, again.already_present, again.store_n_stars) == (0, 23, 23)
    assert len(again.skipped) == 4


def test_limit_and_batches_chunk_aligned(tmp_path):
    src = write_units(tmp_path / "src", LINES)
    calls = []
    report = ingest(FakeAdapter(), str(src), str(tmp_path / "s.zarr"), workers=1, batch_size=300,
                    progress=True, chunk=4, limit=10, _after_batch=calls.append)
    assert report.n_stars == 10 and calls == [1]
    # the first 10 unit ids in sorted order: u/2M00000 .. u/2M00009 ("u/BAD..." etc. sort after)
    assert sorted(open_store(str(tmp_path / "s.zarr")).sources) == [f"u/2M{i:05d}" for i in range(10)]


CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {here!r})
    from fake_survey import FakeAdapter
    from pairspec import store as store_mod
    from pairspec.ingest import ingest
    original, calls = store_mod.PairStore._commit, []
    def crashing_commit(self, *args):
        calls.append(1)
        if len(calls) == 3:  # third batch: its data is written, the commit never happens
            os._exit(1)
        original(self, *args)
    store_mod.PairStore._commit = crashing_commit
    ingest(FakeAdapter(), {src!r}, {store!r}, workers=1, batch_size=4, progress=False, chunk=4)
""")


def _snapshot(path):
    import zarr

    g = zarr.open_group(path, mode="r")
    attrs = dict(g.attrs)
    attrs["provenance"] = {k: v for k, v in attrs["provenance"].items() if k != "created"}
    attrs["last_ingest"] = attrs["last_ingest"]["skipped"]
    arrays = {name: np.asarray(a[:]) for name, a in g.arrays()}
    for sub in ("stars", "visits"):
        arrays.update({f"{sub}/{name}": np.asarray(a[:]) for name, a in g[sub].arrays()})
    return attrs, arrays


def test_resume_after_crash_matches_uninterrupted(tmp_path):
    src = write_units(tmp_path / "src", LINES)
    crashed, ref = str(tmp_path / "crashed.zarr"), str(tmp_path / "ref.zarr")
    script = CRASH_SCRIPT.format(here=str(HERE), src=str(src), store=crashed)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    partial = open_store(crashed)
    assert partial.n_stars == 8  # two committed batches of 4
    assert any("interrupted append" in p for p in partial.validate())
    resumed = ingest(FakeAdapter(), str(src), crashed, workers=2, batch_size=4, progress=False, chunk=4)
    assert resumed.already_present == 8 and resumed.n_stars == 15
    ingest(FakeAdapter(), str(src), ref, workers=1, batch_size=4, progress=False, chunk=4)
    attrs_a, arrays_a = _snapshot(crashed)
    attrs_b, arrays_b = _snapshot(ref)
    assert attrs_a == attrs_b
    assert arrays_a.keys() == arrays_b.keys() and len(arrays_a) == 2 + 18 + 9
    for name in arrays_a:
        assert arrays_a[name].shape == arrays_b[name].shape, name
        assert arrays_a[name].tolist() == arrays_b[name].tolist() or np.array_equal(
            arrays_a[name], arrays_b[name], equal_nan=True), name
    assert open_store(crashed).validate() == []
