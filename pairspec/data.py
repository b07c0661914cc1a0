"""Training data: network inputs from spectra, and twins (input visit, high-S/N target, labels) from a store.

Inputs and targets live on the model pixels (the grid's usable blocks, e.g. 7514 px of three detector chips) and are
continuum-normalised per spectrum with `pairspec.preprocess.normalize`, the same call at training and
at inference. Targets are normalised flux (continuum ~ 1); the model predicts target - 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pairspec.pairs import leave_one_out, select_twins
from pairspec.preprocess import (
    inputs_from_normalized,
    model_pixels,
    normalize,
    target_from_normalized,
)

MODES = ("loo", "coadd", "direct")
SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class LabelStats:
    """Per-label standardisation (mean, std) and the training label range (lo, hi), float32 (K,)."""

    mean: np.ndarray
    std: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def to_dict(self) -> dict:
        # None for NaN (a label never measured) keeps the dict strict-JSON clean.
        conv = lambda a: [None if not np.isfinite(v) else float(v) for v in np.asarray(a)]
        return {"mean": conv(self.mean), "std": conv(self.std), "lo": conv(self.lo), "hi": conv(self.hi)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelStats:
        conv = lambda a: np.array([np.nan if v is None else v for v in a], dtype=np.float32)
        return cls(conv(d["mean"]), conv(d["std"]), conv(d["lo"]), conv(d["hi"]))


def compute_label_stats(labels: np.ndarray, std_floor: float = 1e-3) -> LabelStats:
    """NaN-aware stats of (N, K) labels. A label with no finite value gets mean 0, std 1, lo = hi = NaN."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, K), got {labels.shape}")
    k = labels.shape[1]
    mean, std = np.zeros(k), np.ones(k)
    lo, hi = np.full(k, np.nan), np.full(k, np.nan)
    for j in range(k):
        v = labels[:, j][np.isfinite(labels[:, j])]
        if v.size:
            mean[j], lo[j], hi[j] = v.mean(), v.min(), v.max()
            std[j] = max(v.std(), std_floor) if v.size > 1 else 1.0
    f4 = lambda a: a.astype(np.float32)
    return LabelStats(f4(mean), f4(std), f4(lo), f4(hi))


def _rows(store, idx: np.ndarray, reader) -> tuple[np.ndarray, np.ndarray]:
    """(flux, ivar) rows of a store array; a contiguous index run is read as one slice."""
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        flux, ivar, _ = reader(slice(int(idx[0]), int(idx[0]) + idx.size), pixmask=False)
    else:
        flux, ivar, _ = reader(idx, pixmask=False)
    return flux, ivar


def table_columns(store, sub: str, names) -> dict[str, np.ndarray]:
    """Some numeric 1-D columns of the "stars" or "visits" table (committed rows), without loading the
    string columns (ids, meta_json) that star_table()/visit_table() also convert."""
    n = store.n_stars if sub == "stars" else store.n_visits
    return {k: store._column(sub, k, n) for k in names}


def select_stars(store, split: str, mode: str, min_visits: int = 2, max_stars: int | None = None) -> np.ndarray:
    """Star indices (increasing) of one split usable in `mode`: loo needs >= max(min_visits, 2) visits,
    coadd >= min_visits, direct any star. `max_stars` keeps that many, ranked by a hash of the star id
    (deterministic, nested: a larger cap keeps every star of a smaller one, and unbiased: store order
    follows the survey's fields, so "the first N" would be a few fields' populations)."""
    if mode not in MODES:
        raise ValueError(f"unknown twin mode {mode!r}; choose from {MODES}")
    if split != "all" and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS) + ['all']}")
    stars = table_columns(store, "stars", ("split", "n_visits"))
    keep = np.ones(len(stars["n_visits"]), dtype=bool)
    if split != "all":
        keep &= np.asarray(stars["split"]) == SPLITS[split]
    if mode == "loo":
        keep &= select_twins(stars["n_visits"], min_visits=max(min_visits, 2))
    elif mode == "coadd":
        keep &= np.asarray(stars["n_visits"]) >= max(min_visits, 1)
    idx = np.flatnonzero(keep)
    if max_stars is None or idx.size <= max_stars:
        return idx
    import zlib

    ids = store._column("stars", "id", store.n_stars)[idx]
    rank = np.argsort([zlib.crc32(str(s).encode()) for s in ids], kind="stable")
    return np.sort(idx[rank[: int(max_stars)]])


def normalizer(device=None):
    """pairspec.preprocess.normalize with numpy in and out, run on `device` when it is given (the torch
    backend, float64 there too, so the same numbers to float32 rounding: tests/test_preprocess.py). numpy does
    ~300 spectra/s per core; a GPU takes the continuum off the data-loading path. (device "cpu" runs the
    torch backend on the CPU: for tests; numpy is faster there.)"""
    if device is None:
        return normalize

    def on_device(flux, ivar, grid):
        import torch

        f = torch.from_numpy(np.ascontiguousarray(flux)).to(device)
        iv = torch.from_numpy(np.ascontiguousarray(ivar)).to(device)
        return tuple(t.cpu().numpy() for t in normalize(f, iv, grid))

    return on_device


