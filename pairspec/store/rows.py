"""Rows of records -> store columns, and the writer side of parallel and Dask ingests (write_batch)."""

from __future__ import annotations

import json

import numpy as np

from pairspec.chunk_io import ChunkLocks, lock_path, whole_chunks, write_array
from pairspec.store.layout import (
    _META_COLUMNS,
    STAR_ARRAYS,
    VISIT_ARRAYS,
    _zarr,
    split_of,
)
from pairspec.surveys.base import StarRecord


class _Key:
    __slots__ = ("source", "star_id")

    def __init__(self, star_id: str, source: str):
        self.star_id, self.source = star_id, source


class _Rows:
    """Rows of the per-record spectra arrays, joined only a chunk at a time when written (`__array__`
    of a slice): a batch's spectra are never copied into one big array. Slicing gives a _Rows."""

    def __init__(self, pieces: list[np.ndarray], ends: np.ndarray | None = None, lo: int = 0,
                 hi: int | None = None):
        self.pieces = pieces
        self.ends = np.cumsum([len(p) for p in pieces]) if ends is None else ends  # row after each piece
        self.lo, self.hi = lo, (int(self.ends[-1]) if len(pieces) else 0) if hi is None else hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, sl: slice) -> _Rows:
        a, b, step = sl.indices(len(self))
        if step != 1:
            raise IndexError("_Rows take contiguous slices only")
        return _Rows(self.pieces, self.ends, self.lo + a, self.lo + max(a, b))

    def __array__(self, dtype=None, copy=None):
        i = int(np.searchsorted(self.ends, self.lo, side="right"))  # the piece holding row lo
        parts, pos = [], self.lo
        while pos < self.hi:
            start = int(self.ends[i - 1]) if i else 0
            parts.append(self.pieces[i][pos - start:min(int(self.ends[i]), self.hi) - start])
            pos, i = int(self.ends[i]), i + 1
        if not parts:
            parts = [self.pieces[0][:0]] if self.pieces else [np.empty(0)]
        out = np.concatenate(parts) if len(parts) > 1 else (np.array(parts[0]) if copy else parts[0])
        return out if dtype is None else out.astype(dtype, copy=False)


def batch_columns(records: list[StarRecord], star_start: int, visit_start: int,
                  lazy: bool = False) -> tuple[dict, dict]:
    """The stars/ and visits/ columns of `records` stored from rows star_start / visit_start.
    lazy: spectra as `_Rows` (joined a chunk at a time when written) rather than arrays."""
    nv = np.array([r.n_visits for r in records], dtype=np.int64)
    first = visit_start + np.concatenate([[0], np.cumsum(nv)[:-1]])
    meta = [dict(r.meta or {}) for r in records]
    rest = [{k: v for k, v in m.items() if k not in _META_COLUMNS} for m in meta]
    stars = {
        "id": [r.star_id for r in records], "source": [r.source for r in records],
        "split": np.array([split_of(r.star_id) for r in records], dtype=np.int8),
        "snr": np.array([r.snr for r in records], dtype=np.float32),
        "n_visits": nv, "first_visit": first.astype(np.int64),
        "ra": np.array([_float(m.get("ra")) for m in meta]),
        "dec": np.array([_float(m.get("dec")) for m in meta]),
        "star_flags": np.array([int(r.star_flags) for r in records], dtype=np.int64),
        "telescope": [str(m.get("telescope", "") or "").strip() for m in meta],
        "field": [str(m.get("field", "") or "").strip() for m in meta],
        "meta_json": [json.dumps(m, sort_keys=True, default=_jsonable) for m in rest],
        "labels": np.stack([r.labels for r in records]), "label_err": np.stack([r.label_err for r in records]),
        "label_flags": np.stack([r.label_flags for r in records]),
    }
    cat = np.concatenate
    for name, field in (("flux", "coadd_flux"), ("ivar", "coadd_ivar"), ("pixmask", "coadd_pixmask")):
        rows = [getattr(r, field) for r in records]
        stars[name] = _Rows([row[None] for row in rows]) if lazy else np.stack(rows)
    visits = {
        "star": np.repeat(np.arange(star_start, star_start + len(records), dtype=np.int64), nv),
        "visit_id": [str(v) for r in records for v in r.visit_id],
        "mjd": cat([r.visit_mjd for r in records]), "snr": cat([r.visit_snr for r in records]),
        "snr_survey": cat([r.visit_snr_survey for r in records]), "fiber": cat([r.visit_fiber for r in records]),
    }
    for name, field in (("flux", "visit_flux"), ("ivar", "visit_ivar"), ("pixmask", "visit_pixmask")):
        blocks = [getattr(r, field) for r in records]
        visits[name] = _Rows(blocks) if lazy else cat(blocks)
    return stars, visits


