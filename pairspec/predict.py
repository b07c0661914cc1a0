"""`pairspec predict`: labels, calibrated errors and flags for every visit, and per-star combinations.

Inputs are a pair store (streamed in chunks of batch_size * CHUNK_BATCHES visits, so memory stays
bounded whatever the store size) or a list of the survey's spectrum files (read one by one by its adapter; a file that
cannot be read is reported and the rest go on). Tables are built and written by catalog.py.
"""

from __future__ import annotations

import glob
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pairspec import catalog
from pairspec.surveys.base import AdapterError, recompute_snr

CHUNK_BATCHES = 8  # forward batches per chunk read from the store
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")


@dataclass
class PredictResult:
    visit_path: Path
    star_path: Path
    n_visits: int
    n_stars: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, problem) for unreadable files
    denoised_path: str | None = None


def _load_predictor(checkpoint_or_predictor, device, compile=False, refit=True):
    if hasattr(checkpoint_or_predictor, "predict"):
        return checkpoint_or_predictor
    from pairspec.inference import LabelPredictor

    try:
        return LabelPredictor.from_checkpoint(checkpoint_or_predictor, device=device, compile=compile, refit=refit)
    except (KeyError, TypeError, AttributeError, IndexError) as err:  # a pairspec checkpoint, damaged meta
        raise ValueError(f"{checkpoint_or_predictor}: checkpoint metadata is incomplete or malformed "
                         f"({type(err).__name__}: {err})") from err


def _label_units(predictor) -> tuple[list[str], list[str]]:
    names = list(getattr(predictor, "label_names", None) or predictor.schema.names)
    schema = predictor.schema
    return names, [schema.labels[schema.index(n)].unit for n in names]


@contextmanager
def _progress(enabled: bool, total: int, what: str):
    """Yields advance(n); a rich progress bar when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda n: None
        return
    from pairspec.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.update(task, advance=n)


# ---------------------------------------------------------------- input streams
# Each chunk: dict(star (local star index), visit_id, mjd, snr_survey, flux, ivar).


def _store_stars(store, split):
    """Star rows to catalogue (indices into the store) for the split, or all of them."""
    stars = store.star_table()
    if split is None:
        return stars, np.arange(store.n_stars)
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_CODES)}")
    return stars, np.flatnonzero(np.asarray(stars["split"]) == SPLIT_CODES[split])


def _store_chunk_rows(store, visits, star_sel, chunk: int):
    """(rows, key) of each chunk of the selected visits: rows the visit indices, key what to read them
    with: a (start, stop) pair for a contiguous run (read as a slice, no gather) or the index array."""
    star_of_visit = np.asarray(visits["star"], dtype=np.int64)
    every = len(star_sel) == store.n_stars
    visit_sel = np.arange(store.n_visits) if every else np.flatnonzero(np.isin(star_of_visit, star_sel))
    for a in range(0, len(visit_sel), chunk):
        rows = visit_sel[a : a + chunk]
        yield rows, ((int(rows[0]), int(rows[-1]) + 1) if every else rows)


def _chunk_meta(visits, star_sel, rows) -> dict:
    """The per-visit columns of a chunk that come from the store's tables, not from the spectra."""
    return {
        "star": np.searchsorted(star_sel, np.asarray(visits["star"], dtype=np.int64)[rows]),
        "visit_id": np.asarray(visits["visit_id"])[rows],
        "mjd": np.asarray(visits["mjd"])[rows],
        "snr_survey": np.asarray(visits["snr_survey"])[rows],
    }


def _store_chunks(store, visits, star_sel, chunk: int):
    for rows, key in _store_chunk_rows(store, visits, star_sel, chunk):
        flux, ivar, _ = store.visit_spectra(slice(*key) if isinstance(key, tuple) else key, pixmask=False)
        yield {**_chunk_meta(visits, star_sel, rows), "flux": flux, "ivar": ivar}


