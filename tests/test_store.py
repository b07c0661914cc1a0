"""Pair store: round trip, views, refusals, split, validation, crash repair, URLs, spectra writer."""

import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_survey import FAKE_GRID, make_record

from pairspec.store import create_spectra_store, create_store, open_store, split_of
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA


def _records(n, start=0):
    return [make_record(f"2M{i:05d}", f"u/{i:05d}") for i in range(start, start + n)]


def _new(path, chunk=4):
    return create_store(str(path), "fake", "t1", FAKE_GRID, APOGEE_CORE_SCHEMA, {"source": "x"}, chunk=chunk)


def test_round_trip_values_exact(tmp_path):
    recs = _records(11)
    store = _new(tmp_path / "s.zarr")
    store.append(recs[:5])
    store.append(recs[5:])
    s = open_store(str(tmp_path / "s.zarr"))
    assert (s.n_stars, s.n_visits) == (11, sum(r.n_visits for r in recs))
    assert s.sources == {r.source for r in recs}
    stars, visits = s.star_table(), s.visit_table()
    assert stars["id"].tolist() == [r.star_id for r in recs]
    assert stars["n_visits"].tolist() == [r.n_visits for r in recs]
    np.testing.assert_array_equal(stars["ra"], [r.meta["ra"] for r in recs])
    assert stars["telescope"][3] == "apo25m" and '"h": 11.5' in stars["meta_json"][0]
    np.testing.assert_array_equal(s.labels(), np.stack([r.labels for r in recs]))  # NaN where missing
    np.testing.assert_array_equal(s.label_flags(), np.stack([r.label_flags for r in recs]))
    for i, r in enumerate(recs):
        a, n = stars["first_visit"][i], r.n_visits
        flux, ivar, mask = s.visit_spectra(slice(a, a + n))
        np.testing.assert_array_equal(flux, r.visit_flux)
        np.testing.assert_array_equal(ivar, r.visit_ivar)
        np.testing.assert_array_equal(mask, r.visit_pixmask)
        assert visits["visit_id"][a:a + n].tolist() == r.visit_id
        assert (visits["star"][a:a + n] == i).all()
    cflux, _civar, cmask = s.star_spectra(np.array([7, 2, 7]))
    np.testing.assert_array_equal(cflux[1], recs[2].coadd_flux)
    np.testing.assert_array_equal(cflux[0], cflux[2])
    assert cflux.dtype == np.float32 and cmask.dtype == np.int64
    np.testing.assert_allclose(s.wavelength, FAKE_GRID.wavelength())
    assert s.validate() == []


def test_xarray_and_plain_zarr(tmp_path):
    import zarr

    recs = _records(6)
    _new(tmp_path / "s.zarr").append(recs)
    ds = open_store(str(tmp_path / "s.zarr")).to_xarray()
    nv = sum(r.n_visits for r in recs)
    assert dict(ds.sizes) == {"star": 6, "visit": nv, "pixel": 64, "label": 4}
    assert ds["labels"].dims == ("star", "label") and ds["visit_flux"].dims == ("visit", "pixel")
    assert list(ds["label"].values) == ["teff", "logg", "fe_h", "mg_fe"]
    np.testing.assert_array_equal(ds["visit_flux"].values[: recs[0].n_visits], recs[0].visit_flux)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert g.attrs["n_stars"] == 6 and g.attrs["schema"]["labels"][0]["name"] == "teff"
    assert g["visits/flux"].metadata.dimension_names == ("visit", "pixel")
    np.testing.assert_array_equal(g["stars/ivar"][4], recs[4].coadd_ivar)


