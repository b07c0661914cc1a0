"""`pairspec ingest`: survey files -> pair store. One writer process, parallel readers, resumable.

Units are discovered, sorted by unit_id and read in a process pool with ORDERED imap, so the single
writer appends the same records in the same batches on every run; units already in the store are
skipped, so a rerun after a crash finishes the job (store.py repairs an interrupted batch).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

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
    masked = (int((record.visit_ivar[:, _USABLE] == 0).sum()), record.n_visits * int(_USABLE.sum()))
    return unit, record, None, masked


def _resolve_adapter(survey, adapter_options):
    if isinstance(survey, str):
        from pairspec.surveys import get_adapter

        return get_adapter(survey, **(adapter_options or {}))
    if adapter_options:
        raise ValueError("adapter_options apply only when `survey` is a registry name")
    return survey


def _open_or_create(store_path: str, adapter, source: str, adapter_options, chunk: int):
    from pairspec.store import create_store, open_store

    try:
        store = open_store(store_path, mode="a")
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, ValueError) and "not a pairspec store" not in str(err):
            raise
        # nothing there, or a creation cut off before its marker (create_store refuses anything else)
        prov = {"adapter": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
                "adapter_options": adapter_options or {}, "source": str(source)}
        return create_store(store_path, adapter.name, adapter.release, adapter.grid, adapter.schema, prov, chunk)
    if store.survey != adapter.name or store.grid != adapter.grid or store.schema.names != adapter.schema.names:
        raise ValueError(f"{store_path}: store holds {store.survey} {store.release} on a {store.grid.npix}-px grid "
                         f"with labels {store.schema.names}; the {adapter.name} adapter does not match")
    return store


def ingest(survey, source: str, store_path: str, workers: int | None = None, batch_size: int = 256,
           progress: bool = True, adapter_options: dict | None = None, limit: int | None = None,
           chunk: int = 256, _after_batch: Callable[[int], None] | None = None) -> IngestReport:
    """Read every unit of `source` into the pair store at `store_path` (created if absent).

    `survey`: registry name or adapter instance. `limit`: only the first `limit` units (sorted by
    unit_id). `chunk`: shard length of a new store. `_after_batch(k)` is called after the k-th committed batch (tests use it to crash).
    """
    t0 = time.perf_counter()
    adapter = _resolve_adapter(survey, adapter_options)
    discovery = adapter.discover(source)
    units = sorted(discovery.units, key=lambda u: u.unit_id)
    if limit is not None:
        units = units[: int(limit)]
    store = _open_or_create(str(store_path), adapter, source, adapter_options, chunk)
    todo = [u for u in units if u.unit_id not in store.sources]
    report = IngestReport(store=str(store_path), n_pixels=adapter.grid.npix,
                          skipped=list(discovery.skipped), already_present=len(units) - len(todo))
    # batches end where the committed count reaches a multiple of `batch` (a multiple of the shard
    # length): star shards are then written by one batch each, whatever was skipped before
    batch = max(1, math.ceil(batch_size / store.chunk)) * store.chunk
    masked = [0, 0]  # ivar == 0 pixels, all pixels, within the usable blocks

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
    report.masked_fraction = masked[0] / masked[1] if masked[1] else float("nan")
    report.store_n_stars, report.store_n_visits = store.n_stars, store.n_visits
    report.elapsed_s = round(time.perf_counter() - t0, 3)
    _save_report(store, str(store_path), report)
    return report


class _reader:
    """Context manager yielding (unit, record, skip) in unit order, in-process or from a spawn pool."""

    def __init__(self, adapter, workers, units):
        self.adapter, self.units = adapter, units
        self.workers = (os.cpu_count() or 1) if workers is None else int(workers)
        self.pool = None

    def __enter__(self):
        if self.workers <= 1 or len(self.units) <= 1:
            _init_reader(self.adapter)
            return map(_read_unit, self.units)
        import multiprocessing as mp

        # spawn: no fork of a process that may hold torch / zarr threads
        self.pool = mp.get_context("spawn").Pool(self.workers, initializer=_init_reader, initargs=(self.adapter,))
        return self.pool.imap(_read_unit, self.units, chunksize=2)

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        return False


class _progress:
    """A rich progress bar over units with star/visit counts, or a no-op callable."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda stars, visits: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                            TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task("", total=self.total)

        def update(stars, visits):
            self.bar.update(task, advance=1, description=f"{stars} stars, {visits} visits")

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
