"""The parallel-writers engine (a local store, workers > 1): each worker process reads a batch of units
AND writes its rows into the store itself (spectra never cross processes); this process decides, in
batch order, which records are kept (rules.admit_batch), where each batch's rows go, and commits the
batches in order (docs/data-model.md, "Ingest")."""

from __future__ import annotations

import os
import queue
import sys
import traceback

from pairspec.ingest.rules import (
    Admission,
    BatchCommitter,
    admit_batch,
    guided_batches,
    init_reader,
    read_unit,
    summarize,
)


def ingest_parallel(workers: Workers, the_store, todo, batch, report, masked, progress_bar, after_batch):
    """Consecutive batches of at most `batch` units (`guided_batches`). A worker reads its batch and
    sends back a summary; here, strictly in batch order, the duplicate-star rule runs, the batch gets
    its first star and visit rows, the arrays are grown to cover them (`reserve`), and the worker is
    told to write them (`write_batch`: whole chunks directly, the chunk shared with a neighbouring
    batch under its lock). Batches are committed in order once written. The kept records, their
    order and their rows are those of the one-writer engine, so the store is the same."""
    batches = guided_batches(todo, batch, workers.n)
    plans: dict[int, tuple] = {}  # batch -> (first star row, first visit row, keys, n visits)
    summaries: dict[int, tuple] = {}  # batch -> (worker, summary), waiting for its turn to be planned
    written: set[int] = set()  # batches on disk, waiting for their turn to be committed
    next_read = next_plan = next_commit = 0
    with progress_bar as bar:
        for _ in range(2):  # two read orders per worker: one to read while the other waits to be written
            for wid in range(workers.n):
                if next_read < len(batches):
                    workers.send(wid, ("read", next_read, batches[next_read]))
                    next_read += 1
        store = the_store()  # (created, if new, while the workers read)
        commit = BatchCommitter(store, report, bar, after_batch)
        admission = Admission.of(store)
        star_end, visit_end = store.n_stars, store.n_visits
        while next_commit < len(batches):
            kind, k, wid, payload = workers.receive()
            if kind == "read":
                summaries[k] = (wid, payload)
                while next_plan in summaries:  # plan in batch order: rows follow the unit order
                    wid_p, summary = summaries.pop(next_plan)
                    keep, keys, n_visits = admit_batch(admission, batches[next_plan], summary, report, masked)
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
                    commit(*plans.pop(next_commit), len(batches[next_commit]))
                    next_commit += 1
    store.trim()  # the rows reserved past the last batch
    return store


WORKER_NAME = "pairspec-ingest-"  # + worker index: the process name of every parallel-ingest worker


def in_starting_worker() -> bool:
    """True inside a parallel-ingest worker that is still importing the user's main script (spawn runs it
    again in every child: a script that calls ingest without `if __name__ == "__main__":` would make each
    worker start an ingest of its own and wait for ever on the store's lock that its parent holds)."""
    import multiprocessing as mp

    return mp.current_process().name.startswith(WORKER_NAME)


class Workers:
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
            proc = ctx.Process(target=worker_main, args=(*self.args, wid, inbox, self.outbox), daemon=True,
                               name=f"{WORKER_NAME}{wid}")
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
                    raise RuntimeError(f"ingest worker {dead[0].name} died (exit code {dead[0].exitcode}; its "
                                       "error, if any, is printed above); the batches committed so far are "
                                       "whole, and running the same command again resumes") from None
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


def die_with_parent(parent_pid: int | None) -> None:
    """Linux: the kernel kills this worker the moment the ingest process dies (even by SIGKILL),
    so no orphan can write into a store that a rerun is repairing. The request only covers a parent
    alive when it is made: a worker still starting (spawn imports take a second) when its ingest was
    killed would run on as an orphan and serve the write orders already in its inbox, into rows a rerun
    may have committed since. So once it is made, a worker whose parent is gone exits."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(0)  # the ingest died before the request: nothing of it may be written any more


def worker_main(adapter, path: str, wid: int, inbox, outbox) -> None:
    """Loop of one parallel-ingest worker. Orders: ("read", k, units) -> ("read", k, wid, summary);
    ("write", k, keep, star row, visit row, chunk) -> ("done", k, wid, None); None -> exit. Read
    orders queue up, and a write order is served between two units of the batch being read, so the
    worker never idles while the coordinator waits for an earlier batch's summary. Exits by itself
    if the ingest process goes away."""
    import collections
    import multiprocessing as mp

    from pairspec.store import write_batch

    parent, k = mp.parent_process(), -1
    die_with_parent(None if parent is None else parent.pid)
    init_reader(adapter)
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
                results.append(read_unit(units[len(results)]))
                if len(results) == len(units):
                    reads.popleft()
                    held[k] = results
                    outbox.put(("read", k, wid, summarize(results)))
            elif message[0] == "read":
                reads.append((message[1], message[2], []))
            else:
                _, k, keep, star_row, visit_row, chunk = message
                if parent is not None and not parent.is_alive():
                    return  # an order of an ingest that died (non-Linux: no death signal): never write it
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