class ChunkReader:
    """Reads the twins of given stars (one chunk) from a store, with the star/visit tables and labels
    loaded once. Call with star indices (increasing): a dict with the TwinData arrays (x, target,
    target_w, labels, snr, star_index, visit_index). Rows whose input has no good model pixel are
    dropped. Visits of a star are contiguous in the store. `device`: run the continuum normalisation
    there (see normalizer); None = numpy on the CPU."""

    def __init__(self, store, mode: str = "loo", device=None):
        if mode not in MODES:
            raise ValueError(f"unknown twin mode {mode!r}; choose from {MODES}")
        self.store, self.mode = store, mode
        self.normalize = normalizer(device)
        self.grid, self.pix = store.grid, model_pixels(store.grid)
        self.stars = table_columns(store, "stars", ("snr", "n_visits", "first_visit"))
        self.visits = table_columns(store, "visits", ("snr",)) if mode != "direct" else None
        self.labels = np.asarray(store.labels(), dtype=np.float32)

    def __call__(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        store, mode, grid, pix, stars = self.store, self.mode, self.grid, self.pix, self.stars
        chunk = np.asarray(chunk, dtype=np.int64)
        sf, si = _rows(store, chunk, store.star_spectra) if mode != "loo" else (None, None)
        if sf is not None:
            nf, ni, _ = self.normalize(sf, si, grid)
            star_target = target_from_normalized(nf[:, pix], ni[:, pix])
        if mode == "direct":
            x = inputs_from_normalized(nf[:, pix], ni[:, pix])
            target, target_w = star_target
            star_index, visit_index = chunk, np.full(chunk.size, -1, dtype=np.int64)
            snr = np.asarray(stars["snr"], dtype=np.float32)[chunk]
        else:
            first = np.asarray(stars["first_visit"])[chunk]
            count = np.asarray(stars["n_visits"])[chunk]
            visit_index = np.concatenate([np.arange(a, a + c) for a, c in zip(first, count)]).astype(np.int64)
            star_index = np.repeat(chunk, count).astype(np.int64)
            vf, vi = _rows(store, visit_index, store.visit_spectra)
            nf, ni, _ = self.normalize(vf, vi, grid)
            nf, ni = nf[:, pix], ni[:, pix]
            x = inputs_from_normalized(nf, ni)
            if mode == "loo":
                loo_f, loo_i = np.empty_like(nf), np.empty_like(ni)
                bounds = np.concatenate([[0], np.cumsum(count)])
                for a, b in zip(bounds[:-1], bounds[1:]):
                    loo_f[a:b], loo_i[a:b] = leave_one_out(nf[a:b], ni[a:b])
                target, target_w = target_from_normalized(loo_f, loo_i)
            else:
                target = np.repeat(star_target[0], count, axis=0)
                target_w = np.repeat(star_target[1], count, axis=0)
            snr = np.asarray(self.visits["snr"], dtype=np.float32)[visit_index]
        informative = (x[:, 1] > 0).any(axis=1)
        return {
            "x": x[informative], "target": target[informative], "target_w": target_w[informative],
            "labels": self.labels[star_index[informative]], "snr": snr[informative],
            "star_index": star_index[informative], "visit_index": visit_index[informative],
        }


def iter_chunks(store, split: str = "train", mode: str = "loo", min_visits: int = 2,
                max_stars: int | None = None, chunk_stars: int = 256,
                stars: np.ndarray | None = None, device=None, threads: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Stream twins chunk by chunk of `chunk_stars` stars (memory bounded per chunk). Each chunk is a dict
    with the TwinData arrays (x, target, target_w, labels, snr, star_index, visit_index); see
    ChunkReader. `stars` (increasing star indices) replaces the selection by split/min_visits/max_stars;
    `device`: where the continuum normalisation runs (ChunkReader); `threads` > 1 reads that many chunks
    at once (Zarr decompression and the numpy maths release the GIL), still yielding them in order, with
    at most 2 x threads chunks in memory."""
    selected = (select_stars(store, split, mode, min_visits, max_stars) if stars is None
                else np.asarray(stars, dtype=np.int64))
    from pairspec.ordered import thread_map

    parts = [selected[start:start + chunk_stars] for start in range(0, selected.size, chunk_stars)]
    yield from thread_map(ChunkReader(store, mode, device), parts, threads)


class TwinData:
    """All twins of one split in memory (float32): x (M, 2, L), target (M, L), target_w (M, L),
    labels (M, K) raw physical units (NaN missing), label_err (M, K) the survey's errors of those labels,
    snr (M,), star_index (M,), visit_index (M,) (-1 in direct mode).

    Modes: "loo" (TSN default) every visit of a star with >= 2 visits, target = leave-one-out coadd of
    its other normalised visits; "coadd" every visit, target = the survey's combined spectrum (ablation;
    with the recipe default min_visits = 2 it covers the same stars as loo); "direct" input = target =
    the combined spectrum (astroNN-style baseline).

    In memory is the current design: loading streams star chunks (iter_chunks), but the result is held
    whole, ~ 3 x 4 x L bytes per twin (90 kB for L = 7514 px; 10^4 visits ~ 1 GB). `max_stars` caps it;
    `stars` (increasing star indices) replaces the selection; `device` (a CUDA device) normalises the
    continua there (ChunkReader); `threads` chunks are read at once (default: cores, at most 8). For training on a whole survey, stream instead (recipe data.stream,
    pairspec.stream.TwinStream).
    """

    def __init__(self, store, split: str = "train", mode: str = "loo", min_visits: int = 2,
                 max_stars: int | None = None, chunk_stars: int = 256, stars: np.ndarray | None = None,
                 device=None, threads: int | None = None):
        self.split, self.mode = split, mode
        self.grid, self.schema = store.grid, store.schema
        self.model_pixels = model_pixels(store.grid)
        threads = min(8, os.cpu_count() or 1) if threads is None else int(threads)
        chunks = list(iter_chunks(store, split, mode, min_visits, max_stars, chunk_stars, stars, device, threads))
        n_pix, n_lab = self.model_pixels.size, len(store.schema)
        empty = {"x": np.zeros((0, 2, n_pix), np.float32), "target": np.zeros((0, n_pix), np.float32),
                 "target_w": np.zeros((0, n_pix), np.float32), "labels": np.zeros((0, n_lab), np.float32),
                 "snr": np.zeros(0, np.float32), "star_index": np.zeros(0, np.int64),
                 "visit_index": np.zeros(0, np.int64)}
        for name, default in empty.items():
            setattr(self, name, np.concatenate([c[name] for c in chunks]) if chunks else default)
        # the survey's own errors of each twin's labels (NaN = unknown): the sigma calibration takes them out
        self.label_err = np.asarray(store.label_err(), dtype=np.float32)[self.star_index]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return f"TwinData(split={self.split!r}, mode={self.mode!r}, twins={len(self)}, pixels={self.x.shape[-1]})"


class _TwinTorchDataset:
    """torch Dataset over TwinData: items dict(x (2, L), target (L,), target_w (L,), labels (K,)
    standardised with NaN -> 0, label_mask (K,) bool, snr () (0 if unknown)). `augment` is reserved
    and does nothing yet. Reach it as `pairspec.data.TwinTorchDataset` (a torch Dataset subclass)."""

    def __init__(self, twins: TwinData, stats: LabelStats, augment: bool = False):
        self.twins, self.stats, self.augment = twins, stats, augment
        labels = np.asarray(twins.labels, dtype=np.float32)
        self.label_mask = np.isfinite(labels)
        z = (labels - np.asarray(stats.mean, np.float32)) / np.asarray(stats.std, np.float32)
        self.labels = np.where(self.label_mask, z, 0.0).astype(np.float32)
        self.snr = np.nan_to_num(np.asarray(twins.snr, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    def __len__(self) -> int:
        return len(self.twins)

    def __getitem__(self, i: int) -> dict:
        import torch

        t = self.twins
        return {
            "x": torch.from_numpy(np.ascontiguousarray(t.x[i])),
            "target": torch.from_numpy(np.ascontiguousarray(t.target[i])),
            "target_w": torch.from_numpy(np.ascontiguousarray(t.target_w[i])),
            "labels": torch.from_numpy(self.labels[i]),
            "label_mask": torch.from_numpy(self.label_mask[i]),
            "snr": torch.tensor(self.snr[i], dtype=torch.float32),
        }

    def batch(self, indices) -> dict:
        """The items at `indices`, stacked (what default collation of __getitem__ items gives), by one
        fancy index per array instead of one Python call per item."""
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        t = self.twins
        return {"x": torch.from_numpy(t.x[idx]), "target": torch.from_numpy(t.target[idx]),
                "target_w": torch.from_numpy(t.target_w[idx]), "labels": torch.from_numpy(self.labels[idx]),
                "label_mask": torch.from_numpy(self.label_mask[idx]), "snr": torch.from_numpy(self.snr[idx])}


class _TwinBatches:
    """torch Dataset whose items are whole batches: dataset[indices] = twin_dataset.batch(indices). Use it
    with DataLoader(batch_size=None, sampler=<lists of indices>): no per-item calls, no collation. On a GPU,
    per-item loading capped training at ~900 samples/s with 6 workers (tsn_base steps ran at ~3100/s;
    benchmarks/results/gpu_h100.json). Reach it as `pairspec.data.TwinBatches`."""

    def __init__(self, dataset: _TwinTorchDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices) -> dict:
        return self.dataset.batch(indices)


def __getattr__(name: str):
    # TwinTorchDataset / TwinBatches subclass torch's Dataset, built on first use so importing this
    # module skips torch.
    bases = {"TwinTorchDataset": _TwinTorchDataset, "TwinBatches": _TwinBatches}
    if name in bases:
        import torch

        cls = type(name, (bases[name], torch.utils.data.Dataset), {"__module__": __name__})
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
