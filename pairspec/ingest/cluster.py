"""The Dask engine: the parallel-writers protocol, with Dask tasks for worker processes.

A read task reads one batch of units on some worker and keeps the records there (its result is never
sent back); a summary task sends the client the small summary (star ids, sources, visit counts,
skips). The client applies the duplicate-star rule in batch order (rules.admit_batch), gives the
batch its rows, grows the arrays (`reserve`) and submits the write task, which Dask runs where the
records are; it writes whole chunks directly and the edge chunk shared with a neighbouring batch
under a distributed.Lock (DaskChunkLocks). Batches are committed in order by the client, the only
process that writes the store's attributes, so a crash anywhere leaves what every engine leaves:
whole committed batches, and leftovers a rerun truncates. Same units, same rule, same rows: the
store is the one-process store, array for array.
"""

from __future__ import annotations

import uuid
from collections import deque

from pairspec.ingest.rules import (
    Admission,
    BatchCommitter,
    admit_batch,
    guided_batches,
    read_unit,
    summarize,
)


def _read_batch(adapter, units):
    return [read_unit(u, adapter) for u in units]


def _summary(results):
    return summarize(results)


def _write(results, keep, star_row, visit_row, chunk, path, token):
    from pairspec.distributed import DaskChunkLocks
    from pairspec.store import write_batch

    records = [results[i][1] for i in keep]
    if records:
        write_batch(path, records, star_row, visit_row, chunk, locks=DaskChunkLocks(token), token=token)
    return len(records)


def ingest_on_dask(client, adapter, store_path, the_store, todo, batch_size, report, masked, progress_bar,
                   after_batch):
    from pairspec.distributed import check_reachable, n_workers, worker_path

    check_reachable(client, store_path)
    path, token = worker_path(store_path), uuid.uuid4().hex
    n = n_workers(client)
    batches = guided_batches(todo, batch_size, n)
    window = 2 * n  # batches read ahead of the one being planned: memory on the workers stays bounded
    reads, summaries, writes = {}, {}, deque()  # writes: (k, future, first star, first visit, keys, visits)
    next_submit = 0

    def submit_reads(upto):
        nonlocal next_submit
        while next_submit < min(len(batches), upto):
            k = next_submit
            reads[k] = client.submit(_read_batch, adapter, batches[k], pure=False)
            summaries[k] = client.submit(_summary, reads[k], pure=False)
            next_submit += 1

    def commit_ready(limit: int):
        """Commit, in order, the written batches; wait for the oldest while more than `limit` are out."""
        while writes and (writes[0][1].done() or len(writes) > limit):
            k, fut, s0, v0, keys, n_visits = writes.popleft()
            _result(fut, k)
            reads.pop(k, None)  # the records on the worker can go
            commit(s0, v0, keys, n_visits, len(batches[k]))

    with progress_bar as bar:
        submit_reads(window)
        store = the_store()  # (created, if new, while the first batches are read)
        commit = BatchCommitter(store, report, bar, after_batch)
        admission = Admission.of(store)
        star_end, visit_end = store.n_stars, store.n_visits
        for k in range(len(batches)):
            summary = _result(summaries.pop(k), k)
            keep, keys, n_visits = admit_batch(admission, batches[k], summary, report, masked)
            if keys:  # grown before anyone writes there; with room for a few more batches
                store.reserve(star_end + len(keys), visit_end + n_visits, 3 * batch_size, 3 * n_visits)
            fut = client.submit(_write, reads[k], keep, star_end, visit_end, store.chunk, path, token, pure=False)
            writes.append((k, fut, star_end, visit_end, keys, n_visits))
            star_end, visit_end = star_end + len(keys), visit_end + n_visits
            submit_reads(k + 1 + window)
            commit_ready(window)
        commit_ready(0)
    store.trim()  # the rows reserved past the last batch
    return store


def _result(future, k):
    try:
        return future.result()
    except Exception as err:
        raise RuntimeError(f"Dask task of ingest batch {k} failed on a worker ({type(err).__name__}: {err}); the "
                           "batches committed so far are whole, and running the same command again resumes") from err
