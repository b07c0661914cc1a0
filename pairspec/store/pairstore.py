"""PairStore: a pair store opened for reading or appending (the commit protocol of docs/data-model.md)."""

from __future__ import annotations

import numpy as np

from pairspec.grid import grid_from_dict
from pairspec.schema import LabelSchema
from pairspec.store.layout import (
    STAR_ARRAYS,
    VISIT_ARRAYS,
    ConcurrentWrite,
    MissingArray,
    StarRecord,
    _as_str,
    _count,
    _zarr,
    record_problem,
)
from pairspec.store.rows import _Arrays, _Key, _write_rows, batch_columns


class PairStore:
    """A pair store opened for reading or appending. Readers see committed rows only."""

    def __init__(self, path: str, group, mode: str = "r"):
        self.path, self._g, self.mode = str(path), group, mode
        self._read_attrs(dict(group.attrs))
        for sub in ("stars", "visits"):
            if sub not in group or not hasattr(group[sub], "arrays"):
                raise ValueError(f"{self.path}: the group {sub}/ is missing (a creation or copy cut short)")
        if mode == "a":
            try:
                self._truncate_uncommitted()
            except (KeyError, TypeError, AttributeError, UnicodeDecodeError, RuntimeError) as err:
                raise ValueError(f"{self.path}: cannot repair the store's arrays ({type(err).__name__}: {err})") from None
        self._ids: set[str] | None = None
        self._sources: set[str] | None = None
        self._arrays: _Arrays | None = None  # opened on the first write
        # arrays opened for reading, kept: each open is a metadata read, one round trip on an object store
        # (append mode opens afresh, since a read must then see the lengths the last batch left)
        self._readers: dict | None = {} if mode == "r" else None

    def _array(self, key: str):
        """The array `key` ("stars/id"), opened once in read mode. MissingArray / ValueError naming the store
        when it is absent or its metadata unreadable (zarr's own errors name neither)."""
        arr = None if self._readers is None else self._readers.get(key)
        if arr is None:
            try:
                arr = self._g[key]
            except KeyError:
                raise MissingArray(f"{self.path}: array {key} is missing (a creation, copy or ingest cut "
                                   "short?)") from None
            except (ValueError, TypeError, AttributeError, UnicodeDecodeError, RuntimeError) as err:
                raise ValueError(f"{self.path}: array {key} has unreadable metadata ({type(err).__name__}: "
                                 f"{err})") from None
            if self._readers is not None:
                self._readers[key] = arr
        return arr

    def _read_attrs(self, a: dict) -> None:
        """Root attributes -> fields; a missing or malformed one is a ValueError naming it."""
        key = "?"
        try:
            key = "survey"
            self.survey, self.release = str(a["survey"]), str(a["release"])
            key = "grid"
            self.grid = grid_from_dict(a["grid"])
            with np.errstate(all="ignore"):
                if not (int(self.grid.npix) >= 1 and np.isfinite(self.grid.wavelength()).all()):
                    raise ValueError(f"npix {self.grid.npix} and wavelengths must be finite and positive")
            key = "schema"
            self.schema = LabelSchema.from_dict(a["schema"])
            key = "provenance"
            self.provenance = dict(a.get("provenance", {}))
            key = "chunk"
            self.chunk = _count(a.get("chunk", 256), "chunk", minimum=1)
            key = "n_stars"
            self.n_stars = _count(a["n_stars"], "n_stars")
            key = "n_visits"
            self.n_visits = _count(a["n_visits"], "n_visits")
        except KeyError as err:
            raise ValueError(f"{self.path}: root attribute {err.args[0]!r} is missing") from None
        except (TypeError, ValueError, AttributeError, IndexError) as err:
            raise ValueError(f"{self.path}: root attribute {key!r} is malformed ({err})") from None

    def __repr__(self) -> str:
        return f"PairStore({self.path!r}, {self.survey} {self.release}: {self.n_stars} stars, {self.n_visits} visits)"

    # ---- attributes -------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return dict(self._g.attrs)

    @property
    def sources(self) -> set[str]:
        """The committed sources (unit ids)."""
        if self._sources is None:
            self._sources = set(_as_str(self._array("stars/source")[: self.n_stars]).tolist())
        return self._sources

    @property
    def star_ids(self) -> set[str]:
        """The committed star ids."""
        if self._ids is None:
            self._ids = set(_as_str(self._array("stars/id")[: self.n_stars]).tolist())
        return self._ids

    @property
    def wavelength(self) -> np.ndarray:
        return np.asarray(self._g["wavelength"][:])

    def set_attr(self, key: str, value) -> None:
        """Record a JSON-serialisable root attribute (e.g. the last ingest's report)."""
        self._require_append()
        self._g.attrs[key] = value

    # ---- writing ----------------------------------------------------------------------------
    def _require_append(self):
        if self.mode != "a":
            raise PermissionError(f"{self.path}: store opened read-only; use open_store(path, mode='a')")

    def _truncate_uncommitted(self) -> None:
        for sub, n in (("stars", self.n_stars), ("visits", self.n_visits)):
            for name, arr in self._g[sub].arrays():
                if arr.shape[0] > n:  # leftovers of a batch that never committed
                    arr.resize((n,) + arr.shape[1:])
                elif arr.shape[0] < n:
                    raise ValueError(f"{self.path}: {sub}/{name} has {arr.shape[0]} rows but {n} are committed")

    def duplicate_problem(self, rec) -> str | None:
        """Why `rec` (anything with .star_id and .source) would duplicate a committed star, or None."""
        from pairspec.ingest.rules import Admission

        return Admission.of(self).problem(rec.star_id, rec.source)

    def check_record(self, rec: StarRecord) -> str | None:
        """Why `rec` cannot be appended (None when it can): duplicates, shapes, NaN, negative ivar."""
        return self.duplicate_problem(rec) or record_problem(rec, self.grid.npix, len(self.schema))

    def append(self, records: list[StarRecord], contents_checked: bool = False) -> None:
        """Append one atomic batch. Raises ValueError (naming the star) if any record is refused.

        contents_checked: the caller already ran `record_problem` on every record (the ingest does
        it in its parallel readers); duplicates are always checked here, by the ingest's own rule.
        """
        from pairspec.ingest.rules import Admission

        self._require_append()
        if not records:
            return
        admission = Admission.of(self)  # a new one per batch: the batch's own duplicates
        for rec in records:
            problem = admission.admit(rec.star_id, rec.source)
            if problem is None and not contents_checked:
                problem = record_problem(rec, self.grid.npix, len(self.schema))
            if problem:
                raise ValueError(f"{self.path}: refusing star {rec.star_id} from {rec.source}: {problem}")
        self._assert_unmoved()
        stars, visits = self._columns(records)
        self._write("stars", self.n_stars, stars)
        self._write("visits", self.n_visits, visits)
        self._commit(self.n_stars + len(records), self.n_visits + len(visits["star"]), records)

    def _columns(self, records: list[StarRecord]) -> tuple[dict, dict]:
        return batch_columns(records, self.n_stars, self.n_visits)

    def _write(self, sub: str, start: int, columns: dict, resize: bool = True) -> None:
        """Write `columns` at row `start` of group `sub`; `resize`: set the arrays' length to the end
        of these rows first (False: they were grown by `reserve`, which a shrink would undo)."""
        _write_rows(self._open_arrays(), sub, start, columns, resize)

    def _open_arrays(self) -> _Arrays:
        if self._arrays is None:
            self._arrays = _Arrays(self._g)
        return self._arrays

    def _assert_unmoved(self) -> None:
        """ConcurrentWrite if the stored counts are not the ones this writer last committed or read: another
        writer got in (one that bypassed the ingest's writer lock). Checked before a batch writes a row
        (its rows would overwrite the other's) and again at its commit."""
        now = _fresh_attrs(self._g)
        if (now.get("n_stars"), now.get("n_visits")) != (self.n_stars, self.n_visits):
            raise ConcurrentWrite(
                f"{self.path}: another process committed to this store while this one was writing "
                f"(it now has {now.get('n_stars')} stars and {now.get('n_visits')} visits, this writer expected "
                f"{self.n_stars} and {self.n_visits}); this batch was not committed. Run the ingest again "
                "once the other writer is done: it resumes")

    def _commit(self, n_stars: int, n_visits: int, records) -> None:
        """`records`: what was appended (anything with .star_id and .source). Refuses (ConcurrentWrite)
        when the store's committed counts are no longer the ones this writer last saw: another writer
        committed meanwhile, and this commit would hide its rows (nothing of this batch is committed)."""
        ids, sources = self.star_ids, self.sources  # read before the counts move
        self._assert_unmoved()
        # the commit: ONE write of the root metadata. (zarr's `attrs.update` writes once per key: a kill
        # between the two writes left a store with the new n_stars and the old n_visits, found by
        # tests/test_crash.py failing about once in 25 runs)
        self._g.update_attributes({"n_stars": int(n_stars), "n_visits": int(n_visits)})
        self.n_stars, self.n_visits = n_stars, n_visits
        ids.update(r.star_id for r in records)
        sources.update(r.source for r in records)

    # ---- parallel writers (pairspec.ingest) -------------------------------------------------
    def reserve(self, n_stars: int, n_visits: int, spare_stars: int = 0, spare_visits: int = 0) -> None:
        """Grow every array to at least `n_stars` / `n_visits` rows (never shrinks), so that writer
        processes can fill rows past the committed counts; rows are visible only once committed.
        An array that must grow gets `spare_*` more rows, so that it need not grow every batch
        (`trim` cuts them when the ingest ends)."""
        self._require_append()
        self._assert_unmoved()
        arrays = self._open_arrays()
        for sub, n, spare in (("stars", n_stars, spare_stars), ("visits", n_visits, spare_visits)):
            for key in arrays.keys(sub):
                arr = arrays.get(key)
                if arr.shape[0] < n:
                    arr.resize((n + spare,) + arr.shape[1:])

    def trim(self) -> None:
        """Cut every array to the committed rows (after `reserve` grew them past the last batch)."""
        self._require_append()
        arrays = self._open_arrays()
        for sub, n in (("stars", self.n_stars), ("visits", self.n_visits)):
            for key in arrays.keys(sub):
                arr = arrays.get(key)
                if arr.shape[0] > n:
                    arr.resize((n,) + arr.shape[1:])

    def commit_batch(self, n_stars: int, n_visits: int, keys: list[tuple[str, str]]) -> None:
        """Commit rows the parallel writers put past the committed counts (`write_batch`), in order:
        keys = (star_id, source) of each new star."""
        self._require_append()
        self._commit(n_stars, n_visits, [_Key(star_id, source) for star_id, source in keys])

    # ---- reading ----------------------------------------------------------------------------
    def _column(self, sub: str, name: str, n: int) -> np.ndarray:
        arr = self._array(f"{sub}/{name}")
        try:
            v = arr[:n]
        except (RuntimeError, ValueError, OSError, TypeError) as err:  # a damaged chunk
            raise ValueError(f"{self.path}: {sub}/{name} cannot be read ({type(err).__name__}: {err})") from err
        return _as_str(v) if (STAR_ARRAYS if sub == "stars" else VISIT_ARRAYS)[name][0] is str else np.asarray(v)

    def star_table(self) -> dict[str, np.ndarray]:
        """1-D star columns (no spectra, no labels), committed rows only."""
        return {k: self._column("stars", k, self.n_stars) for k, (_, kind) in STAR_ARRAYS.items() if not kind}

    def visit_table(self) -> dict[str, np.ndarray]:
        return {k: self._column("visits", k, self.n_visits) for k, (_, kind) in VISIT_ARRAYS.items() if not kind}

    def labels(self) -> np.ndarray:
        return self._column("stars", "labels", self.n_stars)

    def label_err(self) -> np.ndarray:
        return self._column("stars", "label_err", self.n_stars)

    def label_flags(self) -> np.ndarray:
        return self._column("stars", "label_flags", self.n_stars)

    def star_spectra(self, idx, pixmask: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(flux, ivar, pixmask) of the survey's combined spectra for a slice or index array; pixmask=False
        skips reading the bitmask (half the bytes: int64) and returns None in its place."""
        return self._spectra("stars", idx, self.n_stars, pixmask)

    def visit_spectra(self, idx, pixmask: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """As star_spectra, for visit rows."""
        return self._spectra("visits", idx, self.n_visits, pixmask)

    def _spectra(self, sub: str, idx, n: int, pixmask: bool = True):
        try:
            return self._read_spectra(sub, idx, n, pixmask)
        except (RuntimeError, ValueError, OSError, KeyError, TypeError) as err:
            # a damaged chunk (bad bytes, a shard index that fails its checksum, a missing file)
            if str(err).startswith(self.path):
                raise
            raise ValueError(f"{self.path}: the {sub} spectra cannot be read ({type(err).__name__}: {err}); "
                             f"`pairspec validate {self.path}` checks the whole store") from err

    def _read_spectra(self, sub: str, idx, n: int, pixmask: bool):
        g = {k: self._array(f"{sub}/{k}") for k in ("flux", "ivar", "pixmask")[: 3 if pixmask else 2]}
        names = ("flux", "ivar", "pixmask") if pixmask else ("flux", "ivar")
        if isinstance(idx, slice):
            sl = slice(*idx.indices(n))
            if sl.step == 1:  # one contiguous read
                return tuple(np.asarray(g[k][sl]) for k in names) + (() if pixmask else (None,))
            idx = np.arange(sl.start, sl.stop, sl.step)  # a stride or a reversed slice: as rows
        idx = self._rows(sub, idx, n)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{self.path}: {sub} index out of range [0, {n})")
        idx = np.where(idx < 0, idx + n, idx)
        # zarr orthogonal indexing needs increasing unique indices; it then reads the covering chunks
        uniq, inverse = np.unique(idx, return_inverse=True)
        return tuple(np.asarray(g[k].get_orthogonal_selection((uniq, slice(None))))[inverse]
                     for k in names) + (() if pixmask else (None,))

    def _rows(self, sub: str, idx, n: int) -> np.ndarray:
        """Row indices from an int, a list or array of ints, or a boolean mask of all n rows (a mask read as
        the indices 0 and 1, and floats were truncated, before)."""
        arr = np.asarray(idx)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise IndexError(f"{self.path}: a boolean mask of {sub} rows needs {n} entries, got shape {arr.shape}")
            return np.flatnonzero(arr)
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"{self.path}: {sub} rows must be integers (or a slice or a boolean mask), "
                            f"got {arr.dtype}")
        return arr.astype(np.int64)

    def to_xarray(self):
        """One xarray Dataset (dims star, visit, pixel, label; coords wavelength, label), lazy.

        Names present in both groups (flux, ivar, pixmask, snr) get a star_ / visit_ prefix, and
        visits/star becomes visit_star (the index of each visit's star).
        """
        import xarray as xr

        parts = {}
        for sub in ("stars", "visits"):
            ds = xr.open_zarr(self._g.store, group=f"{self._g.path}/{sub}".strip("/"), consolidated=False,
                              mask_and_scale=False) if self._lengths_committed() else None
            if ds is None:  # a batch is being (or was) written: build from the committed rows
                n = self.n_stars if sub == "stars" else self.n_visits
                ds = xr.Dataset({k: (a.metadata.dimension_names, np.asarray(a[:n])) for k, a in self._g[sub].arrays()})
            parts[sub] = ds.isel({"star" if sub == "stars" else "visit": slice(0, self.n_stars if sub == "stars" else self.n_visits)})
        common = set(parts["stars"].data_vars) & set(parts["visits"].data_vars)
        stars = parts["stars"].rename({k: f"star_{k}" for k in common})
        # visits/star would clash with the dimension name "star"
        visits = parts["visits"].rename({k: f"visit_{k}" for k in common | {"star"}})
        ds = xr.merge([stars, visits], combine_attrs="drop")
        ds = ds.assign_coords(wavelength=("pixel", self.wavelength), label=("label", self.schema.names))
        ds.attrs.update({k: v for k, v in self._g.attrs.items() if k != "last_ingest"})
        return ds

    def _lengths_committed(self) -> bool:
        return all(a.shape[0] == (self.n_stars if sub == "stars" else self.n_visits)
                   for sub in ("stars", "visits") for _, a in self._g[sub].arrays())

    def validate(self, spectra: bool = True) -> list[str]:
        """Problems with the store (empty list when healthy); see docs/data-model.md invariants and
        pairspec/validate.py. spectra=False skips the scan of every flux and ivar value."""
        from pairspec.validate import store_problems

        return store_problems(self, spectra=spectra)

    def quick_problems(self) -> list[str]:
        """The checks `open_store` runs: array lengths against the committed counts and the visit
        bookkeeping of the committed stars (two 1-D columns read; no spectra)."""
        from pairspec.validate import quick_problems

        return quick_problems(self)


def _fresh_attrs(group) -> dict:
    """The root attributes as stored now (zarr's group object keeps the ones read at open)."""
    zarr = _zarr()
    try:
        return dict(zarr.open_group(store=group.store, path=group.path, mode="r").attrs)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise ValueError(f"cannot re-read the store's attributes before a commit ({err})") from err
