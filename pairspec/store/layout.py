"""The pair store's layout and entry points: array specs, the split rule, create_store and open_store
(docs/data-model.md). Only this package writes Zarr; chunk_io.py encodes the chunks it writes."""

from __future__ import annotations

import hashlib
import warnings
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.schema import LabelSchema
from pairspec.surveys.base import StarRecord

if TYPE_CHECKING:
    from pairspec.store.pairstore import PairStore

STORE_VERSION = 1
CREATING_MARKER = ".pairspec-creating"  # a file in a store folder while create_store runs
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
                 provenance: dict | None = None, chunk: int = 256) -> PairStore:
    """Create an empty store at `path` (local or fsspec URL). Refuses to overwrite anything but an
    unfinished pair store (one whose creation was cut off): ValueError naming the path.

    A creation in progress is marked by a file of its own (CREATING_MARKER), written before any Zarr
    metadata and removed after the version marker: zarr rewrites the root group's metadata, attributes
    emptied, whenever it makes a child, so a marker among the attributes did not survive a kill mid-way."""
    import fsspec

    zarr = _zarr()
    fs, root = fsspec.core.url_to_fs(path)
    marker = f"{root.rstrip('/')}/{CREATING_MARKER}"
    try:
        existing = zarr.open_group(path, mode="r")
    except FileNotFoundError:  # also zarr's GroupNotFoundError: nothing there yet
        existing = None
    if existing is not None and "pairspec_store_version" in existing.attrs:
        raise ValueError(f"{path}: a pair store already exists here; open it with open_store(mode='a')")
    # (the attribute is how stores made before the marker file said so)
    unfinished = fs.exists(marker) or (existing is not None and bool(existing.attrs.get("pairspec_creating")))
    if not unfinished and existing is not None:
        raise ValueError(f"{path}: a Zarr group that is not a pair store is here; refusing to overwrite")
    if not unfinished and _occupied(path):
        raise ValueError(f"{path}: exists and is not a Zarr group; refusing to overwrite it with a pair store")
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(marker, b"a pairspec store is being created here; a rerun of the ingest may overwrite it\n")
    _clear_children(path, keep=CREATING_MARKER)  # an unfinished creation's remains; the marker stays
    g = zarr.open_group(path, mode="a")  # (a new group: nothing but the marker file is left)
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
             "pairspec_store_version": STORE_VERSION}
    g.update_attributes(attrs)  # one write of the root metadata, after every array, with the version marker
    fs.rm_file(marker)
    from pairspec.store.pairstore import PairStore

    return PairStore(path, g, mode="a")


def open_store(path: str, mode: str = "r", check: bool = True) -> PairStore:
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
    from pairspec.store.pairstore import PairStore

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


def _clear_children(path: str, keep: str) -> None:
    """Remove everything in the folder at `path` but the entry named `keep`."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    for entry in fs.ls(p, detail=False):
        if entry.rstrip("/").rsplit("/", 1)[-1] != keep:
            try:
                fs.rm(entry, recursive=True)
            except FileNotFoundError:  # gone already (e.g. a writer's temporary file renamed meanwhile)
                pass


def remove_tree(path: str) -> None:
    """Remove the folder (or file) at `path`, local or fsspec URL; nothing if it is not there."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(str(path))
    try:
        fs.rm(p, recursive=True)
    except FileNotFoundError:
        pass


def _occupied(path: str) -> bool:
    """True if something (a file, a non-empty folder) already lives at `path`."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    return fs.exists(p) and (fs.isfile(p) or bool(fs.ls(p)))


class MissingArray(ValueError):
    """An array the store layout needs is not there."""


class ConcurrentWrite(ValueError):
    """Another writer committed to the store while this one was writing."""


def _count(v, name: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ValueError(f"{name} = {v!r} is not an integer >= {minimum}")
    return int(v)
