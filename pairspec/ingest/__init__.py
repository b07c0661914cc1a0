"""`pairspec ingest`: survey files -> pair store. Parallel reader-writers, one committer, resumable.

Units are discovered and sorted by unit_id; units already in the store are skipped, so a rerun after
a crash finishes the job (store.py repairs an interrupted batch). On a local store with workers > 1,
each worker process reads a batch of units AND writes its rows into the store itself (spectra never
cross processes); this process decides, in batch order, which records are kept (duplicates), where
each batch's rows go, and commits the batches in order (docs/data-model.md, "Ingest"). Otherwise
(workers <= 1, or a store URL other processes cannot open, such as memory://) the records are read
in this process or a reader pool and appended here. Both give the same store.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from pairspec.chunk_io import lock_path
from pairspec.surveys.base import AdapterError, Skip, WorkUnit

_ADAPTER = None  # the adapter inside a reader process (set by _init_reader)


@dataclass
class IngestReport:
    store: str
    n_stars: int = 0  # stars added by this run
    n_visits: int = 0  # visits added by this run
    n_pixels: int = 0  # pixels per spectrum (grid.npix)
    masked_fraction: float = float("nan")  # ivar == 0 fraction of the added visits, usable blocks only
    skipped: list[Skip] = field(default_factory=list)
    already_present: int = 0  # units found in the store and not read again
    elapsed_s: float = 0.0
    store_n_stars: int = 0  # totals in the store after this run
    store_n_visits: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["masked_fraction"] = None if math.isnan(self.masked_fraction) else self.masked_fraction
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _init_reader(adapter) -> None:
    global _ADAPTER, _USABLE
    _ADAPTER = adapter
    _USABLE = adapter.grid.usable()


def _read_unit(unit: WorkUnit):
    """(unit, record, None, masked) or (unit, None, Skip, None). Never raises: one bad file must not
    stop the ingest. Content checks and the masked-pixel count run here, in the parallel readers,
    so the single writer only checks for duplicates."""
    from pairspec.store import record_problem

    try:
        record = _ADAPTER.read(unit)
    except AdapterError as err:
        return unit, None, Skip(err.path, err.problem, unit.star_id), None
    except Exception as err:  # noqa: BLE001 - any reader failure becomes a reported Skip
        return unit, None, Skip(unit.path, f"{type(err).__name__}: {err} (unit {unit.unit_id})", unit.star_id), None
    problem = record_problem(record, _ADAPTER.grid.npix, len(_ADAPTER.schema))
    if problem:
        return unit, None, Skip(unit.path, problem, record.star_id), None
    masked = (int(np.count_nonzero((record.visit_ivar == 0) & _USABLE)), record.n_visits * int(_USABLE.sum()))
    return unit, record, None, masked


def _resolve_adapter(survey, adapter_options):
    if isinstance(survey, str):
        from pairspec.surveys import get_adapter

        return get_adapter(survey, **(adapter_options or {}))
    if adapter_options:
        raise ValueError("adapter_options apply only when `survey` is a registry name")
    return survey


def _open_existing(store_path: str, adapter):
    """The pair store at `store_path` opened for append, or None when there is none yet (or only a
    creation cut off before its marker, which create_store may overwrite). ValueError if it holds
    another survey, grid or label set."""
    from pairspec.store import open_store

    try:
        store = open_store(store_path, mode="a")
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, ValueError) and "not a pairspec store" not in str(err):
            raise
        return None
    if store.survey != adapter.name or store.grid != adapter.grid or store.schema.names != adapter.schema.names:
        raise ValueError(f"{store_path}: store holds {store.survey} {store.release} on a {store.grid.npix}-px grid "
                         f"with labels {store.schema.names}; the {adapter.name} adapter does not match")
    return store


def _create(store_path: str, adapter, source: str, adapter_options, chunk: int):
    from pairspec.store import create_store

    # create_store refuses to overwrite anything but an unfinished pair store
    prov = {"adapter": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
            "adapter_options": adapter_options or {}, "source": str(source)}
    return create_store(store_path, adapter.name, adapter.release, adapter.grid, adapter.schema, prov, chunk)


def ingest(survey, source: str, store_path: str, workers: int | None = None, batch_size: int = 256,
           progress: bool = True, adapter_options: dict | None = None, limit: int | None = None,
           chunk: int = 256, _after_batch: Callable[[int], None] | None = None) -> IngestReport:
    """Read every unit of `source` into the pair store at `store_path` (created if absent).

    `survey`: registry name or adapter instance. `limit`: only the first `limit` units (sorted by
    unit_id). `chunk`: shard length of a new store. `_after_batch(k)` is called after the k-th committed batch (tests use it to crash).
    """
    t0 = time.perf_counter()
    adapter = _resolve_adapter(survey, adapter_options)
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    local = _local_path(str(store_path))
    # parallel writers start before discovery, so that their start-up (imports) overlaps it
    writers = _Workers(adapter, local, n_workers) if n_workers > 1 and local is not None and _HAS_FCNTL else None
    with _removed_after(writers and lock_path(local)), writers or contextlib.nullcontext():
        discovery = adapter.discover(source)
        units = sorted(discovery.units, key=lambda u: u.unit_id)
        if limit is not None:
            units = units[: int(limit)]
        existing = _open_existing(str(store_path), adapter)
        todo = units if existing is None else [u for u in units if u.unit_id not in existing.sources]

        def the_store():  # a new store is created once the parallel workers have their first orders
            if existing is not None:
                return existing
            return _create(str(store_path), adapter, source, adapter_options, chunk)

        report = IngestReport(store=str(store_path), n_pixels=adapter.grid.npix,
                              skipped=list(discovery.skipped), already_present=len(units) - len(todo))
        masked = [0, 0]  # ivar == 0 pixels, all pixels, within the usable blocks
        if writers is not None and len(todo) > 1:
            store = _ingest_parallel(writers, the_store, todo, max(1, int(batch_size)), report, masked, progress,
                                     _after_batch)
        else:
            store = the_store()
            # a multiple of the shard length, so that star shards are written by one batch each
            batch = max(1, math.ceil(batch_size / store.chunk)) * store.chunk
            _ingest_here(adapter, store, todo, n_workers, batch, report, masked, progress, _after_batch)
    report.masked_fraction = masked[0] / masked[1] if masked[1] else float("nan")
    report.store_n_stars, report.store_n_visits = store.n_stars, store.n_visits
    report.elapsed_s = round(time.perf_counter() - t0, 3)
    _save_report(store, str(store_path), report)
    return report


try:
    import fcntl  # noqa: F401 - the parallel writers lock shared chunks with POSIX record locks

    _HAS_FCNTL = True
except ImportError:
    _HAS_FCNTL = False


@contextlib.contextmanager
def _removed_after(path: str | None):
    try:
        yield
    finally:
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _local_path(store_path: str) -> str | None:
    """The directory of a local store (writer processes open it themselves), else None."""
    if "://" not in store_path:
        return store_path
    return store_path.removeprefix("file://") if store_path.startswith("file://") else None


def _ingest_here(adapter, store, todo, workers, batch, report, masked, progress, _after_batch) -> None:
    """Single writer: records read here (or in a reader pool) are appended by this process; a batch is
    flushed whenever the committed count reaches a multiple of `batch` (star shards written whole)."""

    def flush(records, n_batches):
        store.append(records, contents_checked=True)
        report.n_stars += len(records)
        report.n_visits += sum(r.n_visits for r in records)
        if _after_batch is not None:
            _after_batch(n_batches)

    with _reader(adapter, workers, todo) as results, _progress(progress, len(todo)) as bar:
        pending, seen, n_batches, pending_visits = [], set(), 0, 0
        for unit, record, skip, counts in results:
            if record is not None:
                problem = store.duplicate_problem(record)
                if problem is None and (record.star_id in seen or record.source in seen):
                    problem = "star appears twice in this ingest"
                if problem:
                    skip = Skip(unit.path, problem, record.star_id)
            if skip is not None:
                report.skipped.append(skip)
            else:
                pending.append(record)
                pending_visits += record.n_visits
                masked[0], masked[1] = masked[0] + counts[0], masked[1] + counts[1]
                seen.update((record.star_id, record.source))
                if (store.n_stars + len(pending)) % batch == 0:
                    n_batches += 1
                    flush(pending, n_batches)
                    pending, pending_visits = [], 0
            bar(report.n_stars + len(pending), report.n_visits + pending_visits)
        if pending:
            flush(pending, n_batches + 1)


def _ingest_parallel(workers: "_Workers", the_store, todo, batch, report, masked, progress, _after_batch):
    """Parallel writers: consecutive batches of at most `batch` units (`_guided_batches`). A worker
    reads its batch and sends back a summary (star id, source, visit count, masked counts, or the
    Skip of each unit); here, strictly in batch order, duplicates are refused, the batch gets its first star and visit rows,
    the arrays are grown to cover them (`reserve`), and the worker is told to write them
    (`write_batch`: whole chunks directly, the chunk shared with a neighbouring batch under its
    lock). Batches are committed in order once written. The kept records, their order and their
    rows are those of the single-writer path, so the store is the same."""
    from pairspec.store import _Key

    batches = _guided_batches(todo, batch, workers.n)
    plans: dict[int, tuple] = {}  # batch -> (first star row, first visit row, keys, n visits)
    summaries: dict[int, tuple] = {}  # batch -> (worker, summary), waiting for its turn to be planned
    written: set[int] = set()  # batches on disk, waiting for their turn to be committed
    seen: dict[str, int] = {}  # star ids and sources of this ingest -> their batch
    next_read = next_plan = next_commit = n_batches = 0
    with _progress(progress, len(todo)) as bar:
        for _ in range(2):  # two read orders per worker: one to read while the other waits to be written
            for wid in range(workers.n):
                if next_read < len(batches):
                    workers.send(wid, ("read", next_read, batches[next_read]))
                    next_read += 1
        store = the_store()  # (created, if new, while the workers read)
        star_end, visit_end = store.n_stars, store.n_visits
        while next_commit < len(batches):
            kind, k, wid, payload = workers.receive()
            if kind == "read":
                summaries[k] = (wid, payload)
                while next_plan in summaries:  # plan in batch order: rows follow the unit order
                    wid_p, summary = summaries.pop(next_plan)
                    keep, keys, n_visits = [], [], 0
                    for i, (skip, key, counts) in enumerate(summary):
                        if key is not None:
                            star_id, source, nv = key
                            problem = store.duplicate_problem(_Key(star_id, source))
                            # as the single writer words it: a star of an earlier batch is in the
                            # store by the time this one is committed
                            if problem is None and seen.get(star_id, next_plan) < next_plan:
                                problem = f"star {star_id} is already in the store"
                            elif problem is None and seen.get(source, next_plan) < next_plan:
                                problem = f"source {source} is already in the store"
                            elif problem is None and (star_id in seen or source in seen):
                                problem = "star appears twice in this ingest"
                            if problem:
                                skip = Skip(batches[next_plan][i].path, problem, star_id)
                        if skip is not None:
                            report.skipped.append(skip)
                            continue
                        keep.append(i)
                        keys.append((star_id, source))
                        n_visits += nv
                        masked[0], masked[1] = masked[0] + counts[0], masked[1] + counts[1]
                        seen[star_id] = seen[source] = next_plan
                    plans[next_plan] = (star_end, visit_end, keys, n_visits)
                    if keys:  # grown before anyone writes there; with room for a few more batches
                        store.reserve(star_end + len(keys), visit_end + n_visits, 3 * batch, 3 * n_visits)
                    workers.send(wid_p, ("write", next_plan, keep, star_end, visit_end, store.chunk))
                    star_end, visit_end = star_end + len(keys), visit_end + n_visits
                    next_plan += 1
            else:  # "done": batch k is on disk
                written.add(k)
                if next_read < len(batches):
                    workers.send(wid, ("read", next_read, batches[next_read]))
                    next_read += 1
                while next_commit in written:
                    written.remove(next_commit)
                    s0, v0, keys, n_visits = plans.pop(next_commit)
                    if keys:
                        store.commit_batch(s0 + len(keys), v0 + n_visits, keys)
                        report.n_stars += len(keys)
                        report.n_visits += n_visits
                        n_batches += 1
                        if _after_batch is not None:
                            _after_batch(n_batches)
                    bar(report.n_stars, report.n_visits, advance=len(batches[next_commit]))
                    next_commit += 1
    store.trim()  # the rows reserved past the last batch
    return store


def _guided_batches(units: list, size: int, workers: int) -> list[list]:
    """Consecutive batches of `size` units, getting smaller towards the end (each at most 1/(2 x
    workers) of what is left, and at least size/8) so that the workers finish together instead of
    one waiting for the other's last full batch (guided self-scheduling)."""
    batches, i, smallest = [], 0, max(1, size // 8)
    while i < len(units):
        n = min(size, max(smallest, math.ceil((len(units) - i) / (2 * workers))))
        batches.append(units[i:i + n])
        i += n
    return batches


class _Workers:
    """The reader-writer processes of a parallel ingest (spawn): one inbox each, one shared outbox.
    A worker that dies or raises stops the ingest with its error; leaving the block stops them all."""

    def __init__(self, adapter, path: str, n: int):
        self.args, self.n, self.procs = (adapter, path), n, []

    def __enter__(self):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork of a process that may hold torch / zarr threads
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(self.n)]
        for wid, inbox in enumerate(self.inboxes):
            proc = ctx.Process(target=_worker_main, args=(*self.args, wid, inbox, self.outbox), daemon=True,
                               name=f"pairspec-ingest-{wid}")
            proc.start()
            self.procs.append(proc)
        return self

    def send(self, wid: int, message) -> None:
        self.inboxes[wid].put(message)

    def receive(self):
        while True:
            try:
                kind, k, wid, payload = self.outbox.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"ingest worker {dead[0].name} died (exit code {dead[0].exitcode})") from None
                continue
            if kind == "error":
                raise RuntimeError(f"ingest worker {wid} failed on batch {k}:\n{payload}")
            return kind, k, wid, payload

    def __exit__(self, *exc):
        for inbox in self.inboxes:
            inbox.put(None)
        for proc in self.procs:
            proc.join(timeout=10 if exc[0] is None else 0.5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        # the workers are gone: messages nobody will read must not hold this process at exit
        for q in (*self.inboxes, self.outbox):
            q.cancel_join_thread()
            q.close()
        return False


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker the moment the ingest process dies (even by SIGKILL),
    so no orphan can write into a store that a rerun is repairing."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _worker_main(adapter, path: str, wid: int, inbox, outbox) -> None:
    """Loop of one parallel-ingest worker. Orders: ("read", k, units) -> ("read", k, wid, summary);
    ("write", k, keep, star row, visit row, chunk) -> ("done", k, wid, None); None -> exit. Read
    orders queue up, and a write order is served between two units of the batch being read, so the
    worker never idles while the coordinator waits for an earlier batch's summary. Exits by itself
    if the ingest process goes away."""
    import collections
    import multiprocessing as mp

    from pairspec.store import write_batch

    _die_with_parent()
    _init_reader(adapter)
    parent, k = mp.parent_process(), -1
    reads: collections.deque = collections.deque()  # [k, units, results so far], in batch order
    held: dict[int, list] = {}  # read batches waiting for their write order
    while True:
        try:
            message = inbox.get_nowait() if reads else inbox.get(timeout=1.0)
        except queue.Empty:
            if not reads:
                if parent is not None and not parent.is_alive():
                    return
                continue
            message = ()  # nothing new: read the next unit
        if message is None:
            return
        try:
            if not message:
                k, units, results = reads[0]
                results.append(_read_unit(units[len(results)]))
                if len(results) == len(units):
                    reads.popleft()
                    held[k] = results
                    summary = [(skip, None, None) if record is None else
                               (None, (record.star_id, record.source, record.n_visits), counts)
                               for _, record, skip, counts in results]
                    outbox.put(("read", k, wid, summary))
            elif message[0] == "read":
                reads.append((message[1], message[2], []))
            else:
                _, k, keep, star_row, visit_row, chunk = message
                results = held.pop(k)
                records = [results[i][1] for i in keep]
                del results
                if records:
                    write_batch(path, records, star_row, visit_row, chunk)
                del records
                outbox.put(("done", k, wid, None))
        except BaseException:  # noqa: BLE001 - reported to the ingest process, which stops
            outbox.put(("error", k, wid, traceback.format_exc()))
            return


class _reader:
    """Context manager yielding (unit, record, skip, masked) in unit order, in-process or from a spawn
    process pool. The pool runs at most `window` units ahead of the consumer, so memory does not grow
    with the number of units when the consumer (the single writer) is the slower side. A reader
    process that dies (killed, out of memory) stops the ingest with a RuntimeError instead of a hang:
    concurrent.futures marks the pool broken, where multiprocessing.Pool would wait for ever."""

    def __init__(self, adapter, workers, units, window: int = 64):
        self.adapter, self.units = adapter, units
        self.workers = (os.cpu_count() or 1) if workers is None else int(workers)
        self.pool, self.window = None, window

    def __enter__(self):
        if self.workers <= 1 or len(self.units) <= 1:
            _init_reader(self.adapter)
            return map(_read_unit, self.units)
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        from pairspec.ordered import ordered_map

        # spawn: no fork of a process that may hold torch / zarr threads
        self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                        initializer=_init_reader, initargs=(self.adapter,))

        def results():
            try:
                yield from ordered_map(self.pool, _read_unit, self.units, self.window)
            except BrokenProcessPool as err:
                raise RuntimeError(f"an ingest reader process died ({err}); the batches committed so far "
                                   "are whole, and running the same command again resumes") from None

        return results()

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False


