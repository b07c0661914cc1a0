"""Stores on object storage: ingest, predict and a streamed training run against a real S3-compatible server
(moto's server mode, started on 127.0.0.1 by this module) and against memory://, each compared with the
same work on a local folder."""

import logging
import os
import socket
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fake_survey import ModelFakeAdapter, WideFakeAdapter, write_units
from test_ingest import _assert_same_store
from tinymodel import make_checkpoint

from pairspec import catalog
from pairspec.ingest import ingest
from pairspec.predict import predict
from pairspec.store import open_store

BUCKET = "pairspec-test"
# small on purpose: moto answers one request in ~25 ms on a busy machine, and a store is many small objects.
# The sorted unit ids put BAD/BOOM between the A and C stars (later batches start mid-chunk) and DUP last.
LINES = [f"A{i:03d}" for i in range(10)] + ["BAD B001", "BOOM B002"] + [f"C{i:03d}" for i in range(14)] + ["DUP A003"]
WIDE = dict(batch_size=16, progress=False, chunk=16)


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port; fsspec/s3fs find it through FSSPEC_S3_ENDPOINT_URL (what a
    user sets for any S3-compatible service), which the worker processes inherit."""
    server_mod = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec.config

    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = env["FSSPEC_S3_ENDPOINT_URL"]  # read at import
    import fsspec

    fsspec.filesystem("s3").mkdir(BUCKET)
    try:
        yield f"s3://{BUCKET}"
    finally:
        server.stop()
        fsspec.config.conf.get("s3", {}).pop("endpoint_url", None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(params=["s3", "memory"])
def url(request):
    if request.param == "s3":
        return f"{request.getfixturevalue('s3')}/{uuid.uuid4().hex[:8]}/store.zarr"
    return f"memory://pairspec-{uuid.uuid4().hex}/store.zarr"


def test_ingest_into_an_object_store_gives_the_local_store(tmp_path, url):
    src = str(write_units(tmp_path / "src", LINES))
    ref = str(tmp_path / "ref.zarr")
    ingest(WideFakeAdapter(), src, ref, workers=1, **WIDE)
    first = ingest(WideFakeAdapter(), src, url, workers=2, limit=13, **WIDE)  # a reader pool, one writer here
    rest = ingest(WideFakeAdapter(), src, url, workers=1, **WIDE)
    assert first.engine == "one writer" and (first.n_stars, rest.already_present, rest.n_stars) == (11, 11, 13)
    _assert_same_store(url, ref)
    assert not os.path.exists(url)  # nothing landed on the local disk under that name


def test_dask_ingest_into_s3(tmp_path, s3):
    src = str(write_units(tmp_path / "src", LINES))
    ref, url = str(tmp_path / "ref.zarr"), f"{s3}/dask/store.zarr"
    ingest(WideFakeAdapter(), src, ref, workers=1, **WIDE)
    report = ingest(WideFakeAdapter(), src, url, dask="local-threads:2", **WIDE)
    assert report.engine == "dask" and report.n_stars == 24
    _assert_same_store(url, ref)


def test_predict_from_an_object_store(tmp_path, url):
    src = str(write_units(tmp_path / "src", [f"S{i:04d}" for i in range(16)]))
    local = str(tmp_path / "s.zarr")
    for where in (local, url):
        ingest(ModelFakeAdapter(), src, where, workers=1, batch_size=32, chunk=32, progress=False)
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    a = predict(ckpt, local, tmp_path / "a.fits", batch_size=4, progress=False)  # chunks of 32 visits
    b = predict(ckpt, url, tmp_path / "b.fits", batch_size=4, progress=False)
    assert a.n_visits == b.n_visits > 32
    (av, _), (bv, _) = catalog.read_catalogue(a.visit_path), catalog.read_catalogue(b.visit_path)
    np.testing.assert_array_equal(np.asarray(av["teff"]), np.asarray(bv["teff"]))
    assert bv.meta["SOURCE"].endswith("store.zarr")


def _train_config(tmp_path, store, name):
    from pairspec.config import (
        DataSection,
        ModelSection,
        RunConfig,
        RunSection,
        TrainSection,
    )

    return RunConfig(run=RunSection(name=name, out_dir=str(tmp_path / name), seed=3),
                     data=DataSection(store=store, stream=True, val_split="train", stream_chunk_stars=12,
                                      shuffle_buffer=64, labels=("teff", "logg")),
                     model=ModelSection(preset="tsn_tiny", depth=1),
                     train=TrainSection(epochs=1, batch_size=8, lr=1e-3, device="cpu", bf16=False))


def test_streamed_training_from_an_object_store(tmp_path, url):
    """The trainer (train.py -> stream.TwinStream -> open_store) streams twins from the URL; the run is the
    one it makes from a local copy, weight for weight."""
    import torch

    from pairspec import train as T
    from pairspec.checkpoint import read_train_state

    torch.set_num_threads(1)
    src = str(write_units(tmp_path / "src", [f"T{i:04d}" for i in range(30)]))
    local = str(tmp_path / "s.zarr")
    for where in (local, url):
        ingest(ModelFakeAdapter(), src, where, workers=1, batch_size=32, chunk=32, progress=False)
    best_remote = T.train(_train_config(tmp_path, url, "remote"), progress=False)
    best_local = T.train(_train_config(tmp_path, local, "local"), progress=False)
    remote_state, remote_meta, _ = read_train_state(best_remote)
    local_state, local_meta, _ = read_train_state(best_local)
    assert remote_meta["step"] == local_meta["step"] > 0
    assert remote_state.keys() == local_state.keys()
    for k in remote_state:
        assert torch.equal(remote_state[k], local_state[k]), k


def test_object_store_errors_name_the_url(s3, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{s3}/nothing.zarr: not a pairspec store"):
        open_store(f"{s3}/nothing.zarr")
    import fsspec

    fsspec.filesystem("s3").pipe_file(f"{BUCKET}/afile.zarr", b"not a store")
    with pytest.raises(FileNotFoundError, match="afile.zarr: is a file, not a pairspec store"):
        open_store(f"{s3}/afile.zarr")
    src = str(write_units(tmp_path / "src", ["A0001"]))
    with pytest.raises(FileNotFoundError, match="afile.zarr: is a file"):
        ingest(WideFakeAdapter(), src, f"{s3}/afile.zarr", workers=1, **WIDE)
