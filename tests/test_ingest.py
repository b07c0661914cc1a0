"""Ingest: skips reported, resume after a crash gives the uninterrupted store, reruns add nothing,
parallel writers give the single-writer store."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fake_survey import FakeAdapter, WideFakeAdapter, write_units

from pairspec.ingest import format_report, ingest
from pairspec.store import open_store

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
    assert "star N is already in the store" in text  # the reason, its id left out, groups such skips
    again = ingest(FakeAdapter(), str(src), store_path, workers=1, batch_size=8, progress=False, chunk=4)
    assert (again.n_stars, again.already_present, again.store_n_stars) == (0, 23, 23)
    assert len(again.skipped) == 4


def test_the_report_groups_skips_by_reason_and_says_where_the_rest_are():
    from pairspec.ingest.report import IngestReport
    from pairspec.surveys.base import Skip

    skips = [Skip(f"s/{i}.fits", f"summary row(s) of sdss_id {i} but no mwmVisit file", str(i)) for i in range(6)]
    report = IngestReport(store="out.zarr", n_stars=2, store_n_stars=2, skipped=skips + [Skip("x", "corrupt", "x")])
    text = format_report(report)
    assert "       6  summary row(s) of sdss_id N but no mwmVisit file" in text
    assert "... 3 more, in out.zarr.ingest-report.json" in text
    nothing = format_report(IngestReport(store="out.zarr", skipped=skips))
    assert "store out.zarr" not in nothing and "3 more, not listed (no store was written)" in nothing


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


# 'BAD'/'BOOM' unit ids sort between the A and C stars: the star rows of later batches are not chunk
# aligned, so both the stars/ and the visits/ heads of a batch are exercised, and "DUP" at the end.
WIDE_LINES = ([f"A{i:05d}" for i in range(30)] + ["BAD B0001", "BOOM B0002"] + [f"C{i:05d}" for i in range(60)]
              + ["DUP A00003"])
WIDE = dict(batch_size=32, progress=False, chunk=32)  # shards of 32 rows = 2 inner chunks of 16


def _assert_same_store(a, b):
    attrs_a, arrays_a = _snapshot(a)
    attrs_b, arrays_b = _snapshot(b)
    assert attrs_a == attrs_b
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        assert arrays_a[name].shape == arrays_b[name].shape, name
        assert arrays_a[name].tolist() == arrays_b[name].tolist() or np.array_equal(
            arrays_a[name], arrays_b[name], equal_nan=True), name
    assert open_store(a).validate() == []


def test_parallel_writers_give_the_single_writer_store(tmp_path):
    src = str(write_units(tmp_path / "src", WIDE_LINES))
    ref, par, mixed = (str(tmp_path / f"{n}.zarr") for n in ("ref", "par", "mixed"))
    one = ingest(WideFakeAdapter(), src, ref, workers=1, **WIDE)
    two = ingest(WideFakeAdapter(), src, par, workers=2, **WIDE)
    assert (two.n_stars, two.n_visits, two.masked_fraction) == (one.n_stars, one.n_visits, one.masked_fraction)
    assert two.skipped == one.skipped and len(one.skipped) == 3
    assert open_store(par).visit_spectra(slice(None))[0].shape[1] == 200
    _assert_same_store(par, ref)
    # a store left by a single-writer run at a row count that is not chunk aligned, finished in parallel
    first = ingest(WideFakeAdapter(), src, mixed, workers=1, limit=37, **WIDE)
    assert first.n_stars == 35 and open_store(mixed).n_visits % 32
    rest = ingest(WideFakeAdapter(), src, mixed, workers=3, **WIDE)
    assert rest.already_present == 35 and rest.n_stars == one.n_stars - 35  # BAD, BOOM are tried again
    _assert_same_store(mixed, ref)


PARALLEL_CRASH = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {here!r})
    from fake_survey import WideFakeAdapter
    from pairspec.ingest import ingest
    def crash(k):
        if k == 2:  # two batches committed, later ones written (or being written) by the workers
            os._exit(1)
    ingest(WideFakeAdapter(), {src!r}, {store!r}, workers=2, batch_size=32, progress=False, chunk=32,
           _after_batch=crash)
""")