def _file_chunks(reader, paths, npix: int, chunk: int, star_ids: list[str], skipped: list, advance,
                 star_flags: list[int]):
    """Visits of the files (read by the survey adapter `reader`), grouped into chunks; star_ids grows as
    new stars are met, and star_flags with them (the records' survey star bits, OR-ed over a star's files).

    A star is the reader's star_id; a reader with a `group_radius` (arcsec: a survey whose designations of
    one star differ from plate to plate) also joins a new id to a star already met within that radius, as
    its ingest does. A visit id met again for the same star (one star's file in two field folders) is
    read once: a copy would shrink the star's error by sqrt(2)."""
    index: dict[str, int] = {}
    radius = getattr(reader, "group_radius", None)
    positions: list[tuple[float, float]] = []  # (ra, dec) of each star index, for group_radius
    seen: dict[tuple[int, str], str] = {}  # (star index, visit id) -> the file it was read from
    pending: list[dict] = []
    n_pending = 0
    for path in paths:
        advance(1)
        if not Path(str(path)).is_file():
            skipped.append((str(path), "no such file"))
            continue
        if not reader.can_read(path):
            hint = getattr(reader, "file_hint", lambda p: None)(path)  # the survey's word on what the file is
            why = hint or (f"not a spectrum file of the model's survey, {reader.name} (by its name); another "
                           "survey's files on the same grid go through `pairspec ingest` into a store first")
            skipped.append((str(path), why))
            continue
        try:
            rec = reader.read_file(path)
        except AdapterError as err:
            skipped.append((str(path), err.problem))
            continue
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - one unreadable file is reported, the others go on
            plain = isinstance(err, (OSError, ValueError)) and str(err)  # astropy's own words name the problem
            skipped.append((str(path), str(err) if plain else f"{type(err).__name__}: {err}"))
            continue
        if rec.n_visits == 0:
            skipped.append((str(path), "no visit spectra"))
            continue
        if rec.visit_flux.shape[1] != npix:
            skipped.append((str(path), f"{rec.visit_flux.shape[1]} pixels, the model expects {npix}"))
            continue
        ra, dec = (_coordinate(rec.meta, k) for k in ("ra", "dec"))
        if rec.star_id not in index:  # one star may have files from two telescopes
            near = _star_within(positions, ra, dec, radius) if radius else None
            if near is None:
                near = len(star_ids)
                star_ids.append(rec.star_id)
                star_flags.append(0)
                positions.append((ra, dec))
            index[rec.star_id] = near
        j = index[rec.star_id]
        star_flags[j] |= int(rec.star_flags)
        ids = np.asarray(rec.visit_id, dtype=str)
        new = np.array([not v or (j, v) not in seen for v in ids], dtype=bool)
        if not new.all():
            first = next(seen[(j, v)] for v in ids[~new])
            if not new.any():
                why = (f"its {ids.size} visit(s) were read already from {first} (one star's file twice, e.g. in "
                       "two field folders): not counted twice")
                skipped.append((str(path), why))
                continue
        seen.update({(j, v): str(path) for v in ids[new] if v})
        pending.append({
            "star": np.full(int(new.sum()), j),
            "visit_id": ids[new],
            "mjd": np.asarray(rec.visit_mjd)[new],
            "snr_survey": np.asarray(rec.visit_snr_survey)[new],
            "flux": rec.visit_flux[new],
            "ivar": rec.visit_ivar[new],
        })
        n_pending += int(new.sum())
        if n_pending >= chunk:
            yield _concat(pending)
            pending, n_pending = [], 0
    if pending:
        yield _concat(pending)


def _coordinate(meta, key: str) -> float:
    """A record's ra or dec in degrees, NaN where it has none (or not a number)."""
    try:
        return float((meta or {}).get(key, np.nan))
    except (TypeError, ValueError):
        return float("nan")


def _star_within(positions, ra: float, dec: float, radius_arcsec: float) -> int | None:
    """Index of the nearest star in `positions` [(ra, dec) deg] within radius_arcsec of (ra, dec), or None."""
    if not positions or not (np.isfinite(ra) and np.isfinite(dec)):
        return None
    p = np.radians(np.asarray(positions, dtype=np.float64))
    r0, d0 = np.radians(ra), np.radians(dec)
    hav = (np.sin((p[:, 1] - d0) / 2) ** 2 + np.cos(d0) * np.cos(p[:, 1]) * np.sin((p[:, 0] - r0) / 2) ** 2)
    sep = np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0, 1)))) * 3600.0
    sep[~np.isfinite(sep)] = np.inf
    k = int(np.argmin(sep))
    return k if sep[k] <= radius_arcsec else None


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---------------------------------------------------------------- prediction


