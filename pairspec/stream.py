"""Streaming training twins from a pair store with bounded memory (recipe `data.stream: true`).

A TwinStream cuts one split's usable stars (data.select_stars, in store order) into fixed chunks of
`chunk_stars` stars. Each epoch permutes the chunk order from (seed, epoch) and, under DDP, deals the
chunks out to the ranks (each chunk to the rank with the fewest twins so far: disjoint, balanced to
about one chunk). A rank reads its chunks one at a time (data.ChunkReader: continuum normalisation
and leave-one-out targets, as TwinData does) into a shuffle buffer, and after each chunk draws random
batches out of the buffer until at most `shuffle_buffer` twins are left; when its chunks are done it
empties the buffer in random batches. So a rank's buffer never holds more than shuffle_buffer + one
chunk of twins (`max_held` records the peak; up to 2 x read_threads further chunks are being read
ahead), and a single process sees every twin once per epoch (the last partial batch is dropped).

Steps per epoch are fixed up front from the star table: twins = visits of the selected stars (loo,
coadd) or stars (direct), steps = twins // batch_size. Every rank yields exactly that many batches of
batch_size / world: a rank whose chunks hold fewer twins (DDP imbalance, or visits dropped at read
time for having no good pixel) tops up from a second, re-permuted pass over its chunks; one with more
leaves its last buffer contents unused.

Label statistics come from the star labels (no spectra read), each star weighted by its twin count:
the same numbers as data.compute_label_stats on the materialised twins, except that visits dropped
at read time (no good pixel) are still counted.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator

import numpy as np

from pairspec.data import (
    ChunkReader,
    LabelStats,
    model_pixels,
    select_stars,
    table_columns,
)

KEYS = ("x", "target", "target_w", "labels", "snr", "star_index", "visit_index")


def twin_counts(store, stars: np.ndarray, mode: str) -> np.ndarray:
    """Twins each star gives before any visit is dropped: its visit count (loo, coadd) or 1 (direct)."""
    if mode == "direct":
        return np.ones(len(stars), dtype=np.int64)
    n_visits = table_columns(store, "stars", ("n_visits",))["n_visits"]
    return np.asarray(n_visits, dtype=np.int64)[np.asarray(stars, dtype=np.int64)]


def weighted_label_stats(labels: np.ndarray, weights: np.ndarray, std_floor: float = 1e-3) -> LabelStats:
    """data.compute_label_stats of `labels` (N, K) with row i repeated weights[i] times, without repeating."""
    labels = np.asarray(labels, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    k = labels.shape[1]
    mean, std = np.zeros(k), np.ones(k)
    lo, hi = np.full(k, np.nan), np.full(k, np.nan)
    for j in range(k):
        ok = np.isfinite(labels[:, j]) & (weights > 0)
        v, w = labels[ok, j], weights[ok]
        total = w.sum()
        if total > 0:
            mean[j], lo[j], hi[j] = np.sum(w * v) / total, v.min(), v.max()
            std[j] = max(np.sqrt(np.sum(w * (v - mean[j]) ** 2) / total), std_floor) if total > 1 else 1.0
    f4 = lambda a: a.astype(np.float32)
    return LabelStats(f4(mean), f4(std), f4(lo), f4(hi))


def store_label_stats(store, split: str = "train", mode: str = "loo", min_visits: int = 2,
                      max_stars: int | None = None, cols=None) -> LabelStats:
    """Label statistics of a split's twins from the star labels alone (no spectra read)."""
    stars = select_stars(store, split, mode, min_visits, max_stars)
    labels = np.asarray(store.labels(), dtype=np.float32)[stars]
    if cols is not None:
        labels = labels[:, list(cols)]
    return weighted_label_stats(labels, twin_counts(store, stars, mode))


def capped_stars(store, split: str, mode: str, min_visits: int = 2, max_stars: int | None = None,
                 max_twins: int = 2048, seed: int = 0) -> np.ndarray:
    """A fixed random subset of a split's stars (increasing) with at most `max_twins` twins in all
    (at least one star): the in-memory validation set of a streamed run."""
    stars = select_stars(store, split, mode, min_visits, max_stars)
    order = np.random.default_rng(seed).permutation(stars.size)
    total = np.cumsum(twin_counts(store, stars[order], mode))
    keep = max(1, int(np.searchsorted(total, max_twins, side="right"))) if stars.size else 0
    return np.sort(stars[order[:keep]])