def test_duplicate_star_or_source_refused(tmp_path):
    store = _new(tmp_path / "s.zarr")
    store.append(_records(3))
    with pytest.raises(ValueError, match="2M00001 .*already in the store"):
        store.append([make_record("2M00001", "u/other")])
    with pytest.raises(ValueError, match="source u/00002 is already"):
        store.append([make_record("2M99999", "u/00002")])
    with pytest.raises(ValueError, match="2M77777 is already in the store"):
        store.append([make_record("2M77777", "u/a"), make_record("2M77777", "u/b")])
    bad = make_record("2M88888", "u/c")
    bad.visit_flux[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.append([bad])
    assert open_store(str(tmp_path / "s.zarr")).n_stars == 3  # refused batches wrote nothing


def test_split_stable_and_80_10_10():
    ids = [f"2M{i:08d}+{i % 97:07d}" for i in range(2000)]
    splits = np.array([split_of(i) for i in ids])
    frac = np.bincount(splits, minlength=3) / len(ids)
    assert abs(frac[0] - 0.8) < 0.03 and abs(frac[1] - 0.1) < 0.02 and abs(frac[2] - 0.1) < 0.02
    # fixed values: a change of hash would silently move stars between splits
    assert [split_of(f"2M{i:05d}") for i in range(12)] == [_expected_split(f"2M{i:05d}") for i in range(12)]


def _expected_split(star_id):
    import hashlib

    h = int.from_bytes(hashlib.blake2b(star_id.encode(), digest_size=8).digest(), "big") % 100
    return 0 if h < 80 else 1 if h < 90 else 2


def test_validate_catches_injected_problems(tmp_path):
    import zarr

    path = str(tmp_path / "s.zarr")
    _new(path).append(_records(9))
    g = zarr.open_group(path, mode="r+")
    g["visits/flux"][5, 10] = np.nan
    g["visits/ivar"][2, 0] = -1.0
    split = g["stars/split"][:]
    split[3] = (split[3] + 1) % 3
    g["stars/split"][:] = split
    problems = open_store(path, check=False).validate()
    assert any("visits/flux has NaN/inf in rows [5]" in p for p in problems)
    assert any("visits/ivar < 0 in rows [2]" in p for p in problems)
    assert any("stars/split differs from split_of(id) for 1 stars" in p for p in problems)
    fv = g["stars/first_visit"][:]
    fv[4] += 1
    g["stars/first_visit"][:] = fv
    assert any("not contiguous" in p for p in open_store(path, check=False).validate())
    with pytest.raises(ValueError, match="s.zarr: the store is inconsistent .*not contiguous.*pairspec validate"):
        open_store(path)  # readers (train, predict) and appends refuse it


def test_interrupted_batch_truncated_on_reopen(tmp_path):
    path, ref = str(tmp_path / "s.zarr"), str(tmp_path / "ref.zarr")
    recs = _records(10)
    store = _new(path)
    store.append(recs[:4])
    stars, visits = store._columns(recs[4:7])
    store._write("stars", store.n_stars, stars)  # data written, never committed: the crash
    store._write("visits", store.n_visits, visits)
    reader = open_store(path)
    assert reader.n_stars == 4 and len(reader.star_table()["id"]) == 4
    assert any("interrupted append" in p for p in reader.validate())
    assert reader.to_xarray().sizes["star"] == 4
    store = open_store(path, mode="a")  # repairs
    assert store.validate() == []
    store.append(recs[4:])
    _new(ref).append(recs)
    a, b = open_store(path), open_store(ref)
    for key in ("id", "first_visit", "split"):
        np.testing.assert_array_equal(a.star_table()[key], b.star_table()[key])
    for x, y in zip(a.visit_spectra(slice(None)), b.visit_spectra(slice(None))):
        np.testing.assert_array_equal(x, y)


def test_memory_url_store():
    url = f"memory://pairspec-test-{uuid.uuid4().hex}/s.zarr"
    _new(url).append(_records(5))
    s = open_store(url)
    assert s.n_stars == 5 and s.validate() == []
    np.testing.assert_array_equal(s.star_spectra(slice(1, 2))[0][0], make_record("2M00001", "u").coadd_flux)


def test_not_a_store_errors(tmp_path):
    import zarr

    with pytest.raises(FileNotFoundError, match="nowhere.zarr: not a pairspec store"):
        open_store(str(tmp_path / "nowhere.zarr"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="plain: not a pairspec store"):
        open_store(str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="plain: exists and is not a Zarr group"):
        _new(tmp_path / "plain")
    assert (tmp_path / "plain" / "notes.txt").exists()
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(ValueError, match="other.zarr: not a pairspec store"):
        open_store(str(tmp_path / "other.zarr"))
    with pytest.raises(ValueError, match="other.zarr: a Zarr group that is not a pair store"):
        _new(tmp_path / "other.zarr")
    _new(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="already exists"):
        _new(tmp_path / "s.zarr")
    with pytest.raises(PermissionError):
        open_store(str(tmp_path / "s.zarr")).append(_records(1))


def test_spectra_writer(tmp_path):
    import zarr

    path = str(tmp_path / "denoised.zarr")
    w = create_spectra_store(path, FAKE_GRID, 64, {"checkpoint": "best.pt"})
    rng = np.random.default_rng(0)
    f1, f2 = rng.random((3, 64), np.float32), rng.random((2, 64), np.float32)
    w.append(["a", "b", "c"], f1, {"snr": np.array([1.0, 2.0, 3.0], np.float32), "star": np.array(["x", "y", "z"])})
    w.append(["d", "e"], f2, {"snr": np.array([4.0, 5.0], np.float32), "star": np.array(["x", "w"])})
    w.close()
    g = zarr.open_group(path, mode="r")
    assert g.attrs["n"] == 5 and g.attrs["checkpoint"] == "best.pt"
    np.testing.assert_array_equal(g["flux"][:], np.concatenate([f1, f2]))
    np.testing.assert_array_equal(g["snr"][:], [1, 2, 3, 4, 5])
    assert np.asarray(g["id"][:]).tolist() == ["a", "b", "c", "d", "e"]
    assert np.asarray(g["star"][:]).tolist()[-1] == "w"


def test_spectra_without_pixmask(tmp_path):
    """pixmask=False reads flux and ivar only (training needs no bitmask) and gives the same arrays."""
    store = _new(tmp_path / "s.zarr")
    store.append(_records(3))
    for getter, n in ((store.visit_spectra, store.n_visits), (store.star_spectra, store.n_stars)):
        for idx in (slice(0, n), np.array([n - 1, 0])):
            full, lean = getter(idx), getter(idx, pixmask=False)
            assert lean[2] is None
            np.testing.assert_array_equal(full[0], lean[0])
            np.testing.assert_array_equal(full[1], lean[1])


def test_empty_store_validates(tmp_path):
    assert _new(tmp_path / "s.zarr").validate() == []


def test_info_on_an_empty_store_says_so_without_numpy_warnings(tmp_path):
    import warnings

    from pairspec.info import describe

    _new(tmp_path / "s.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "All-NaN slice" / "Mean of empty slice" used to leak out
        summary = describe(str(tmp_path / "s.zarr"))
    assert summary["n_stars"] == 0 and summary["visit_snr_median"] is None and "no visits" in summary["text"]


@pytest.mark.parametrize("dtype", ["f4", "i8"])
def test_shard_codec_writes_zarrs_own_bytes_and_merges(tmp_path, dtype):
    """Spectra written by chunk_io.write_array (its own shard codec: whole shards encoded, partial ones
    merged into the stored shard) are byte for byte what zarr writes for whole shards, and every
    partial write reads back as if zarr had made it."""
    import zarr

    from pairspec.chunk_io import ShardCodec, write_array
    from pairspec.store import _create

    rng = np.random.default_rng(3)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    values = (rng.normal(1, 0.1, (5 * 32 + 7, 300)) * (1 if dtype == "f4" else 1000)).astype(dtype)
    values[40:56] = 0  # an all-fill inner chunk is stored too (write_empty_chunks)
    ours, theirs = (_create(g, name, dtype, values.shape, 32, ("row", "pixel")).with_config(
        {"write_empty_chunks": True}) for name in ("ours", "theirs"))
    assert ShardCodec.of(ours) is not None
    theirs[:] = values
    write_array(ours, 0, values)
    for shard in range(5):
        ours_bytes = (tmp_path / f"g.zarr/ours/c/{shard}/0").read_bytes()
        assert ours_bytes == (tmp_path / f"g.zarr/theirs/c/{shard}/0").read_bytes()
    reread = zarr.open_array(str(tmp_path / "g.zarr/ours"), mode="r")
    np.testing.assert_array_equal(reread[:], values)
    # partial writes: inside one inner chunk, across inner chunks and shards, onto absent shards
    expect = values.copy()
    fresh = _create(g, "fresh", dtype, values.shape, 32, ("row", "pixel")).with_config({"write_empty_chunks": True})
    fresh_expect = np.zeros_like(values)
    for start, n in ((3, 5), (11, 4 * 32), (30, 3), (64, 16), (100, 67), (0, 1), (150, 17)):
        block = (rng.normal(5, 1, (n, 300)) * (1 if dtype == "f4" else 1000)).astype(dtype)
        for arr, exp in ((ours, expect), (fresh, fresh_expect)):
            write_array(arr, start, block)
            exp[start:start + n] = block
            np.testing.assert_array_equal(zarr.open_array(arr.store_path, mode="r")[:], exp)
    # any other layout (here zstd inside the shards) is left to zarr
    other = g.create_array("other", shape=(64, 300), dtype=dtype, chunks=(16, 300), shards=(32, 300))
    assert ShardCodec.of(other) is None
    write_array(other, 5, values[:50])
    np.testing.assert_array_equal(other[5:55], values[:50])


def _merge_rows_in_turn(path, lock_file, parity, go):
    """Child process: write the rows of every other 8-row block of each 32-row shard, shard after
    shard, each under the lock of its shard, while the other child writes the other blocks."""
    import zarr

    from pairspec.chunk_io import ChunkLocks, write_array

    arr = zarr.open_array(path, mode="r+").with_config({"write_empty_chunks": True})
    locks = ChunkLocks(lock_file)
    go.wait(60)  # both children start together, once both are ready
    for shard in range(arr.shape[0] // 32):
        for block in range(parity, 4, 2):
            start = shard * 32 + block * 8
            with locks.hold("visits", shard):
                write_array(arr, start, np.full((8, arr.shape[1]), 1 + start, dtype="f4"))


def test_chunk_locks_serialise_merges_across_processes(tmp_path):
    import multiprocessing as mp

    import zarr

    from pairspec.store import _create

    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    _create(g, "x", "f4", (300 * 32, 100), 32, ("row", "pixel"))
    ctx = mp.get_context("spawn")
    go = ctx.Barrier(2)
    args = (str(tmp_path / "g.zarr/x"), str(tmp_path / "lock"))
    procs = [ctx.Process(target=_merge_rows_in_turn, args=(*args, parity, go)) for parity in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = zarr.open_array(str(tmp_path / "g.zarr/x"), mode="r")[:, 0]
    # without the lock, one child's read-merge-write of a shard can undo the other's rows (zeros)
    np.testing.assert_array_equal(got, 1 + np.arange(300 * 32) // 8 * 8)


@pytest.mark.parametrize("dtype,shape", [("f8", (1000,)), ("i4", (1000,)), ("i1", (1000,)), ("f4", (1000, 4)),
                                         ("i8", (1000, 4)), (str, (1000,))])
def test_chunk_codec_writes_zarrs_own_bytes_and_merges(tmp_path, dtype, shape):
    """The other columns (chunk_io.ChunkCodec: bytes or vlen-utf8, then zstd) likewise."""
    import zarr

    from pairspec.chunk_io import ChunkCodec, write_array
    from pairspec.store import _create

    rng = np.random.default_rng(4)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    dims = ("row", "label")[:len(shape)]
    ours, theirs = (_create(g, name, dtype, shape, 256, dims).with_config({"write_empty_chunks": True})
                    for name in ("ours", "theirs"))
    assert ChunkCodec.of(ours) is not None
    if dtype is str:
        values = np.array([f"2M{i:05d}-" + "x" * int(rng.integers(0, 9)) + "é" for i in range(shape[0])], dtype=object)
    else:
        values = (rng.normal(size=shape) * 100).astype(dtype)
    theirs[:] = values
    write_array(ours, 0, values)
    suffix = "/0" if len(shape) > 1 else ""
    for chunk in range(4):  # the last one only partly inside the array: padded with the fill value
        assert (tmp_path / f"g.zarr/ours/c/{chunk}{suffix}").read_bytes() == \
            (tmp_path / f"g.zarr/theirs/c/{chunk}{suffix}").read_bytes()
    expect = values.copy()
    for start, n in ((3, 5), (250, 20), (600, 400), (0, 1)):
        block = values[:n][::-1].copy()
        write_array(ours, start, block)
        expect[start:start + n] = block
    assert np.asarray(zarr.open_array(str(tmp_path / "g.zarr/ours"), mode="r")[:]).tolist() == expect.tolist()


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, and no `except Exception` catches it."""


def test_creation_cut_after_any_write_can_be_redone(tmp_path, monkeypatch):
    """A kill during create_store lands between two of zarr's (atomic) file writes; after each of them a
    rerun must make the store, never refuse the half-made one as 'not a pair store' (a CI failure: the
    marker used to be a second write of the root metadata)."""
    from zarr.storage import _local

    real, writes = _local._put, []

    def counting(path, value, exclusive=False):
        writes.append(path)
        return real(path, value, exclusive=exclusive)

    monkeypatch.setattr(_local, "_put", counting)
    _new(tmp_path / "whole.zarr")
    n = len(writes)
    assert n > 5
    # the first writes, the middle and the last ones (all ~100 would take a minute)
    for cut in sorted(set(range(6)) | {n // 3, n // 2} | set(range(n - 4, n))):
        path = tmp_path / f"cut{cut}.zarr"
        for stop in (cut, max(0, cut - 2)):  # killed after `cut` writes, killed again redoing it
            done, inflight = [], []

            def dying(p, value, exclusive=False):
                if len(done) >= stop:  # zarr writes concurrently: every write from the cut on dies
                    raise _Killed
                done.append(p)
                inflight.append(p)
                try:
                    return real(p, value, exclusive=exclusive)
                finally:
                    inflight.remove(p)

            monkeypatch.setattr(_local, "_put", dying)
            with pytest.raises(_Killed):
                _new(path)
            # a real kill stops every write at once; here zarr's other writer threads finish theirs
            for _ in range(500):
                if not inflight:
                    break
                time.sleep(0.01)
        monkeypatch.setattr(_local, "_put", real)
        with pytest.raises((ValueError, FileNotFoundError), match="not a pairspec store"):
            open_store(str(path))
        _new(path)
        assert open_store(str(path)).validate() == []


@pytest.mark.parametrize("engine", ["append", "commit_batch"])
def test_a_commit_is_one_write_a_kill_after_it_leaves_whole_counts(tmp_path, monkeypatch, engine):
    """A batch is committed by one (atomic) write of the root metadata, n_stars and n_visits together: a kill
    right after any write of the commit leaves the old counts or the new ones, never one of each. (zarr's
    `attrs.update` writes once per key: killed between the two, a store said 80 stars but the visits of 79,
    a CI flake of tests/test_crash.py.)"""
    from zarr.storage import _local

    path, recs = tmp_path / "s.zarr", _records(9)
    store = _new(path)
    store.append(recs[:4])
    real, root_writes = _local._put, []

    def dying_after_root_write(p, value, exclusive=False):
        out = real(p, value, exclusive=exclusive)
        if Path(p) == path / "zarr.json":
            root_writes.append(p)
            raise _Killed  # the process dies right after this write
        return out

    monkeypatch.setattr(_local, "_put", dying_after_root_write)
    with pytest.raises(_Killed):
        if engine == "append":
            store.append(recs[4:])
        else:
            from pairspec.store import write_batch

            store.reserve(9, store.n_visits + sum(r.n_visits for r in recs[4:]))
            write_batch(str(path), recs[4:], 4, store.n_visits, store.chunk)
            store.commit_batch(9, store.n_visits + sum(r.n_visits for r in recs[4:]),
                               [(r.star_id, r.source) for r in recs[4:]])
    monkeypatch.setattr(_local, "_put", real)
    assert len(root_writes) == 1
    reader = open_store(str(path))  # check=True: n_visits is the sum of the committed stars' visits
    assert (reader.n_stars, reader.n_visits) == (9, sum(r.n_visits for r in recs))
    assert open_store(str(path), mode="a").validate() == []


def test_spectra_rows_by_mask_stride_and_reversed_slice_and_refusals(tmp_path):
    """A boolean mask selects its True rows (it was read as the indices 0 and 1), strided and reversed slices
    read their rows (zarr refused a negative step), and float indices or a mask of the wrong length are errors."""
    store = _new(tmp_path / "s.zarr")
    store.append(_records(7))
    flux, _, _ = store.visit_spectra(slice(None))
    n = store.n_visits
    mask = np.zeros(n, bool)
    mask[[1, n - 1]] = True
    np.testing.assert_array_equal(store.visit_spectra(mask)[0], flux[[1, n - 1]])
    np.testing.assert_array_equal(store.visit_spectra(slice(n - 1, None, -2))[0], flux[::-1][::2])
    np.testing.assert_array_equal(store.visit_spectra(slice(0, n, 3))[0], flux[::3])
    with pytest.raises(IndexError, match="boolean mask"):
        store.visit_spectra(np.ones(3, bool))
    with pytest.raises(TypeError, match="must be integers"):
        store.visit_spectra([1.7, 2.2])
    assert store.visit_spectra([])[0].shape == (0, flux.shape[1])
