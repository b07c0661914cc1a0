"""The pair store: one Zarr v3 group per survey release (docs/data-model.md). The only Zarr writer
(chunk_io.py encodes the chunks it writes).

Appends are atomic batches: array data is written past the committed length first, then the root
attributes n_stars/n_visits are updated (the commit). Opening for append truncates leftovers of an
interrupted batch, so a rerun gives exactly the store an uninterrupted run would have given.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import datetime, timezone

import numpy as np

from pairspec.chunk_io import ChunkLocks, lock_path, whole_chunks, write_array
from pairspec.grid import LogLinearGrid
from pairspec.schema import LabelSchema
from pairspec.surveys.base import StarRecord

STORE_VERSION = 1
SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}
_INNER = 16  # rows per inner chunk of a spectra shard: one random visit = one small read

# name -> (dtype, per-row shape kind) ; kind: "" scalar, "pixel", "label"
STAR_ARRAYS = {
    "id": (str, ""), "source": (str, ""), "split": ("i1", ""), "snr": ("f4", ""),
    "n_visits": ("i8", ""), "first_visit": ("i8", ""), "ra": ("f8", ""), "dec": ("f8", ""),
    "star_flags": ("i8", ""), "telescope": (str, ""), "field": (str, ""), "meta_json": (str, ""),
    "labels": ("f4", "label"), "label_err": ("f4", "label"), "label_flags": ("i8", "label"),
    "flux": ("f4", "pixel"), "ivar": ("f4", "pixel"), "pixmask": ("i8", "pixel"),
}
VISIT_ARRAYS = {
    "star": ("i8", ""), "visit_id": (str, ""), "mjd": ("f8", ""), "snr": ("f4", ""),
    "snr_survey": ("f4", ""), "fiber": ("i4", ""),
    "flux": ("f4", "pixel"), "ivar": ("f4", "pixel"), "pixmask": ("i8", "pixel"),
}
_META_COLUMNS = ("ra", "dec", "telescope", "field")


def split_of(star_id: str) -> int:
    """0 train / 1 val / 2 test (80/10/10) from a stable hash of the star id (never Python hash())."""
    h = int.from_bytes(hashlib.blake2b(star_id.encode("utf-8"), digest_size=8).digest(), "big") % 100
    return 0 if h < 80 else (1 if h < 90 else 2)


def _zarr():
    import zarr

    # Variable-length strings have no ratified v3 spec yet; zarr warns on every string array.
    warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
    return zarr


def _create(group, name, dtype, shape, chunk, dims):
    """A growable array: 1-D chunked by `chunk` rows, spectra sharded by `chunk` x all pixels."""
    if len(shape) == 2 and shape[1] > 64:
        inner = _INNER if chunk % _INNER == 0 else chunk
        from zarr.codecs import BloscCodec

        # blosc-lz4 with byte shuffle: ~1.5x faster to write than the zstd default and no larger on
        # noisy float32 spectra (measured), which matters because ingest has a single writer
        return group.create_array(name, shape=shape, dtype=dtype, chunks=(inner, shape[1]),
                                  shards=(chunk, shape[1]), dimension_names=dims,
                                  compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")])
    chunks = (chunk,) + tuple(shape[1:])
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, dimension_names=dims)


def create_store(path: str, survey: str, release: str, grid: LogLinearGrid, schema: LabelSchema,
                 provenance: dict | None = None, chunk: int = 256) -> "PairStore":
    """Create an empty store at `path` (local or fsspec URL). Refuses to overwrite anything but an
    unfinished pair store (a Zarr group without the version marker): ValueError naming the path."""
    zarr = _zarr()
    try:
        existing = zarr.open_group(path, mode="r")
    except FileNotFoundError:  # also zarr's GroupNotFoundError: nothing there yet
        existing = None
    if existing is not None and "pairspec_store_version" in existing.attrs:
        raise ValueError(f"{path}: a pair store already exists here; open it with open_store(mode='a')")
    if existing is not None and not existing.attrs.get("pairspec_creating"):
        raise ValueError(f"{path}: a Zarr group that is not a pair store is here; refusing to overwrite")
    if existing is None and _occupied(path):
        raise ValueError(f"{path}: exists and is not a Zarr group; refusing to overwrite it with a pair store")
    g = zarr.open_group(path, mode="w")
    g.attrs["pairspec_creating"] = True  # lets a rerun overwrite a store whose creation was cut off
    dims = {"": (), "pixel": (grid.npix,), "label": (len(schema),)}
    names = {"": (), "pixel": ("pixel",), "label": ("label",)}
    for sub, specs, dim in (("stars", STAR_ARRAYS, "star"), ("visits", VISIT_ARRAYS, "visit")):
        sg = g.create_group(sub)
        for name, (dtype, kind) in specs.items():
            _create(sg, name, dtype, (0,) + dims[kind], chunk, (dim,) + names[kind])
    wave = g.create_array("wavelength", shape=(grid.npix,), dtype="f8", chunks=(grid.npix,),
                          dimension_names=("pixel",), attributes={"units": "Angstrom"})
    wave[:] = grid.wavelength()
    lab = g.create_array("label", shape=(len(schema),), dtype=str, chunks=(max(1, len(schema)),),
                         dimension_names=("label",), attributes={"units": schema.units})
    lab[:] = np.array(schema.names, dtype=object)
    from pairspec import __version__

    prov = {"pairspec": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    prov.update(provenance or {})
    attrs = {"survey": survey, "release": release, "grid": grid.to_dict(), "schema": schema.to_dict(),
             "provenance": prov, "chunk": int(chunk), "n_stars": 0, "n_visits": 0, "last_ingest": {},
             "pairspec_creating": False}
    g.attrs.update(attrs)
    g.attrs["pairspec_store_version"] = STORE_VERSION  # the marker, written after everything else
    return PairStore(path, g, mode="a")


def open_store(path: str, mode: str = "r", check: bool = True) -> "PairStore":
    """Open a pair store (a local folder or any fsspec URL: memory://, s3://, ...); mode "r" (read) or
    "a" (append; repairs an interrupted batch). Object-store endpoints and credentials come from
    fsspec's configuration (e.g. FSSPEC_S3_ENDPOINT_URL, AWS_* variables), which worker processes
    inherit.

    check: refuse a store whose committed rows are inconsistent (arrays shorter than the committed
    counts, visits not owned by exactly one star: what two unlocked writers leave), so that training
    or an append never starts from one; `pairspec validate` opens with check=False to list problems.
    Every refusal is a FileNotFoundError or ValueError naming the path."""
    if mode not in ("r", "a", "r+"):
        raise ValueError(f"{path}: mode must be 'r' or 'a', not {mode!r}")
    g = _open_group(str(path), "r" if mode == "r" else "r+")
    attrs = g.attrs
    if "pairspec_store_version" not in attrs:
        raise ValueError(f"{path}: not a pairspec store (Zarr group without 'pairspec_store_version'; "
                         "an unfinished creation or some other data)")
    version = attrs["pairspec_store_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: pairspec_store_version is {version!r}, not a store version (1)")
    if version > STORE_VERSION:
        raise ValueError(f"{path}: store version {version} is newer than this pairspec reads ({STORE_VERSION}); "
                         "upgrade pairspec")
    store = PairStore(path, g, mode="r" if mode == "r" else "a")
    if check:
        problems = store.quick_problems()
        if problems:
            raise ValueError(f"{path}: the store is inconsistent ({'; '.join(problems[:3])}); "
                             f"`pairspec validate {path}` lists every problem")
    return store


def _open_group(path: str, mode: str):
    """zarr.open_group with errors that name the path: FileNotFoundError when nothing (or a plain file) is
    there, ValueError when what is there is not readable Zarr metadata."""
    zarr = _zarr()
    try:
        return zarr.open_group(path, mode=mode)
    except (FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        if _is_file(path):  # (mode r+ on a file: zarr tries to make the folder, FileExistsError)
            raise FileNotFoundError(f"{path}: is a file, not a pairspec store (a store is a folder or URL "
                                    "holding a Zarr group)") from None
        raise FileNotFoundError(f"{path}: not a pairspec store (no Zarr group there: {err})") from None
    except (IsADirectoryError, PermissionError) as err:
        raise FileNotFoundError(f"{path}: cannot be opened as a pair store ({type(err).__name__}: {err})") from None
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: Zarr metadata there is not readable ({type(err).__name__}: {err})") from None


def _is_file(path: str) -> bool:
    import fsspec

    try:
        fs, p = fsspec.core.url_to_fs(path)
        return fs.isfile(p)
    except (OSError, ValueError, ImportError):
        return False


def _as_str(a) -> np.ndarray:
    # zarr returns numpy's variable-width StringDType; fixed-width "U" is what catalogue writers expect
    return np.array(np.asarray(a).tolist(), dtype=str)


def record_problem(rec: StarRecord, npix: int, n_labels: int) -> str | None:
    """What is wrong with a record's contents for a store of `npix` pixels and `n_labels` labels
    (None when nothing): shapes, NaN/inf in flux or ivar, negative ivar, no visits."""
    nv = rec.n_visits
    if nv < 1:
        return "no visits"
    shapes = {"coadd_flux": (npix,), "coadd_ivar": (npix,), "coadd_pixmask": (npix,),
              "visit_flux": (nv, npix), "visit_ivar": (nv, npix), "visit_pixmask": (nv, npix),
              "labels": (n_labels,), "label_err": (n_labels,), "label_flags": (n_labels,), "visit_snr": (nv,),
              "visit_snr_survey": (nv,), "visit_mjd": (nv,), "visit_fiber": (nv,)}
    for name, shape in shapes.items():
        if np.shape(getattr(rec, name)) != shape:
            return f"{name} has shape {np.shape(getattr(rec, name))}, expected {shape}"
    if len(rec.visit_id) != nv:
        return f"{len(rec.visit_id)} visit ids for {nv} visits"
    for name in ("coadd_flux", "coadd_ivar", "visit_flux", "visit_ivar"):
        if not np.isfinite(getattr(rec, name)).all():
            return f"{name} has NaN or inf (bad pixels must be ivar = 0 with finite flux)"
    if (rec.coadd_ivar < 0).any() or (rec.visit_ivar < 0).any():
        return "negative ivar"
    return None


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
            self.grid = LogLinearGrid.from_dict(a["grid"])
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

    def _open_arrays(self) -> "_Arrays":
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
        self._g.attrs.update({"n_stars": int(n_stars), "n_visits": int(n_visits)})  # one write: the commit
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
            return tuple(np.asarray(g[k][sl]) for k in names) + (() if pixmask else (None,))
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{self.path}: {sub} index out of range [0, {n})")
        idx = np.where(idx < 0, idx + n, idx)
        # zarr orthogonal indexing needs increasing unique indices; it then reads the covering chunks
        uniq, inverse = np.unique(idx, return_inverse=True)
        return tuple(np.asarray(g[k].get_orthogonal_selection((uniq, slice(None))))[inverse]
                     for k in names) + (() if pixmask else (None,))

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


class _Key:
    __slots__ = ("star_id", "source")

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

    def __getitem__(self, sl: slice) -> "_Rows":
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


def create_spectra_store(path: str, grid: LogLinearGrid, n_pix: int, attrs: dict | None = None,
                         chunk: int = 256) -> "SpectraWriter":
    """A Zarr store of (denoised) spectra: id (spectrum), flux (spectrum, pixel), extra columns."""
    if n_pix != grid.npix:
        raise ValueError(f"{path}: n_pix {n_pix} does not match the grid's {grid.npix} pixels")
    g = _zarr().open_group(path, mode="w")
    wave = g.create_array("wavelength", shape=(n_pix,), dtype="f8", chunks=(n_pix,), dimension_names=("pixel",))
    wave[:] = grid.wavelength()
    _create(g, "id", str, (0,), chunk, ("spectrum",))
    _create(g, "flux", "f4", (0, n_pix), chunk, ("spectrum", "pixel"))
    g.attrs.update({"grid": grid.to_dict(), "n": 0, "chunk": chunk, **(attrs or {})})
    g.attrs["pairspec_spectra_version"] = 1
    return SpectraWriter(path, g)


class SpectraWriter:
    def __init__(self, path: str, group):
        self.path, self._g, self.n = path, group, int(group.attrs["n"])

    def append(self, ids: list[str], flux: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> None:
        flux = np.asarray(flux, dtype=np.float32)
        if flux.shape != (len(ids), self._g["flux"].shape[1]):
            raise ValueError(f"{self.path}: flux shape {flux.shape} for {len(ids)} ids")
        columns = {"id": np.array([str(i) for i in ids], dtype=object), "flux": flux}
        for name, v in (extra or {}).items():
            v = np.asarray(v)
            if v.shape != (len(ids),):
                raise ValueError(f"{self.path}: extra column {name} has shape {v.shape}, expected ({len(ids)},)")
            if name not in self._g:
                if self.n:
                    raise ValueError(f"{self.path}: extra column {name} appeared after {self.n} rows")
                dtype = str if v.dtype.kind in "OUS" else v.dtype
                _create(self._g, name, dtype, (0,), int(self._g.attrs["chunk"]), ("spectrum",))
            columns[name] = np.array(v, dtype=object) if v.dtype.kind in "OUS" else v
        end = self.n + len(ids)
        for name, v in columns.items():
            arr = self._g[name]
            arr.resize((end,) + arr.shape[1:])
            arr[self.n:end] = v
        self._g.attrs["n"] = end  # commit after the data, as in the pair store
        self.n = end

    def close(self) -> None:
        """Nothing is buffered (every append commits); kept so callers can use it like a file."""


def _occupied(path: str) -> bool:
    """True if something (a file, a non-empty folder) already lives at `path`."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    return fs.exists(p) and (fs.isfile(p) or bool(fs.ls(p)))


class MissingArray(ValueError):
    """An array the store layout needs is not there."""


class ConcurrentWrite(ValueError):
    """Another writer committed to the store while this one was writing."""


def _fresh_attrs(group) -> dict:
    """The root attributes as stored now (zarr's group object keeps the ones read at open)."""
    zarr = _zarr()
    try:
        return dict(zarr.open_group(store=group.store, path=group.path, mode="r").attrs)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise ValueError(f"cannot re-read the store's attributes before a commit ({err})") from err


def _count(v, name: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ValueError(f"{name} = {v!r} is not an integer >= {minimum}")
    return int(v)


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