class _Buffer:
    """Preallocated twin arrays (np.empty: pages are touched only as rows fill); random draws swap
    the tail rows into the holes, so a draw copies only the drawn rows."""

    def __init__(self, capacity: int):
        self.capacity, self.n, self.arrays = capacity, 0, None

    def add(self, chunk: dict) -> None:
        m = len(chunk["x"])
        if self.arrays is None:
            self.arrays = {k: np.empty((self.capacity,) + chunk[k].shape[1:], chunk[k].dtype) for k in KEYS}
        if self.n + m > self.capacity:
            raise RuntimeError(f"shuffle buffer overflow: {self.n} + {m} > {self.capacity}")
        for k in KEYS:
            self.arrays[k][self.n:self.n + m] = chunk[k]
        self.n += m

    def take(self, idx: np.ndarray) -> dict:
        out = {k: a[idx] for k, a in self.arrays.items()}
        k, n = len(idx), self.n
        holes = idx[idx < n - k]
        movers = np.setdiff1d(np.arange(n - k, n), idx)
        for a in self.arrays.values():
            a[holes] = a[movers]
        self.n = n - k
        return out


class TwinStream:
    """One split's twins, streamed chunk by chunk through a shuffle buffer (see the module docstring).

    `label_cols` (label column indices) may be set before `batches` is called; `max_held` is the most
    twins the buffer has held (instrumentation); `n_twins` the estimated twins per epoch.
    """

    def __init__(self, store, split: str = "train", mode: str = "loo", min_visits: int = 2,
                 max_stars: int | None = None, chunk_stars: int = 64, shuffle_buffer: int = 4096,
                 label_cols=None, device=None, read_threads: int | None = None):
        if chunk_stars < 1 or shuffle_buffer < 0:
            raise ValueError(f"chunk_stars must be >= 1 and shuffle_buffer >= 0, got {chunk_stars}, {shuffle_buffer}")
        self.store, self.split, self.mode, self.label_cols = store, split, mode, label_cols
        self.min_visits, self.max_stars = min_visits, max_stars
        self.shuffle_buffer = int(shuffle_buffer)
        stars = select_stars(store, split, mode, min_visits, max_stars)
        counts = twin_counts(store, stars, mode)
        self.chunks = [stars[i:i + chunk_stars] for i in range(0, stars.size, chunk_stars)]
        self.chunk_twins = np.array([counts[i:i + chunk_stars].sum() for i in range(0, stars.size, chunk_stars)],
                                    dtype=np.int64)
        self.n_twins = int(self.chunk_twins.sum())
        self.n_pix = int(model_pixels(store.grid).size)
        self.max_held = 0
        self._reader, self.device = None, device  # device: where ChunkReader normalises continua
        self.read_threads = min(4, os.cpu_count() or 1) if read_threads is None else int(read_threads)

    def __repr__(self) -> str:
        return (f"TwinStream(split={self.split!r}, mode={self.mode!r}, twins~{self.n_twins}, "
                f"chunks={len(self.chunks)}, shuffle_buffer={self.shuffle_buffer})")

    def label_stats(self) -> LabelStats:
        return store_label_stats(self.store, self.split, self.mode, self.min_visits, self.max_stars,
                                 self.label_cols)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.n_twins // batch_size

    def assign(self, seed: int, epoch: int, world: int = 1) -> list[list[int]]:
        """Chunk ids per rank for one epoch: chunk order permuted by (seed, epoch), each chunk dealt to
        the rank with the fewest twins so far (ties: lowest rank)."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.chunks))
        ranks, load = [[] for _ in range(world)], np.zeros(world, dtype=np.int64)
        for c in order.tolist():
            r = int(np.argmin(load))
            ranks[r].append(c)
            load[r] += self.chunk_twins[c]
        return ranks

    def read(self, c: int) -> dict:
        if self._reader is None:
            self._reader = ChunkReader(self.store, self.mode, self.device)
        chunk = self._reader(self.chunks[c])
        if self.label_cols is not None:
            chunk["labels"] = chunk["labels"][:, list(self.label_cols)]
        return chunk

    def _read_ahead(self, order: list[int]) -> Iterator[dict]:
        """self.read(c) for c in order, in order; with read_threads > 1 the next chunks are read on that
        many threads meanwhile (Zarr decompression and numpy release the GIL; at most 2 x read_threads
        chunks ahead)."""
        from pairspec.ordered import thread_map

        if self.read_threads > 1 and self._reader is None:  # one reader shared by the threads: build it first
            self._reader = ChunkReader(self.store, self.mode, self.device)
        yield from thread_map(self.read, order, self.read_threads)

    def batches(self, seed: int, epoch: int, batch_size: int, n_batches: int | None = None,
                rank: int = 0, world: int = 1) -> Iterator[dict]:
        """This rank's batches (dicts of numpy arrays, KEYS, batch_size // world rows) for one epoch:
        exactly n_batches (default steps_per_epoch(batch_size)), deterministic in (seed, epoch, rank)."""
        per = batch_size // world
        n_batches = self.steps_per_epoch(batch_size) if n_batches is None else n_batches
        cap = max(self.shuffle_buffer, per)
        mine = self.assign(seed, epoch, world)[rank]
        rng = np.random.default_rng([seed, epoch, rank, 1])
        biggest = int(self.chunk_twins[mine].max()) if mine else 0
        buf, done, order = _Buffer(cap + biggest), 0, mine
        while done < n_batches:
            added = 0
            for chunk in self._read_ahead(order):
                buf.add(chunk)
                added += len(chunk["x"])
                self.max_held = max(self.max_held, buf.n)
                while buf.n > cap and done < n_batches:
                    yield buf.take(rng.choice(buf.n, per, replace=False))
                    done += 1
                if done >= n_batches:
                    return
            while buf.n >= per and done < n_batches:  # this pass is over: empty the buffer
                yield buf.take(rng.choice(buf.n, per, replace=False))
                done += 1
            if done < n_batches and added == 0:
                raise ValueError(f"rank {rank}/{world}: no twins to stream in {len(mine)} star chunks "
                                 "(fewer chunks than ranks? lower data.stream_chunk_stars)")
            order = rng.permutation(mine).tolist()  # top-up pass (only when this rank ran short)


def torch_batch(b: dict, stats: LabelStats) -> dict:
    """A streamed numpy batch -> the tensors of data.TwinTorchDataset's items, stacked: labels
    standardised with NaN -> 0, label_mask, snr (0 if unknown)."""
    import torch

    labels = np.asarray(b["labels"], dtype=np.float32)
    mask = np.isfinite(labels)
    z = (labels - np.asarray(stats.mean, np.float32)) / np.asarray(stats.std, np.float32)
    snr = np.nan_to_num(np.asarray(b["snr"], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return {"x": torch.from_numpy(b["x"]), "target": torch.from_numpy(b["target"]),
            "target_w": torch.from_numpy(b["target_w"]),
            "labels": torch.from_numpy(np.where(mask, z, 0.0).astype(np.float32)),
            "label_mask": torch.from_numpy(mask), "snr": torch.from_numpy(snr)}


class _Raised:
    def __init__(self, err: BaseException):
        self.err = err


def prefetch(iterable, depth: int = 2) -> Iterator:
    """The items of `iterable`, produced `depth` ahead in a background thread (reading and normalising
    the next chunk overlaps the training step). Exceptions are re-raised here; closing stops the thread."""
    q, stop, end = queue.Queue(maxsize=depth), threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterable:
                if not put(item):
                    return
            put(end)
        except BaseException as err:  # noqa: BLE001 -- handed to the consumer
            put(_Raised(err))

    thread = threading.Thread(target=work, name="pairspec-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, _Raised):
                raise item.err
            yield item
    finally:
        stop.set()
        thread.join()