def chunk_outputs(predictor, flux, ivar, batch_size: int, denoise: bool) -> dict:
    """What the spectra of one chunk give: labels, sigma, snr, frac_bad (and denoised). One function for
    the in-process and the Dask paths (pairspec.distributed), so both give the same numbers."""
    out = predictor.predict(flux, ivar, batch_size=batch_size, denoise=denoise)
    snr = out.get("snr")
    if snr is None:
        snr = recompute_snr(flux, ivar)
    frac_bad = out.get("frac_bad")
    if frac_bad is None:
        frac_bad = (ivar[:, predictor.grid.usable()] <= 0).mean(axis=1)
    res = {"labels": np.asarray(out["labels"], dtype=np.float64), "sigma": np.asarray(out["sigma"], dtype=np.float64),
           "snr": np.asarray(snr, dtype=np.float64), "frac_bad": np.asarray(frac_bad, dtype=np.float64),
           "sigma_visit": np.asarray(out.get("sigma_visit", out["sigma"]), dtype=np.float64), "n": len(flux)}
    if denoise:
        res["denoised"] = np.asarray(out["denoised"], dtype=np.float32)
        if out.get("denoised_sigma") is not None:  # checkpoints with a validation error profile
            res["denoised_sigma"] = np.asarray(out["denoised_sigma"], dtype=np.float32)
    return res


def _predict_chunks(predictor, chunks, star_ids, batch_size, writer, advance) -> dict:
    """Run the predictor over every chunk here; see _collect."""
    def outputs():
        for c in chunks:
            yield c, chunk_outputs(predictor, c["flux"], c["ivar"], batch_size, writer is not None)

    return _collect(predictor, outputs(), star_ids, writer, advance)


def _collect(predictor, pairs, star_ids, writer, advance) -> dict:
    """The per-visit columns, concatenated, from (chunk meta, chunk outputs) pairs in chunk order.

    star_ids may grow while the chunks are produced (file input); a chunk only names stars already in it.
    """
    names = ("star", "visit_id", "mjd", "snr_survey", "labels", "sigma", "sigma_visit", "snr", "frac_bad")
    cols: dict[str, list] = {k: [] for k in names}
    for c, out in pairs:
        for k in ("star", "visit_id", "mjd", "snr_survey"):
            cols[k].append(np.asarray(c[k]))
        for k in ("labels", "sigma", "sigma_visit", "snr", "frac_bad"):  # chunk_outputs gives each
            cols[k].append(out[k])
        if writer is not None:
            extra = {"star_id": np.asarray(star_ids, dtype=str)[c["star"]], "mjd": np.asarray(c["mjd"], np.float64),
                     "snr": np.asarray(out["snr"], np.float32)}
            writer.append(list(c["visit_id"]), out["denoised"], extra, sigma=out.get("denoised_sigma"))
        advance(out["n"])
    if not cols["star"]:
        n_label = len(_label_units(predictor)[0])
        empty = {k: np.zeros(0) for k in cols}
        empty.update(star=np.zeros(0, np.int64), visit_id=np.zeros(0, str),
                     labels=np.zeros((0, n_label)), sigma=np.zeros((0, n_label)),
                     sigma_visit=np.zeros((0, n_label)))
        return empty
    return {k: np.concatenate(v) for k, v in cols.items()}


def _file_reader(predictor):
    """The adapter of the predictor's survey (from its label schema) that reads single spectrum files."""
    reader = getattr(predictor, "file_reader", None)  # tests and notebooks may supply their own
    if reader is not None:
        return reader
    from pairspec.surveys import file_reader

    survey = predictor.schema.survey
    options = dict((getattr(predictor, "meta", None) or {}).get("adapter_options") or {})
    try:
        return file_reader(survey, **options)  # read files the way the training store was ingested
    except ValueError as err:  # an option this version of the adapter does not take: say so, use defaults
        warnings.warn(f"reading files with the adapter's defaults: {err}", stacklevel=3)
        return file_reader(survey)
    except KeyError as err:
        raise ValueError(f"the model was trained on survey {survey!r}: {err.args[0]}") from err


