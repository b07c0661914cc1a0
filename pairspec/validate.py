"""`pairspec validate STORE`: every invariant of docs/data-model.md checked, each broken one named.

Three levels: `quick_problems` (what `open_store` checks before anyone reads or appends: array
lengths from metadata and the visit bookkeeping of the committed stars, two 1-D columns),
`store_problems` (everything: tables, duplicates, splits, labels, wavelengths and, with spectra=True,
every flux and ivar value, read a shard at a time so memory stays bounded), and `validate_path`,
which also reports a store that cannot even be opened instead of raising.
"""

from __future__ import annotations

import numpy as np


def _widths(store) -> dict:
    return {"": (), "pixel": (store.grid.npix,), "label": (len(store.schema),)}


def _layout_problems(store, allow_longer: bool) -> list[str]:
    from pairspec.store import STAR_ARRAYS, VISIT_ARRAYS, MissingArray

    problems, width = [], _widths(store)
    for sub, specs, n in (("stars", STAR_ARRAYS, store.n_stars), ("visits", VISIT_ARRAYS, store.n_visits)):
        for name, (dtype, kind) in specs.items():
            try:
                arr = store._array(f"{sub}/{name}")
            except MissingArray:
                problems.append(f"{sub}/{name} is missing")
                continue
            except ValueError as err:
                problems.append(str(err).removeprefix(f"{store.path}: "))
                continue
            shape = arr.shape
            if not shape or (shape[0] > n and not allow_longer) or shape[0] < n:
                rows = shape[0] if shape else "no"
                problems.append(f"{sub}/{name} has {rows} rows, {n} committed"
                                + (" (interrupted append; open with mode='a' to repair)" if shape and shape[0] > n else ""))
            if tuple(shape[1:]) != width[kind]:
                problems.append(f"{sub}/{name} has row shape {shape[1:]}, expected {width[kind]}")
            if dtype is not str and np.dtype(arr.dtype) != np.dtype(dtype):
                problems.append(f"{sub}/{name} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    return problems


def _bookkeeping(nvis: np.ndarray, first: np.ndarray, n_visits: int) -> list[str]:
    problems, ns = [], len(nvis)
    expect_first = np.concatenate([[0], np.cumsum(nvis)[:-1]])[:ns].astype(np.int64)  # [] when empty
    if (nvis < 1).any():
        problems.append(f"{int((nvis < 1).sum())} stars without visits")
    if int(nvis.sum()) != n_visits:
        problems.append(f"stars/n_visits sums to {int(nvis.sum())}, but {n_visits} visits are committed")
    elif not np.array_equal(first, expect_first):
        problems.append("stars/first_visit is not the running sum of n_visits (visits not contiguous)")
    return problems


def quick_problems(store) -> list[str]:
    """Problems that make the committed rows unusable (arrays may be longer: an interrupted append that
    readers ignore and an append repairs)."""
    problems = _layout_problems(store, allow_longer=True)
    if problems:
        return problems
    n = store.n_stars
    nvis = np.asarray(store._array("stars/n_visits")[:n], dtype=np.int64)
    first = np.asarray(store._array("stars/first_visit")[:n], dtype=np.int64)
    return _bookkeeping(nvis, first, store.n_visits)


def store_problems(store, spectra: bool = True) -> list[str]:
    """Every broken invariant of an opened store (empty list when healthy)."""
    from pairspec.store import STORE_VERSION, split_of

    problems = []
    version = store._g.attrs.get("pairspec_store_version")
    if version != STORE_VERSION:
        problems.append(f"pairspec_store_version is {version!r}, this pairspec writes {STORE_VERSION}")
    problems += _layout_problems(store, allow_longer=False)
    if problems:
        return problems
    ns, nv = store.n_stars, store.n_visits
    stars, visits = store.star_table(), store.visit_table()
    nvis, first = stars["n_visits"], stars["first_visit"]
    book = _bookkeeping(nvis, first, nv)
    problems += book
    if not book and not np.array_equal(visits["star"], np.repeat(np.arange(ns), nvis)):
        problems.append("visits/star does not match stars/first_visit and n_visits")
    for col in ("id", "source"):
        n_unique = len(np.unique(stars[col]))
        if n_unique != ns:
            problems.append(f"stars/{col} has {ns - n_unique} duplicates")
    codes = np.asarray(stars["split"])
    if ns and not np.isin(codes, (0, 1, 2)).all():
        problems.append(f"stars/split has codes other than 0/1/2: {sorted(set(codes.tolist()) - {0, 1, 2})[:5]}")
    expect_split = np.array([split_of(s) for s in stars["id"]], dtype=np.int8)
    if not np.array_equal(codes, expect_split):
        problems.append(f"stars/split differs from split_of(id) for {int((codes != expect_split).sum())} stars")
    in_splits = {k: set(np.asarray(stars["id"])[codes == k].tolist()) for k in (0, 1, 2)}
    shared = (in_splits[0] & in_splits[1]) | (in_splits[0] & in_splits[2]) | (in_splits[1] & in_splits[2])
    if shared:
        problems.append(f"{len(shared)} star ids are in two splits (e.g. {sorted(shared)[0]})")
    problems += _meta_problems(store)
    problems += _chunk_problems(store)
    if spectra:
        problems += _spectra_problems(store)
    return problems


def _meta_problems(store) -> list[str]:
    problems, g = [], store._g
    if "wavelength" not in g:
        problems.append("wavelength is missing")
    else:
        wave = np.asarray(g["wavelength"][:])
        if wave.shape != (store.grid.npix,) or not np.allclose(wave, store.grid.wavelength(), rtol=1e-9):
            problems.append("wavelength does not match the grid attribute")
    if "label" not in g:
        problems.append("label is missing")
    else:
        names = [str(x) for x in np.asarray(g["label"][:]).tolist()]
        if names != list(store.schema.names):
            problems.append(f"label names {names} differ from the schema's {list(store.schema.names)}")
    return problems


def _chunk_problems(store) -> list[str]:
    """Chunks (shards) of committed rows that are not stored. zarr reads a missing chunk as fill values
    (zeros) without a word, and the pairspec writers store every chunk (empty ones too), so a missing
    one is a lost file: the rows would read as zero spectra, zero labels."""
    from zarr.core.sync import sync

    from pairspec.store import STAR_ARRAYS, VISIT_ARRAYS

    problems = []
    for sub, names, n in (("stars", STAR_ARRAYS, store.n_stars), ("visits", VISIT_ARRAYS, store.n_visits)):
        for name in names:
            arr = store._array(f"{sub}/{name}")
            rows = (arr.shards or arr.chunks)[0]
            want = {arr.metadata.encode_chunk_key((i,) + (0,) * (arr.ndim - 1)) for i in range(-(-n // rows))}
            if not want:
                continue
            prefix = f"{arr.path}/" if arr.path else ""

            async def listing(store=arr.store, prefix=prefix):
                return [k async for k in store.list_prefix(prefix + "c")]

            if not arr.store.supports_listing:
                continue
            have = {k[len(prefix):] for k in sync(listing())}
            lost = sorted(want - have, key=lambda k: [int(x) for x in k.split("/")[1:]])
            if lost:
                problems.append(f"{sub}/{name}: {len(lost)} chunk(s) of committed rows missing (read as zeros), "
                                f"e.g. {lost[0]}")
    return problems


def _spectra_problems(store) -> list[str]:
    """NaN/inf in flux or ivar, ivar < 0; scanned in shard-sized blocks so memory stays bounded."""
    problems = []
    for sub, n in (("stars", store.n_stars), ("visits", store.n_visits)):
        for a in range(0, n, store.chunk):
            flux, ivar, _ = store._spectra(sub, slice(a, a + store.chunk), n, pixmask=False)
            for name, v in (("flux", flux), ("ivar", ivar)):
                bad = ~np.isfinite(v).all(axis=1)
                if bad.any():
                    problems.append(f"{sub}/{name} has NaN/inf in rows {(a + np.flatnonzero(bad))[:5].tolist()}")
            neg = (ivar < 0).any(axis=1)
            if neg.any():
                problems.append(f"{sub}/ivar < 0 in rows {(a + np.flatnonzero(neg))[:5].tolist()}")
    return problems


def validate_path(path: str, spectra: bool = True) -> list[str]:
    """Problems of the store at `path`, including that it cannot be opened (never raises for a bad
    store: a report is what the user asked for)."""
    from pairspec.store import open_store
    from pairspec.store.spectra import open_spectra, spectra_problems

    spectra_store = open_spectra(str(path))  # a denoised-spectra store has its own, simpler invariants
    if spectra_store is not None:
        return spectra_problems(spectra_store)
    try:
        store = open_store(str(path), check=False)
    except (FileNotFoundError, ValueError) as err:
        return [f"cannot open: {err}"]
    try:
        return store_problems(store, spectra=spectra)
    except (KeyError, ValueError, TypeError, IndexError, OSError, RuntimeError) as err:
        return [f"unreadable content ({type(err).__name__}: {err})"]
