"""The one-writer engine: records read here (or in a reader pool) are appended by this process.

Used with workers <= 1, for a store URL that other processes cannot open (memory://), and where
POSIX record locks are missing. A batch is flushed whenever the committed count reaches a multiple
of `batch`, so star shards are written whole.
"""

from __future__ import annotations

import os

from pairspec.ingest.rules import Admission, init_reader, read_unit
from pairspec.surveys.base import Skip


def ingest_here(adapter, store, todo, workers, batch, report, masked, progress_bar, after_batch) -> None:
    admission = Admission.of(store)

    def flush(records, n_batches):
        store.append(records, contents_checked=True)
        report.n_stars += len(records)
        report.n_visits += sum(r.n_visits for r in records)
        if after_batch is not None:
            after_batch(n_batches)

    with reader(adapter, workers, todo) as results, progress_bar as bar:
        pending, n_batches, pending_visits = [], 0, 0
        for unit, record, skip, counts in results:
            if record is not None:
                problem = admission.admit(record.star_id, record.source)
                if problem:
                    skip = Skip(unit.path, problem, record.star_id)
            if skip is not None:
                report.skipped.append(skip)
                bar(report.n_stars + len(pending), report.n_visits + pending_visits)
                continue
            pending.append(record)
            pending_visits += record.n_visits
            masked[0], masked[1] = masked[0] + counts[0], masked[1] + counts[1]
            if (store.n_stars + len(pending)) % batch == 0:
                n_batches += 1
                flush(pending, n_batches)
                pending, pending_visits = [], 0
            bar(report.n_stars + len(pending), report.n_visits + pending_visits)
        if pending:
            flush(pending, n_batches + 1)


class reader:
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
            init_reader(self.adapter)
            return map(read_unit, self.units)
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        from pairspec.ordered import ordered_map

        # spawn: no fork of a process that may hold torch / zarr threads
        self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                        initializer=init_reader, initargs=(self.adapter,))

        def results():
            try:
                yield from ordered_map(self.pool, read_unit, self.units, self.window)
            except BrokenProcessPool as err:
                raise RuntimeError(f"an ingest reader process died ({err}); the batches committed so far "
                                   "are whole, and running the same command again resumes") from None

        return results()

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False