def _sigma_max(predictor) -> np.ndarray:
    """LARGE_SIGMA threshold: the training label std if the predictor has it, else the range's uniform std."""
    std = getattr(predictor, "label_std", None)
    if std is not None:
        return np.asarray(std, dtype=np.float64)
    return catalog.default_sigma_max(predictor.label_lo, predictor.label_hi)


def _read_inputs(predictor, inputs, split, chunk, batch_size, writer, progress, cluster=None):
    """Predict every input visit. Returns (visit columns, star ids, survey labels or None, source, skipped,
    the survey's star bits per star).
    cluster: (Dask client, checkpoint path or predictor, device) to run the model on Dask workers."""
    is_store = hasattr(inputs, "visit_spectra")  # an already opened PairStore
    single_file = isinstance(inputs, (str, Path)) and (str(inputs).lower().endswith(FITS_SUFFIXES)
                                                       or (Path(str(inputs)).is_file()
                                                           and not str(inputs).rstrip("/").endswith(".zarr")))
    if not is_store and (not isinstance(inputs, (str, Path)) or single_file):
        if cluster is not None:
            raise ValueError("predict on Dask reads a pair store; ingest the files into one first "
                             "(pairspec ingest SURVEY SRC STORE), or predict the files without --dask/--scheduler")
        if split is not None:
            raise ValueError("split only applies to a pair store, not to a list of FITS files")
        paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        if not paths:
            raise ValueError("no input files")
        seen: set[str] = set()
        unique = []
        for p in paths:
            real = os.path.realpath(str(p))
            if real not in seen:
                seen.add(real)
                unique.append(p)
        if len(unique) < len(paths):  # overlapping globs: a visit counted twice would shrink its star's sigma
            warnings.warn(f"{len(paths) - len(unique)} input file(s) given more than once; each is read once",
                          stacklevel=3)
            paths = unique
        reader = _file_reader(predictor)
        star_ids: list[str] = []
        star_flags: list[int] = []
        skipped: list[tuple[str, str]] = []
        with _progress(progress, len(paths), "predicting files") as advance:
            chunks = _file_chunks(reader, paths, predictor.grid.npix, chunk, star_ids, skipped, advance, star_flags)
            visits = _predict_chunks(predictor, chunks, star_ids, batch_size, writer, lambda n: None)
        if not star_ids:  # nothing readable: an empty catalogue would look like success
            listing = "; ".join(f"{p}: {why}" for p, why in skipped[:5])
            raise ValueError(f"none of the {len(paths)} input file(s) could be read ({listing}"
                             f"{'; ...' if len(skipped) > 5 else ''})")
        kinds = sorted({"".join(Path(str(p)).suffixes[-2:]) or "no extension" for p in paths})
        source = f"{len(paths)} files ({', '.join(kinds)})"
        return visits, star_ids, None, source, skipped, (np.asarray(star_flags, np.int64), predictor.schema.survey)

    if is_store:
        store = inputs
    else:
        from pairspec.store import open_store

        store = open_store(str(inputs))
    where = getattr(store, "path", inputs)
    if store.grid != predictor.grid:
        # name the surveys and the grid fields that differ (a frame, a resolution), not only two dicts
        ours, theirs = store.grid.to_dict(), predictor.grid.to_dict()
        differ = ", ".join(f"{k} {ours.get(k)!r} against {theirs.get(k)!r}" for k in sorted(set(ours) | set(theirs))
                           if ours.get(k) != theirs.get(k) and k != "blocks")
        model_survey = getattr(getattr(predictor, "schema", None), "survey", "?")
        raise ValueError(f"{where}: the store ({getattr(store, 'survey', '?')}, {store.grid.npix} px) is not on the "
                         f"wavelength grid of the model ({model_survey}, {predictor.grid.npix} px): "
                         f"{differ or 'usable blocks differ'}")
    stars, star_sel = _store_stars(store, split)
    star_ids = [str(s) for s in np.asarray(stars["id"])[star_sel]]
    visit_tab = store.visit_table()
    n_sel = int(np.isin(np.asarray(visit_tab["star"]), star_sel).sum())
    if n_sel == 0:  # an empty catalogue would look like success
        raise ValueError(f"{where}: no visits to predict" + (f" in split {split!r}" if split else " (an empty store)"))
    with _progress(progress, n_sel, "predicting visits") as advance:
        if cluster is None:
            chunks = _store_chunks(store, visit_tab, star_sel, chunk)
            visits = _predict_chunks(predictor, chunks, star_ids, batch_size, writer, advance)
        else:
            from pairspec.distributed import map_chunks

            client, spec, device = cluster
            keys = (key for _, key in _store_chunk_rows(store, visit_tab, star_sel, chunk))
            outs = map_chunks(client, spec, device, str(where), keys, batch_size, writer is not None)
            metas = (_chunk_meta(visit_tab, star_sel, rows) for rows, _ in _store_chunk_rows(store, visit_tab, star_sel, chunk))
            visits = _collect(predictor, zip(metas, outs), star_ids, writer, advance)
    source = str(getattr(store, "path", inputs))[-60:]
    flags = np.asarray(stars["star_flags"], dtype=np.int64)[star_sel] if "star_flags" in stars else None
    # the star bits are the store's, so their names are its survey's (a checkpoint of a related survey on the
    # same grid may predict it)
    return visits, star_ids, _survey_labels(store, star_sel, predictor), source, [], (flags, getattr(store, "survey", predictor.schema.survey))


