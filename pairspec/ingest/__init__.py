"""`pairspec ingest`: survey files -> pair store. Resumable, one writer at a time, three engines.

Units are discovered and sorted by unit_id; units already in the store are skipped, so a rerun after
a crash finishes the job (store.py repairs an interrupted batch). The whole run holds the store's
writer lock (pairspec/locks.py): a second ingest into the same store waits for it, or fails with a
clear error. The engines, which give the same store array for array (the rules they share are in
rules.py: which records become stars, what a unit may point at, how a unit is read and checked):

- parallel writers (parallel.py): a local store and workers > 1. Each worker process reads a batch
  and writes its rows itself; this process decides duplicates and rows, and commits in order.
- one writer (local.py): workers <= 1, a store other processes cannot open (memory://), or no POSIX
  record locks. Records are read here or in a reader pool and appended here.
- Dask (cluster.py): `dask=` a distributed.Client, a scheduler address, or "local". Tasks read
  batches and write whole chunks into a store every worker can reach (a shared folder, s3://).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable

from pairspec.ingest.report import (
    IngestReport,
    format_report,
    progress_bar,
    save_report,
)
from pairspec.ingest.rules import path_problem, source_roots
from pairspec.surveys.base import Skip

__all__ = ["IngestReport", "format_report", "ingest"]

try:
    import fcntl  # noqa: F401 - the parallel writers lock shared chunks with POSIX record locks

    _HAS_FCNTL = True
except ImportError:
    _HAS_FCNTL = False


def _resolve_adapter(survey, adapter_options):
    if isinstance(survey, str):
        from pairspec.surveys import get_adapter

        return get_adapter(survey, **(adapter_options or {}))
    if adapter_options:
        raise ValueError("adapter_options apply only when `survey` is a registry name")
    return survey


def _changed_options(adapter, stored: dict, given: dict) -> list[str]:
    """'key: stored -> given' for each adapter option whose value (a default where not given) differs
    between the store's ingest and this one. Options that say where inputs are (the adapter's
    `location_options`, e.g. a folder of stars) may differ; labels are compared as the schema."""
    import inspect

    params = inspect.signature(type(adapter)).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    free = set(getattr(adapter, "location_options", ())) | {"labels"}
    # an adapter that resolves its options (a summary file's name gives its pipeline; an upper-case value is the
    # lower-case one) is compared on what each ingest's options resolve to
    resolved_now = adapter.resolved_options() if hasattr(adapter, "resolved_options") else {}
    try:
        resolved_before = type(adapter)(**stored).resolved_options() if resolved_now else {}
    except (TypeError, ValueError):  # options of an older pairspec: compare them as given
        resolved_before = {}
    out = []
    for key in sorted((set(stored) | set(given) | set(resolved_now)) - free):
        if key in resolved_now and key in resolved_before:
            before, now = resolved_before[key], resolved_now[key]
        else:
            before, now = stored.get(key, defaults.get(key)), given.get(key, defaults.get(key))
        if before != now:
            out.append(f"{key}: {before!r} -> {now!r}")
    return out


def _open_existing(store_path: str, adapter, adapter_options: dict | None = None):
    """The pair store at `store_path` opened for append, or None when there is none yet (or only a
    creation cut off before its marker, which create_store may overwrite). ValueError if it holds
    another survey, release, grid or label set, or is inconsistent."""
    from pairspec.store import open_store

    try:
        store = open_store(store_path, mode="a")
    except FileNotFoundError as err:
        if "is a file" in str(err) or "cannot be opened" in str(err):
            raise
        return None
    except ValueError as err:
        if "not a pairspec store" not in str(err):
            raise
        return None
    if store.survey != adapter.name:
        raise ValueError(f"{store_path}: store holds {store.survey} {store.release}; refusing to append "
                         f"{adapter.name} data to it (one survey per store: ingest into a new store)")
    if store.grid != adapter.grid:
        a, b = store.grid.to_dict(), adapter.grid.to_dict()
        differ = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        raise ValueError(f"{store_path}: the grids do not match: the store's wavelength grid and these "
                         f"{adapter.name} spectra's differ in {differ} (another adapter option?); ingest into a "
                         "new store")
    if store.schema.names != adapter.schema.names:
        raise ValueError(f"{store_path}: store holds the labels {store.schema.names}; the {adapter.name} adapter "
                         f"reads {adapter.schema.names}: choose the store's labels with the adapter's labels "
                         "option (--option labels=[...]), or ingest into a new store")
    if adapter_options is not None:
        changed = _changed_options(adapter, dict(store.provenance.get("adapter_options") or {}), adapter_options)
        if changed:
            raise ValueError(f"{store_path}: the store was ingested with other adapter options "
                             f"({'; '.join(changed)}): one store, one set of reading rules. Give the store's "
                             "options again (pairspec info shows them under provenance), or ingest into a new store")
    release = str(getattr(adapter, "release", store.release))
    if release != store.release:
        raise ValueError(f"{store_path}: store holds {store.survey} {store.release}; refusing to append "
                         f"{adapter.name} {release} data to it (one store per release: ingest into a new store)")
    return store


def _create(store_path: str, adapter, source: str, adapter_options, chunk: int):
    from pairspec.store import create_store

    # create_store refuses to overwrite anything but an unfinished pair store
    prov = {"adapter": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
            "adapter_options": adapter_options or {}, "source": str(source)}
    return create_store(store_path, adapter.name, adapter.release, adapter.grid, adapter.schema, prov, chunk)


def _local_path(store_path: str) -> str | None:
    """The directory of a local store (writer processes open it themselves), else None."""
    if "://" not in store_path:
        return store_path
    return store_path.removeprefix("file://") if store_path.startswith("file://") else None


def _check_arguments(workers, batch_size, limit, chunk) -> None:
    for name, value, least in (("batch_size", batch_size, 1), ("chunk", chunk, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a whole number of stars >= 0 (or None for all), got {limit!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1 (or None for all cores), got {workers!r}")


def ingest(survey, source: str, store_path: str, workers: int | None = None, batch_size: int = 256,
           progress: bool = True, adapter_options: dict | None = None, limit: int | None = None,
           chunk: int = 256, dask=None, wait: bool = True, lock_timeout: float | None = None,
           _after_batch: Callable[[int], None] | None = None) -> IngestReport:
    """Read every unit of `source` into the pair store at `store_path` (created if absent; a path or
    any fsspec URL).

    `survey`: registry name or adapter instance. `limit`: only the first `limit` units (sorted by
    unit_id). `chunk`: shard length of a new store. `dask`: run on a Dask cluster (a distributed.Client,
    a scheduler address such as "tcp://host:8786", or "local" for a LocalCluster of `workers`
    processes). `wait`: if another ingest holds the store, wait for it (at most `lock_timeout`
    seconds) rather than fail with pairspec.locks.StoreLocked. `_after_batch(k)` is called after the
    k-th committed batch (tests use it to crash).
    """
    from pairspec.ingest.parallel import in_starting_worker
    from pairspec.locks import writer_lock

    if in_starting_worker():
        raise RuntimeError(
            "pairspec ingest was called again inside one of its own worker processes: each worker imports "
            "the main script, and this script calls ingest at import. Put the call under "
            "`if __name__ == \"__main__\":` (multiprocessing's spawn rule), or pass workers=1")
    _check_arguments(workers, batch_size, limit, chunk)
    t0 = time.perf_counter()
    adapter = _resolve_adapter(survey, adapter_options)
    if isinstance(survey, str):  # the options are known (an adapter passed in keeps its own: not compared)
        adapter_options = dict(adapter_options or {})
    store_path = str(store_path)
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    local = _local_path(store_path)
    with writer_lock(store_path, wait=wait, timeout=lock_timeout):
        if dask is not None:
            from pairspec.distributed import dask_client
            from pairspec.ingest.cluster import ingest_on_dask

            with dask_client(dask, n_workers) as client:
                engine = lambda store_fn, todo, report, masked, bar: ingest_on_dask(
                    client, adapter, store_path, store_fn, todo, batch_size, report, masked, bar, _after_batch)
                return _run(adapter, source, store_path, adapter_options, limit, chunk, progress, t0, engine, "dask")
        if n_workers > 1 and local is not None and _HAS_FCNTL:
            from pairspec.ingest.parallel import Workers, ingest_parallel

            # parallel writers start before discovery, so that their start-up (imports) overlaps it
            with Workers(adapter, local, n_workers) as writers:
                def engine(store_fn, todo, report, masked, bar):
                    if len(todo) <= 1:
                        return _one_writer(adapter, store_fn, todo, 1, batch_size, report, masked, bar, _after_batch)
                    return ingest_parallel(writers, store_fn, todo, batch_size, report, masked, bar, _after_batch)

                return _run(adapter, source, store_path, adapter_options, limit, chunk, progress, t0, engine,
                            "parallel writers")

        def engine(store_fn, todo, report, masked, bar):
            return _one_writer(adapter, store_fn, todo, n_workers, batch_size, report, masked, bar, _after_batch)

        return _run(adapter, source, store_path, adapter_options, limit, chunk, progress, t0, engine, "one writer")


def _one_writer(adapter, store_fn, todo, n_workers, batch_size, report, masked, bar, after_batch):
    from pairspec.ingest.local import ingest_here

    store = store_fn()
    # a multiple of the shard length, so that star shards are written by one batch each
    batch = max(1, math.ceil(batch_size / store.chunk)) * store.chunk
    ingest_here(adapter, store, todo, n_workers, batch, report, masked, bar, after_batch)
    return store


def _run(adapter, source, store_path, adapter_options, limit, chunk, progress, t0, engine, name) -> IngestReport:
    """Discovery, resume and the report around one engine (called with the writer lock held)."""
    discovery = adapter.discover(source)
    units = sorted(discovery.units, key=lambda u: u.unit_id)
    if limit is not None:
        units = units[: int(limit)]
    skipped = list(discovery.skipped)
    roots = source_roots(source, adapter)
    inside = []
    for unit in units:
        problem = path_problem(unit, roots)
        if problem:
            skipped.append(Skip(unit.path, problem, unit.star_id))
        else:
            inside.append(unit)
    existing = _open_existing(store_path, adapter, adapter_options)
    todo = inside if existing is None else [u for u in inside if u.unit_id not in existing.sources]

    def the_store():  # a new store is created only once the engine is ready to write
        if existing is not None:
            return existing
        return _create(store_path, adapter, source, adapter_options, chunk)

    report = IngestReport(store=store_path, n_pixels=adapter.grid.npix, skipped=skipped,
                          already_present=len(inside) - len(todo), engine=name)
    masked = [0, 0]  # ivar == 0 pixels, all pixels, within the usable blocks
    store = engine(the_store, todo, report, masked, progress_bar(progress, len(todo)))
    report.masked_fraction = masked[0] / masked[1] if masked[1] else float("nan")
    report.store_n_stars, report.store_n_visits = store.n_stars, store.n_visits
    report.elapsed_s = round(time.perf_counter() - t0, 3)
    if existing is None and store.n_stars == 0:
        # nothing was readable: a 0-star store left behind would fix the grid and options of a rerun
        # with other options (e.g. the one the skip reasons suggest), and it holds nothing
        from pairspec.store.layout import remove_tree

        remove_tree(store_path)
        return report
    if report.n_stars:
        import numpy as np

        added = np.asarray(store.labels())[store.n_stars - report.n_stars:]
        if not np.isfinite(added).any():
            warnings.warn(f"{store_path}: none of the {report.n_stars} stars ingested has a label value: the "
                          "label source matched none of them (check the adapter's label options, e.g. a catalogue "
                          "or labels_from); the store can be predicted, not trained on", stacklevel=3)
    save_report(store, store_path, report)
    return report