def test_parallel_resume_after_crash_matches_uninterrupted(tmp_path):
    src = str(write_units(tmp_path / "src", WIDE_LINES))
    crashed, ref = str(tmp_path / "crashed.zarr"), str(tmp_path / "ref.zarr")
    run = subprocess.run([sys.executable, "-c", PARALLEL_CRASH.format(here=str(HERE), src=src, store=crashed)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    partial = open_store(crashed)
    assert partial.n_stars == 40  # batches of 24 and 18 units (_guided_batches); BAD, BOOM in the second
    resumed = ingest(WideFakeAdapter(), src, crashed, workers=2, **WIDE)
    assert resumed.already_present == 40 and resumed.n_stars == 50
    ingest(WideFakeAdapter(), src, ref, workers=1, **WIDE)
    _assert_same_store(crashed, ref)


def test_dead_worker_stops_the_ingest(tmp_path):
    import pytest

    src = str(write_units(tmp_path / "src", [f"A{i:05d}" for i in range(8)] + ["EXIT B0001"]))
    with pytest.raises(RuntimeError, match="died"):
        ingest(FakeAdapter(), src, str(tmp_path / "s.zarr"), workers=2, batch_size=4, chunk=4, progress=False)
    assert open_store(str(tmp_path / "s.zarr"), mode="a").validate() == []  # what was committed is whole


READER_POOL_DEATH = textwrap.dedent("""
    import sys, uuid
    sys.path.insert(0, {here!r})
    from fake_survey import FakeAdapter
    from pairspec.ingest import ingest
    from pairspec.store import open_store
    url = f"memory://pairspec-ingest-{{uuid.uuid4().hex}}/s.zarr"
    try:
        ingest(FakeAdapter(), {src!r}, url, workers=2, batch_size=4, chunk=4, progress=False)
    except RuntimeError as err:
        assert open_store(url, mode="a").validate() == []
        print("RAISED", err)
""")


def test_dead_reader_in_the_pool_stops_the_ingest(tmp_path):
    """The reader pool (stores other processes cannot open) used to wait for ever when a reader died."""
    src = str(write_units(tmp_path / "src", [f"A{i:05d}" for i in range(8)] + ["EXIT B0001"]))
    run = subprocess.run([sys.executable, "-c", READER_POOL_DEATH.format(here=str(HERE), src=src)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "RAISED an ingest reader process died" in run.stdout, run.stdout + run.stderr


def test_reader_pool_for_a_store_other_processes_cannot_open(tmp_path):
    """memory:// is private to this process: workers only read (a pool, bounded look-ahead)."""
    import uuid

    import zarr

    url = f"memory://pairspec-ingest-{uuid.uuid4().hex}/s.zarr"
    src = write_units(tmp_path / "src", LINES)
    report = ingest(FakeAdapter(), str(src), url, workers=2, batch_size=8, progress=False, chunk=4)
    assert (report.n_stars, len(report.skipped)) == (23, 4)
    store = open_store(url)
    assert store.validate() == [] and sorted(store.star_table()["id"]) == [f"2M{i:05d}" for i in range(23)]
    assert zarr.open_group(url, mode="r").attrs["n_stars"] == 23


UNGUARDED_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    from fake_survey import FakeAdapter
    from pairspec.ingest import ingest
    ingest(FakeAdapter(), {src!r}, {store!r}, workers=2, batch_size=4, chunk=4, progress=False)
""")


def test_a_script_without_a_main_guard_fails_instead_of_hanging(tmp_path):
    """Spawned workers import the main script; one that calls ingest at import used to make every worker
    wait for ever on the store lock its parent holds. Now the workers refuse, and the ingest stops."""
    src = str(write_units(tmp_path / "src", [f"A{i:05d}" for i in range(8)]))
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT.format(here=str(HERE), src=src, store=str(tmp_path / "s.zarr")))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert 'if __name__ == "__main__"' in run.stderr and "died" in run.stderr, run.stderr[-2000:]


def test_a_worker_whose_ingest_is_already_gone_exits_before_it_writes():
    """The kernel's death signal only covers a parent alive when the worker asks for it. A worker still
    starting when its ingest was killed must not serve the write orders left in its inbox (into rows a
    rerun may have committed since): it exits when its parent is no longer the one that started it."""
    code = ("from pairspec.ingest.parallel import die_with_parent\n"
            "import os\n"
            "die_with_parent(os.getppid())\n"
            "print('alive with its parent')\n"
            "die_with_parent(os.getppid() + 1)  # a parent that is not ours any more: the ingest died\n"
            "print('wrote after its ingest died')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["alive with its parent"]