def _n_rows(columns: dict) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _slice_rows(columns: dict, a: int, b: int) -> dict:
    return {k: v[a:b] for k, v in columns.items()}


class _Arrays:
    """The arrays of a store group, opened once; one is opened again only when a write needs more
    rows than its cached shape (the ingest coordinator grows them from another process)."""

    def __init__(self, group):
        self.group, self.cache, self._keys = group, {}, {}

    def keys(self, sub: str) -> list[str]:
        if sub not in self._keys:
            self._keys[sub] = [f"{sub}/{name}" for name, _ in self.group[sub].arrays()]
        return self._keys[sub]

    def get(self, key: str, rows: int = 0):
        arr = self.cache.get(key)
        if arr is None or arr.shape[0] < rows:
            # write_empty_chunks: skip zarr's per-chunk "all fill value?" test (a quarter of the
            # write cost of a spectrum); an all-zero inner chunk is then stored, as any reader expects
            arr = self.cache[key] = self.group[key].with_config({"write_empty_chunks": True})
        return arr


def _write_rows(arrays: _Arrays, sub: str, start: int, columns: dict, resize: bool) -> None:
    specs = STAR_ARRAYS if sub == "stars" else VISIT_ARRAYS
    for name, values in columns.items():
        dtype = specs[name][0]
        if not isinstance(values, _Rows):  # _Rows are joined (and cast) a chunk at a time
            values = np.array(values, dtype=object) if dtype is str else np.asarray(values, dtype=dtype)
        end = start + len(values)
        arr = arrays.get(f"{sub}/{name}", 0 if resize else end)
        if resize:
            arr.resize((end,) + arr.shape[1:])
        elif arr.shape[0] < end:
            raise ValueError(f"{sub}/{name}: rows {start}:{end} past the reserved length {arr.shape[0]}")
        write_array(arr, start, values)


_WRITER: dict[tuple, tuple] = {}  # a writer process's open arrays and locks, by (store path, ingest token)


def write_batch(path: str, records: list[StarRecord], star_start: int, visit_start: int, chunk: int,
                locks=None, token: str = "") -> None:
    """Writer side of a parallel or Dask ingest: write `records` at rows star_start / visit_start of
    the store at `path` (local or URL), whose arrays `PairStore.reserve` has grown past them. Whole
    chunks (shards) belong to this batch alone; the rows before the first and after the last chunk
    boundary share a chunk with a neighbouring batch, which another process may be writing, so
    that chunk is read, merged and rewritten under its lock: `locks` (anything with `hold(sub,
    chunk_index)`; default the POSIX `ChunkLocks` of a local store). Nothing is committed. `token`
    names the ingest, so that a long-lived worker never reuses arrays opened for an earlier one."""
    key = (path, token)
    if key not in _WRITER:
        _WRITER.clear()  # one ingest at a time per worker: drop the arrays of the last one
        _WRITER[key] = (_Arrays(_zarr().open_group(path, mode="r+")),
                        locks if locks is not None else ChunkLocks(lock_path(path)))
    arrays, locks = _WRITER[key]
    for sub, start, cols in zip(("stars", "visits"), (star_start, visit_start),
                                batch_columns(records, star_start, visit_start, lazy=True)):
        n = _n_rows(cols)
        h, t = whole_chunks(start, n, chunk)
        if t > h:
            _write_rows(arrays, sub, start + h, _slice_rows(cols, h, t), resize=False)
        for a, b in ((0, h), (t, n)):
            if b > a:
                with locks.hold(sub, (start + a) // chunk):
                    _write_rows(arrays, sub, start + a, _slice_rows(cols, a, b), resize=False)


def _float(v) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