def _expand_globs(inputs):
    """Glob patterns among the inputs (one path or a list), as the command line expands them: a pattern
    that is not itself an existing path becomes its sorted matches (FileNotFoundError if none). Inputs
    without a pattern come back unchanged."""
    if hasattr(inputs, "visit_spectra"):
        return inputs
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    out, expanded = [], False
    for item in items:
        text = str(item)
        if (isinstance(item, (str, Path)) and "://" not in text and glob.has_magic(text)
                and not Path(text).exists()):
            matched = sorted(glob.glob(text))
            if not matched:
                raise FileNotFoundError(f"{text}: no file matches")
            out.extend(matched)
            expanded = True
        else:
            out.append(item)
    return out if expanded else inputs


def predict(
    checkpoint_or_predictor,
    inputs,
    out_path,
    split: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    denoised_path: str | None = None,
    snr_low: float = 10.0,
    max_bad_frac: float = 0.3,
    progress: bool = True,
    compile: bool = False,
    dask=None,
    refit: bool = True,
) -> PredictResult:
    """Predict every visit of a pair store (path/URL/open store) or of spectrum files; write the catalogue.

    out_path's extension picks the format: .fits (HDUs VISITS and STARS), .parquet or .ecsv
    (<stem>.visits.<ext> and <stem>.stars.<ext>). See docs/catalogue.md for columns and flags.
    compile: run the network through torch.compile (pays on a GPU over many spectra; see inference.py).
    dask: run the model on a Dask cluster (a distributed.Client, a scheduler address, or "local[:N]"; see
    pairspec.distributed); store input only. The catalogue is the one-process catalogue.
    refit: for a checkpoint trained with the refit (pairspec.refit), the labels are its val-chosen mix of the
    network's and the label-decoder refit's; False writes the network's own (a predictor passed in keeps
    its own setting).
    """
    catalog.catalogue_paths(out_path)  # an unknown format fails before any work is done
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if split is not None and split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_CODES)}")
    inputs = _expand_globs(inputs)
    if not isinstance(inputs, (str, Path)) and not hasattr(inputs, "visit_spectra"):  # a list of paths
        inputs = list(inputs)
        folders = [str(p) for p in inputs if isinstance(p, (str, Path)) and Path(p).is_dir()]
        if folders and len(inputs) == 1:
            inputs = inputs[0]  # one store, in a list
        elif folders:
            raise ValueError(f"{folders[0]}: a folder (a pair store?) among the input files: give one pair store, "
                             "or spectrum files, not both")
    predictor = _load_predictor(checkpoint_or_predictor, device, compile, refit)
    names, units = _label_units(predictor)
    chunk = max(1, int(batch_size) * CHUNK_BATCHES)

    writer = None
    if denoised_path is not None:
        from pairspec.store import create_spectra_store

        attrs = {"kind": "denoised", "normalised": True, "labels": names,
                 "checkpoint": str(getattr(predictor, "source", ""))}
        writer = create_spectra_store(denoised_path, predictor.grid, predictor.grid.npix, attrs)
    try:
        if dask is None:
            visits, star_ids, survey, source, skipped, star_flags = _read_inputs(
                predictor, inputs, split, chunk, batch_size, writer, progress)
        else:
            from pairspec.distributed import dask_client

            # a path loads on each worker with the default refit; another setting travels with the predictor
            plain_path = not hasattr(checkpoint_or_predictor, "predict") and predictor.refit
            spec = checkpoint_or_predictor if plain_path else predictor
            with dask_client(dask) as client:
                visits, star_ids, survey, source, skipped, star_flags = _read_inputs(
                    predictor, inputs, split, chunk, batch_size, writer, progress, (client, spec, device))
    except BaseException:
        if writer is not None and writer.n == 0:  # the denoised store this call made holds nothing: no clutter
            from pairspec.store.layout import remove_tree

            remove_tree(denoised_path)
        raise
    finally:
        if writer is not None:
            writer.close()
    if skipped:
        listing = "\n".join(f"  {p}: {why}" for p, why in skipped)
        warnings.warn(f"{len(skipped)} file(s) could not be read and were left out:\n{listing}", stacklevel=2)

    star_flags, flag_survey = star_flags  # the survey bits and the survey that names them
    labels, sigma, flags = catalog.flag_visits(
        visits["labels"], visits["sigma"], visits["snr"], visits["frac_bad"],
        predictor.label_lo, predictor.label_hi, _sigma_max(predictor), snr_low, max_bad_frac,
    )
    star = visits["star"].astype(np.int64)
    star_ids_arr = np.asarray(star_ids, dtype=str)
    sigma_visit = np.where(np.isfinite(sigma), visits["sigma_visit"], np.nan)  # broken visits stay broken
    # a checkpoint whose calibration could not split the errors (one-part, or none): the star errors are not
    # averaged down over the visits (catalog.combine_visits); the header's CALMETH says which
    method = predictor.calibration_method() if hasattr(predictor, "calibration_method") else "visit+star"
    combined = catalog.combine_visits(star, len(star_ids), labels, sigma, flags, sigma_visit,
                                      split_known=method == "visit+star")
    visit_tab = catalog.visit_table(
        star_ids_arr[star], visits["visit_id"], visits["mjd"], visits["snr"], visits["snr_survey"],
        labels, sigma, flags, visits["frac_bad"], names, units,
        # the visit part only where the split is known: else the whole error is the visit's as far as known
        sigma_visit=sigma_visit if method == "visit+star" else sigma,
    )
    snr_max = np.full(len(star_ids), np.nan)
    np.fmax.at(snr_max, star, visits["snr"])
    star_tab = catalog.star_table(star_ids_arr, combined, snr_max, names, units, *(survey or (None, None)),
                                  survey_flags=star_flags)
    meta = {"SNRLOW": float(snr_low), "MAXBAD": float(max_bad_frac), "SOURCE": source, "SPLIT": split or "all",
            "REFIT": bool(getattr(predictor, "has_refit", False) and getattr(predictor, "refit", False)),
            "CALMETH": method}
    for tab in (visit_tab, star_tab):
        catalog.add_meta(tab, meta)
    catalog.add_survey_flag_names(star_tab, flag_survey)
    visit_path, star_path = catalog.write_catalogue(visit_tab, star_tab, out_path)
    return PredictResult(visit_path, star_path, len(visit_tab), len(star_tab), skipped,
                         None if denoised_path is None else str(denoised_path))


def _survey_labels(store, star_sel, predictor):
    """(labels, errors) of the selected stars in the predictor's label order; None if the store has none."""
    names = _label_units(predictor)[0]
    if not any(n in store.schema.names for n in names):
        return None
    lab = np.full((len(star_sel), len(names)), np.nan)
    err = np.full((len(star_sel), len(names)), np.nan)
    all_lab, all_err = np.asarray(store.labels()), np.asarray(store.label_err())
    for k, n in enumerate(names):
        if n in store.schema.names:
            j = store.schema.index(n)
            lab[:, k] = all_lab[star_sel, j]
            err[:, k] = all_err[star_sel, j]
    return lab, err