class _progress:
    """A rich progress bar over units with star/visit counts, or a no-op callable."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda stars, visits, advance=1: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                            TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task("", total=self.total)

        def update(stars, visits, advance=1):
            self.bar.update(task, advance=advance, description=f"{stars} stars, {visits} visits")

        return update

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False


def _save_report(store, store_path: str, report: IngestReport) -> None:
    d = report.to_dict()
    d.pop("elapsed_s")  # keep the store's attributes identical between equivalent runs
    store.set_attr("last_ingest", d)
    if "://" not in store_path or store_path.startswith("file://"):
        local = store_path.removeprefix("file://").rstrip("/")
        with open(local + ".ingest-report.json", "w") as fh:
            fh.write(report.to_json())


def format_report(report: IngestReport) -> str:
    """The closing summary the CLI prints."""
    frac = "n/a" if math.isnan(report.masked_fraction) else f"{report.masked_fraction:.1%}"
    lines = [
        f"ingested {report.n_stars} stars, {report.n_visits} visits ({report.n_pixels} px) in {report.elapsed_s:.1f} s",
        f"store {report.store}: {report.store_n_stars} stars, {report.store_n_visits} visits; "
        f"{report.already_present} units were already present",
        f"masked pixels (ivar = 0, usable blocks) in the new visits: {frac}",
        f"skipped {len(report.skipped)} units" + (", by reason:" if report.skipped else ""),
    ]
    # Group by the reason's leading phrase so a thousand expected duplicates don't hide one broken file.
    groups: dict[str, list] = {}
    for s in report.skipped:
        groups.setdefault(s.problem.split(":")[0], []).append(s)
    for reason, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {len(items):6d}  {reason}")
        for s in items[:3]:
            lines.append(f"            {s.path}: {s.problem}")
        if len(items) > 3:
            lines.append(f"            ... {len(items) - 3} more in the ingest report JSON")
    return "\n".join(lines)
