"""Dask (dask.distributed) for the users who outgrow one machine: the client, and the predict tasks.

`dask_client(spec)` gives a distributed.Client for `spec`: a Client (used as it is), a scheduler
address ("tcp://host:8786", "127.0.0.1:8786", a scheduler-file path ending in .json), or "local" /
"local:N" for a LocalCluster of N worker processes on this machine ("local-threads:N": in-process
workers, which can share a memory:// store). Nothing here schedules work itself: Dask does.

Predict on Dask (`pairspec predict ... --scheduler/--dask`): the visits are cut into the same chunks
as a one-process predict; a task reads one chunk from the store (every worker opens the store itself:
a shared folder or an object store), runs the model on it and returns the per-visit columns (and
the denoised spectra when asked); the client gathers them in chunk order, a bounded number ahead, so
the catalogue is the one-process catalogue, built by the same code (predict.py). Workers load the
checkpoint once and keep it; torch runs one thread per task (a worker's cores are its task slots).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

_STORES: dict[tuple, object] = {}  # a worker's open stores, by (path, run token)
_PREDICTORS: dict[tuple, object] = {}  # a worker's loaded checkpoints, by (path, mtime, size, device)


def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise ValueError("Dask engines need dask.distributed: pip install 'dask[distributed]'") from err
    return distributed


@contextlib.contextmanager
def dask_client(spec, workers: int | None = None, timeout: float = 20.0):
    """A distributed.Client for `spec` (see the module docstring), closed at the end of the block when
    made here. `workers`: processes of a "local" cluster when `spec` gives none; `timeout`: seconds to
    reach a scheduler."""
    distributed = _import_distributed()
    if isinstance(spec, distributed.Client):
        yield spec
        return
    text = str(spec).strip()
    kind, _, count = text.partition(":")
    if kind in ("local", "local-threads"):
        n = int(count) if count.isdigit() else max(1, int(workers or os.cpu_count() or 1))
        if n < 1:
            raise ValueError(f"--dask {text}: a local cluster needs at least one worker")
        threads = kind == "local-threads"
        # silence_logs: the cluster's INFO lines would bury the progress bar and the report
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=not threads,
                                      dashboard_address=":0", silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            yield client
        return
    try:
        if text.endswith(".json"):
            client = distributed.Client(scheduler_file=text, timeout=timeout)
        else:
            client = distributed.Client(text if "://" in text else f"tcp://{text}", timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ValueError(f"cannot reach the Dask scheduler {text} ({type(err).__name__}: {err})") from None
    try:
        yield client
    finally:
        client.close()


def n_workers(client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


def worker_path(store_path: str) -> str:
    """A store path every worker can open: local paths made absolute (workers have their own cwd)."""
    p = str(store_path)
    return p if "://" in p else os.path.abspath(p)


def check_reachable(client, store_path: str) -> None:
    """memory:// lives in one process: only in-process workers (LocalCluster(processes=False)) see it."""
    if str(store_path).startswith("memory://"):
        addrs = list(client.scheduler_info().get("workers", {}))
        if not addrs or any(not a.startswith("inproc://") for a in addrs):
            raise ValueError(f"{store_path}: a memory:// store lives in this process, and the Dask workers "
                             "cannot open it; use a shared folder or an object store (s3://...), or "
                             "--dask local-threads")


class DaskChunkLocks:
    """`ChunkLocks` across a Dask cluster: the edge chunk two neighbouring batches share is merged under
    a distributed.Lock. Chunk indices are striped over 64 lock names per group, so that a long ingest
    does not leave one lock per chunk on the scheduler (striping only adds rare waits)."""

    def __init__(self, token: str, stripes: int = 64):
        self.token, self.stripes = token, stripes

    @contextlib.contextmanager
    def hold(self, sub: str, chunk_index: int):
        from distributed import Lock

        with Lock(f"pairspec-ingest-{self.token}-{sub}-{int(chunk_index) % self.stripes}"):
            yield


# ---------------------------------------------------------------- predict tasks (run on workers)

def _worker_store(path: str, token: str):
    from pairspec.store import open_store

    key = (path, token)
    if key not in _STORES:
        _STORES.clear()
        _STORES[key] = open_store(path)
    return _STORES[key]


def _worker_predictor(spec, device: str):
    """spec: a checkpoint path (loaded once per worker) or a predictor object (sent by the client)."""
    if hasattr(spec, "predict"):
        return spec
    from pairspec.inference import LabelPredictor

    st = os.stat(spec)
    key = (os.path.abspath(spec), st.st_mtime_ns, st.st_size, device)
    if key not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[key] = LabelPredictor.from_checkpoint(spec, device=device)
    return _PREDICTORS[key]


def predict_chunk(spec, device: str, store_path: str, token: str, rows, batch_size: int, denoise: bool,
                  threads: int = 1) -> dict:
    """Model outputs of one chunk of visit rows (a (start, stop) pair or an index array)."""
    import torch

    from pairspec.predict import chunk_outputs

    torch.set_num_threads(max(1, int(threads)))
    predictor = _worker_predictor(spec, device)
    store = _worker_store(store_path, token)
    key = slice(int(rows[0]), int(rows[1])) if isinstance(rows, tuple) else np.asarray(rows)
    flux, ivar, _ = store.visit_spectra(key, pixmask=False)
    return chunk_outputs(predictor, flux, ivar, batch_size, denoise)


def map_chunks(client, spec, device: str, store_path: str, chunk_rows, batch_size: int, denoise: bool,
               threads: int = 1):
    """predict_chunk of every chunk on the cluster, yielded in chunk order with at most two chunks per
    worker in flight (memory on the client stays bounded)."""
    import uuid

    from pairspec.ordered import ordered_map

    check_reachable(client, store_path)
    path, token = worker_path(store_path), uuid.uuid4().hex
    if hasattr(spec, "predict"):
        spec = client.scatter(spec, broadcast=True)
    else:
        spec = os.path.abspath(str(spec))
    window = 2 * n_workers(client)

    class _Submit:  # ordered_map wants .submit(fn, item); a Dask future has .result()
        @staticmethod
        def submit(fn, rows):
            return client.submit(predict_chunk, spec, device, path, token, rows, batch_size, denoise, threads,
                                 pure=False)

    yield from ordered_map(_Submit, None, chunk_rows, window)
