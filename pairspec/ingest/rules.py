"""The rules every ingest engine (one process, parallel writers, Dask) applies, written once.

- `Admission`: which records become stars (the duplicate-star rule). Its verdict depends only on the
  stars committed before this ingest and the records met before in unit order, never on how the
  engine cut the units into batches, so every engine keeps the same records with the same reasons.
- `read_unit`: one unit -> a checked record or a Skip (never raises: one bad file must not stop the
  ingest). Content checks run where the record is read (a worker), so the coordinator only decides
  duplicates.
- `path_problem`: a unit whose file, as a catalogue row names it, lies outside the source root is
  refused (a summary table is user data: its FIELD or file name could hold "../").
"""

from __future__ import annotations

import os
import posixpath

import numpy as np

from pairspec.surveys.base import AdapterError, Skip, WorkUnit


class Admission:
    """The duplicate-star rule. A record is refused when its star id or its source (unit id) is already
    committed in the store or was admitted earlier in this ingest. Both read "already in the store":
    one wording whatever the batches, and whether an earlier run (cut off by a crash) or this one
    committed the first copy, so a resumed ingest reports exactly what an uninterrupted one does.
    `admit` records what it lets in; `problem` only asks."""

    def __init__(self, committed_ids=(), committed_sources=()):
        # the store's own (live) sets are asked as they are: no copy of a 700k-star set per batch
        self.committed_ids = committed_ids if isinstance(committed_ids, (set, frozenset)) else set(committed_ids)
        self.committed_sources = (committed_sources if isinstance(committed_sources, (set, frozenset))
                                  else set(committed_sources))
        self.ids: set[str] = set()  # admitted by this ingest (committed or not yet)
        self.sources: set[str] = set()

    @classmethod
    def of(cls, store) -> Admission:
        """For an open store (anything with `star_ids` and `sources`): what it has committed."""
        return cls(store.star_ids, store.sources)

    def problem(self, star_id: str, source: str) -> str | None:
        if star_id in self.committed_ids or star_id in self.ids:
            return f"star {star_id} is already in the store"
        if source in self.committed_sources or source in self.sources:
            return f"source {source} is already in the store"
        return None

    def admit(self, star_id: str, source: str) -> str | None:
        """None (and the record is counted in) or why it is refused."""
        problem = self.problem(star_id, source)
        if problem is None:
            self.ids.add(star_id)
            self.sources.add(source)
        return problem


def source_roots(source: str, adapter) -> list[str]:
    """Folders a unit's file may lie in: the source (a folder, or the folder of a summary file) and an
    adapter's own `stars_dir` option when it has one."""
    roots = [str(source)]
    if "://" not in str(source) and os.path.isfile(str(source)):
        roots = [os.path.dirname(os.path.abspath(str(source)))]
    extra = getattr(adapter, "stars_dir", None)
    if extra:
        roots.append(str(extra))
    return roots


def _norm(path: str) -> str:
    if "://" in path:
        proto, _, rest = path.partition("://")
        return f"{proto}://{posixpath.normpath('/' + rest).lstrip('/')}"
    return os.path.normpath(os.path.abspath(path))


def path_problem(unit: WorkUnit, roots: list[str]) -> str | None:
    """Why `unit.path` is refused (None when it lies under a root). Lexical: "..", absolute paths and
    other roots are caught; symbolic links a user placed inside the tree are followed as they are."""
    if not unit.path:
        return None
    path = _norm(str(unit.path))
    for root in roots:
        base = _norm(str(root))
        if path == base or path.startswith(base.rstrip("/" + os.sep) + ("/" if "://" in base else os.sep)):
            return None
    return f"file {unit.path} resolves outside the source root {roots[0]} (a catalogue path with '..' or an absolute path)"


_ADAPTER = None  # the adapter inside a reader process (set by init_reader)
_USABLE = None


def init_reader(adapter) -> None:
    global _ADAPTER, _USABLE
    _ADAPTER = adapter
    _USABLE = adapter.grid.usable()


def read_unit(unit: WorkUnit, adapter=None):
    """(unit, record, None, masked) or (unit, None, Skip, None). Never raises. `masked`: (ivar == 0
    pixels, pixels) of the record's visits within the grid's usable blocks."""
    from pairspec.store import record_problem

    if adapter is not None and adapter is not _ADAPTER:
        init_reader(adapter)
    adapter = _ADAPTER
    try:
        record = adapter.read(unit)
    except AdapterError as err:
        return unit, None, Skip(err.path, err.problem, unit.star_id), None
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure becomes a reported Skip
        return unit, None, Skip(unit.path, f"{type(err).__name__}: {err} (unit {unit.unit_id})", unit.star_id), None
    problem = record_problem(record, adapter.grid.npix, len(adapter.schema))
    if problem:
        return unit, None, Skip(unit.path, problem, record.star_id), None
    masked = (int(np.count_nonzero((record.visit_ivar == 0) & _USABLE)), record.n_visits * int(_USABLE.sum()))
    return unit, record, None, masked


def summarize(results) -> list:
    """What a worker sends back about the units it read (the spectra stay with it): per unit
    (skip, None, None) or (None, (star_id, source, n_visits), masked counts)."""
    return [(skip, None, None) if record is None else (None, (record.star_id, record.source, record.n_visits), counts)
            for _, record, skip, counts in results]


def admit_batch(admission: Admission, units: list, summary: list, report, masked: list) -> tuple[list, list, int]:
    """Apply the duplicate-star rule to one batch's summary, in unit order (engines call it in batch
    order). Skips go to report.skipped; returns (indices kept, their (star_id, source), their visits)."""
    keep, keys, n_visits = [], [], 0
    for i, (skip, key, counts) in enumerate(summary):
        if key is not None:
            star_id, source, nv = key
            problem = admission.admit(star_id, source)
            if problem:
                skip = Skip(units[i].path, problem, star_id)
        if skip is not None:
            report.skipped.append(skip)
            continue
        keep.append(i)
        keys.append((star_id, source))
        n_visits += nv
        masked[0], masked[1] = masked[0] + counts[0], masked[1] + counts[1]
    return keep, keys, n_visits


class BatchCommitter:
    """Commits the written batches of a parallel engine, which must call it in batch order: moves the store's
    committed end past the batch (store.commit_batch), counts its stars and visits in the report, calls
    after_batch(number of batches committed) and advances the progress bar by the batch's units."""

    def __init__(self, store, report, bar, after_batch=None):
        self.store, self.report, self.bar, self.after_batch = store, report, bar, after_batch
        self.n_batches = 0

    def __call__(self, s0: int, v0: int, keys: list, n_visits: int, n_units: int) -> None:
        if keys:
            self.store.commit_batch(s0 + len(keys), v0 + n_visits, keys)
            self.report.n_stars += len(keys)
            self.report.n_visits += n_visits
            self.n_batches += 1
            if self.after_batch is not None:
                self.after_batch(self.n_batches)
        self.bar(self.report.n_stars, self.report.n_visits, advance=n_units)


def guided_batches(units: list, size: int, workers: int) -> list[list]:
    """Consecutive batches of `size` units, getting smaller towards the end (each at most 1/(2 x
    workers) of what is left, and at least size/8) so that the workers finish together instead of
    one waiting for the other's last full batch (guided self-scheduling)."""
    import math

    batches, i, smallest = [], 0, max(1, size // 8)
    while i < len(units):
        n = min(size, max(smallest, math.ceil((len(units) - i) / (2 * workers))))
        batches.append(units[i:i + n])
        i += n
    return batches
