"""Dask engines on a LocalCluster on loopback: the ingest gives the one-process store array for array, and
predict on Dask workers gives the one-process catalogue, value for value."""

import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fake_survey import ModelFakeAdapter, WideFakeAdapter, write_units
from test_ingest import WIDE, WIDE_LINES, _assert_same_store
from tinymodel import make_checkpoint

from pairspec import catalog
from pairspec.ingest import ingest
from pairspec.predict import predict
from pairspec.store import open_store


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each, on 127.0.0.1 (what `--dask local:2` starts)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=40) as c, distributed.Client(c) as client:
        yield client


def test_dask_ingest_gives_the_one_process_store(tmp_path, cluster):
    src = str(write_units(tmp_path / "src", WIDE_LINES))
    ref, on_dask, mixed = (str(tmp_path / f"{n}.zarr") for n in ("ref", "dask", "mixed"))
    one = ingest(WideFakeAdapter(), src, ref, workers=1, **WIDE)
    many = ingest(WideFakeAdapter(), src, on_dask, dask=cluster, **WIDE)
    assert many.engine == "dask" and (many.n_stars, many.n_visits) == (one.n_stars, one.n_visits) == (90, many.n_visits)
    assert many.skipped == one.skipped and many.masked_fraction == one.masked_fraction
    _assert_same_store(on_dask, ref)
    # resumed on Dask from a one-writer store cut at a row count that is not chunk aligned
    first = ingest(WideFakeAdapter(), src, mixed, workers=1, limit=37, **WIDE)
    rest = ingest(WideFakeAdapter(), src, mixed, dask=cluster.scheduler.address, **WIDE)  # by address
    assert (first.n_stars, rest.already_present, rest.n_stars) == (35, 35, 55)
    _assert_same_store(mixed, ref)


def test_memory_store_needs_in_process_workers(tmp_path, cluster):
    src = str(write_units(tmp_path / "src", [f"A{i:03d}" for i in range(20)]))
    url = f"memory://pairspec-dask-{uuid.uuid4().hex}/s.zarr"
    with pytest.raises(ValueError, match="memory:// store lives in this process"):
        ingest(WideFakeAdapter(), src, url, dask=cluster, **WIDE)
    report = ingest(WideFakeAdapter(), src, url, dask="local-threads:2", **WIDE)
    assert report.n_stars == 20 and open_store(url).validate() == []


@pytest.fixture(scope="module")
def model_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask-predict")
    src = write_units(root / "src", [f"S{i:04d}" for i in range(40)])
    ingest(ModelFakeAdapter(), str(src), str(root / "s.zarr"), workers=1, batch_size=16, chunk=16, progress=False)
    return root, make_checkpoint(root / "tiny.pt")


@pytest.mark.parametrize("split", [None, "train"])
def test_dask_predict_gives_the_one_process_catalogue(model_store, cluster, split):
    import torch

    root, ckpt = model_store
    torch.set_num_threads(1)  # as on the workers (one thread per task): same kernels, same rounding
    here = predict(ckpt, str(root / "s.zarr"), root / f"here-{split}.parquet", split=split, batch_size=8,
                   progress=False)
    there = predict(ckpt, str(root / "s.zarr"), root / f"dask-{split}.parquet", split=split, batch_size=8,
                    progress=False, dask=cluster)
    assert (here.n_visits, here.n_stars) == (there.n_visits, there.n_stars) and here.n_visits > 64  # > 1 chunk
    (hv, hs), (dv, ds) = catalog.read_catalogue(root / f"here-{split}.parquet"), catalog.read_catalogue(
        root / f"dask-{split}.parquet")
    for a, b in ((hv, dv), (hs, ds)):
        assert a.colnames == b.colnames
        for c in a.colnames:
            x, y = np.asarray(a[c]), np.asarray(b[c])
            assert x.tolist() == y.tolist() or np.array_equal(x, y, equal_nan=True), c


def test_dask_predict_refuses_file_lists(model_store, cluster, tmp_path):
    _, ckpt = model_store
    with pytest.raises(ValueError, match="predict on Dask reads a pair store"):
        predict(ckpt, [str(tmp_path / "apStar-dr17-x.fits")], tmp_path / "c.fits", progress=False, dask=cluster)


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    src = str(write_units(tmp_path / "src", ["A0001"]))
    from pairspec import distributed as pd

    with pytest.raises(ValueError, match=f"cannot reach the Dask scheduler tcp://127.0.0.1:{port}"):
        with pd.dask_client(f"tcp://127.0.0.1:{port}", timeout=2):
            pass
    assert not (tmp_path / "s.zarr").exists()
    del src
