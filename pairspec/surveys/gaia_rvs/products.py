"""Reading Gaia RVS spectrum products into `RvsSpectrum`s, whatever the file layout.

Two table layouts exist (formats.md 4.2, [GA-rvs]):
- "array rows": one row per source (RAW datalink, bulk RvsMeanSpectrum_*.csv.gz) - or per transit for
  epoch spectra - with `flux` and `flux_error` as 2401-value arrays and the scalar columns beside them;
- "pixel table": INDIVIDUAL / COMBINED datalink files, one row per wavelength (`wavelength`, `flux`,
  `flux_error`), the scalar columns in the file's header: FITS header keywords (HIERARCH), VOTable PARAMs,
  ECSV `meta`; a datalink CSV has no header, so the source id comes from its name ("RVS-Gaia DR3 <id>.csv").
Both occur in FITS, VOTable and CSV/ECSV (plain or gzipped). Which layout a table has is read from the
data (is `flux` one value or an array per row), not from the file name. A spectrum carrying a per-row
time (`obs_time_rv` ..., formats.md 4.3, DR4, unverified) is an epoch spectrum; all others are means.

`scan(path)` lists the spectra of a file cheaply (for discovery); `load(path, locator)` reads one. Every
failure is an AdapterError naming the file (and row). Parsed tables of the last file are kept per process,
so reading the rows of one file in sequence parses it once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pairspec.surveys.base import AdapterError
from pairspec.surveys.gaia_rvs.bulk import TEXT_SUFFIXES, BulkFile, as_int

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
VOTABLE_SUFFIXES = (".xml", ".vot", ".votable", ".xml.gz", ".vot.gz")
EPOCH_TIME_KEYS = ("obs_time_rv", "obs_time_tcb", "obs_time", "transit_time", "epoch_time")
_ID_IN_NAME = re.compile(r"(\d{5,20})(?=\D*$)")


@dataclass
class RvsSpectrum:
    """One spectrum as published: float64 arrays with NaN where the file has null, scalars lower-case."""

    source_id: int
    flux: np.ndarray
    flux_error: np.ndarray
    scalars: dict = field(default_factory=dict)
    wavelength_nm: np.ndarray | None = None  # the file's own wavelength column (pixel tables)
    path: str = ""
    locator: str = ""

    @property
    def time(self) -> float:
        """Epoch time (BJD TCB - 2455197.5, formats.md 4.3) or NaN for a mean spectrum."""
        return _time(self.scalars)

    @property
    def where(self) -> str:
        return f"{self.locator} (source_id {self.source_id})"


@dataclass(frozen=True)
class Entry:
    """What discovery keeps of one spectrum in a file: small and picklable."""

    locator: str
    source_id: int
    time: float  # NaN for a mean spectrum
    n_transits: int | None = None  # combined_transits when the file gives it

    @property
    def epoch(self) -> bool:
        return math.isfinite(self.time)


def _time(scalars: dict) -> float:
    for key in EPOCH_TIME_KEYS:
        v = scalars.get(key)
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            return f
    return math.nan


def product_kind(path) -> str | None:
    name = Path(str(path)).name.lower()
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    if name.endswith(VOTABLE_SUFFIXES):
        return "votable"
    return None


def _id_from_name(path: str) -> int | None:
    stem = re.sub(r"\.(csv|ecsv|fits?|xml|vot|votable)(\.gz|\.bz2)?$", "", Path(path).name, flags=re.IGNORECASE)
    m = _ID_IN_NAME.search(stem)
    return int(m.group(1)) if m else None


def _plain(value):
    """numpy / masked / bytes scalars -> plain Python (None for masked or null)."""
    if value is None or value is np.ma.masked:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _floats(values) -> np.ndarray:
    """An array-like (maybe masked) as float64 with NaN where masked or null."""
    if isinstance(values, np.ma.MaskedArray):
        return np.ma.filled(values.astype(np.float64), np.nan)
    if isinstance(values, (list, tuple)):
        values = [np.nan if v is None else v for v in values]
    return np.asarray(values, dtype=np.float64)


# ---- tables of FITS and VOTable files: [(columns {name: array}, meta {key: value})] -------------------
_TABLE_CACHE: dict = {}


def _fits_tables(path: str) -> list[tuple[dict, dict]]:
    import warnings

    from astropy.io import fits

    if not path.lower().endswith(".gz"):
        from pairspec.surveys.fitsutil import fits_layout

        fits_layout(path)  # a cut download is an AdapterError here, before astropy reads a partial table
    out = []
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*truncated.*")
        with fits.open(path, memmap=False) as hdul:
            primary = {k.lower(): _plain(v) for k, v in hdul[0].header.items() if k not in ("COMMENT", "HISTORY", "")}
            for hdu in hdul[1:]:
                if not isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) or hdu.data is None:
                    continue
                meta = dict(primary)
                meta.update({k.lower(): _plain(v) for k, v in hdu.header.items()
                             if k not in ("COMMENT", "HISTORY", "") and not k.startswith(("TTYPE", "TFORM", "TUNIT", "NAXIS"))})
                cols = {n.lower(): np.array(hdu.data.field(n)) for n in hdu.columns.names}
                out.append((cols, meta))
    return out


def _text_tables(path: str) -> list[tuple[dict, dict]]:
    """A datalink CSV/ECSV pixel table (one row per wavelength) as one table; meta from the ECSV header."""
    f = BulkFile.open(path)
    rows = [f.fields(k) for k in range(len(f))]
    cols = {}
    for j, name in enumerate(f.names):
        vals = [r[j].strip() for r in rows]
        try:
            cols[name] = np.array([np.nan if v in ("", "null", "NULL") else float(v) for v in vals])
        except ValueError:
            cols[name] = np.array(vals, dtype=object)
    return [(cols, _ecsv_meta(f.yaml))]


def _ecsv_meta(yaml_text: str) -> dict:
    if not yaml_text.strip():
        return {}
    import yaml

    body = "\n".join(line.removeprefix(" ") for line in yaml_text.splitlines()
                     if not line.lstrip().startswith("%ECSV"))
    try:
        doc = yaml.safe_load(body) or {}
    except yaml.YAMLError:
        return {}  # astropy-specific tags and the like: the meta is optional, the columns are what matters
    meta = doc.get("meta", {}) if isinstance(doc, dict) else {}
    if isinstance(meta, list):  # !!omap -> list of (key, value) pairs
        meta = dict(pair if isinstance(pair, tuple) else next(iter(pair.items())) for pair in meta)
    return {str(k).lower(): _plain(v) for k, v in (meta or {}).items()} if isinstance(meta, dict) else {}


def _tables(path: str, kind: str) -> list[tuple[dict, dict]]:
    import os

    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _TABLE_CACHE:
        from pairspec.surveys.gaia_rvs.votable import read_tables

        reader = {"fits": _fits_tables, "votable": read_tables, "text": _text_tables}[kind]
        tables = reader(path)
        _TABLE_CACHE.clear()  # one file per process: a worker reads the rows of one file in a row
        _TABLE_CACHE[key] = tables
    return _TABLE_CACHE[key]


def drop_caches() -> None:
    """Forget the last parsed file (its decompressed text can be hundreds of MB)."""
    _TABLE_CACHE.clear()
    BulkFile._last = None


def _guard(path: str, what, *args):
    """Run a reader; any parser failure of a bad file becomes an AdapterError naming the file."""
    try:
        return what(*args)
    except AdapterError:
        raise
    except FileNotFoundError as exc:
        raise AdapterError(path, "no such file") from exc
    except Exception as exc:
        raise AdapterError(path, f"cannot read {product_kind(path) or 'file'}: {type(exc).__name__}: {exc}") from exc


def _is_array_table(cols: dict) -> bool:
    flux = cols.get("flux")
    if flux is None:
        return False
    arr = np.asarray(flux)
    return arr.ndim == 2 or (arr.dtype == object and len(arr) > 0 and np.ndim(arr[0]) == 1)


def _row_scalars(cols: dict, r: int) -> dict:
    out = {}
    for name, col in cols.items():
        if name in ("flux", "flux_error", "wavelength"):
            continue
        v = col[r]
        if np.ndim(v) == 0:
            out[name] = _plain(v)
    return out


# ---- the public API ------------------------------------------------------------------------------
def scan(path) -> tuple[list[Entry], list[tuple[str, str]]]:
    """(entries, problems) of one file: every spectrum it holds, and (where, why) for the rows that cannot
    be listed (and for a file cut short: what was lost). AdapterError if the file holds nothing readable."""
    path = str(path)
    kind = product_kind(path)
    if kind is None:
        raise AdapterError(path, "not a Gaia RVS product (expected .csv[.gz], .ecsv[.gz], .fits[.gz] or .xml/.vot)")
    return _guard(path, _scan, path, kind)


def _scan(path: str, kind: str):
    entries, problems = [], []
    if kind == "text":
        f = BulkFile.open(path)
        if f.problem:
            problems.append(("file", f.problem))
        if "flux" not in f.index or "flux_error" not in f.index:
            raise AdapterError(path, f"no flux / flux_error columns (columns: {', '.join(f.names[:10])})")
        if "wavelength" in f.index:  # a datalink pixel table (bulk files have none): its header says enough
            return [_pixel_entry(path, _ecsv_meta(f.yaml), "table=0")], problems
        tcol = next((c for c in EPOCH_TIME_KEYS if c in f.index), None)
        ncol = "combined_transits" if "combined_transits" in f.index else None
        for k in range(len(f)):
            try:
                sid = as_int(f.quick(k, "source_id")) if "source_id" in f.index else None
                t = f.quick(k, tcol) if tcol else None
                n = as_int(f.quick(k, ncol)) if ncol else None
            except AdapterError as err:
                problems.append((f"row={k:07d}", err.problem))
                continue
            if sid is None:
                problems.append((f"row={k:07d}", f"row {k}: no source_id"))
                continue
            entries.append(Entry(f"row={k:07d}", sid, _time({tcol: t}) if tcol else math.nan, n))
    else:
        tables = _tables(path, kind)
        prefix = "hdu" if kind == "fits" else "table"
        for ti, (cols, meta) in enumerate(tables):
            number = ti + 1 if kind == "fits" else ti
            if "flux" not in cols:
                continue
            if not _is_array_table(cols):
                entries.append(_pixel_entry(path, meta, f"{prefix}={number}"))
                continue
            for r in range(len(cols["flux"])):
                scal = {**meta, **_row_scalars(cols, r)}
                sid = as_int(scal.get("source_id"))
                loc = f"{prefix}={number}:row={r:07d}"
                if sid is None:
                    problems.append((loc, f"{loc}: no source_id"))
                    continue
                entries.append(Entry(loc, sid, _time(scal), as_int(scal.get("combined_transits"))))
    if not entries and not problems:
        raise AdapterError(path, "holds no RVS spectrum (no table with a flux column)")
    return entries, problems


def _pixel_entry(path: str, meta: dict, locator: str) -> Entry:
    sid = as_int(meta.get("source_id"))
    if sid is None:
        sid = _id_from_name(path)
    if sid is None:
        raise AdapterError(path, "no source_id in the file's header and none in its name")
    return Entry(locator, sid, _time(meta), as_int(meta.get("combined_transits")))


def load(path, locator: str) -> RvsSpectrum:
    """The spectrum at `locator` (from scan) of one file."""
    path = str(path)
    kind = product_kind(path)
    if kind is None:
        raise AdapterError(path, "not a Gaia RVS product")
    return _guard(path, _load, path, kind, locator)


def _parse_locator(path: str, locator: str) -> dict:
    try:
        return {k: int(v) for k, v in (part.split("=") for part in locator.split(":"))}
    except ValueError as exc:
        raise AdapterError(path, f"bad locator {locator!r}") from exc


def _load(path: str, kind: str, locator: str) -> RvsSpectrum:
    loc = _parse_locator(path, locator)
    if kind == "text" and "row" in loc:
        f = BulkFile.open(path)
        if not 0 <= loc["row"] < len(f):
            raise AdapterError(path, f"row {loc['row']} is not in the file ({len(f)} rows; file changed or cut?)")
        row = f.row(loc["row"])
        scal = {k: v for k, v in row.items() if not isinstance(v, np.ndarray)}
        return _spectrum(path, locator, scal, row.get("flux"), row.get("flux_error"), None)
    tables = _tables(path, kind)
    ti = loc.get("hdu", 1) - 1 if kind == "fits" else loc.get("table", 0)
    if not 0 <= ti < len(tables):
        raise AdapterError(path, f"{locator}: the file has {len(tables)} table(s)")
    cols, meta = tables[ti]
    if "row" in loc:
        r = loc["row"]
        if "flux" not in cols or not 0 <= r < len(cols["flux"]):
            raise AdapterError(path, f"{locator}: no such row")
        scal = {**meta, **_row_scalars(cols, r)}
        return _spectrum(path, locator, scal, cols["flux"][r], cols.get("flux_error", [None] * (r + 1))[r], None)
    scal = dict(meta)
    if as_int(scal.get("source_id")) is None:
        scal["source_id"] = _id_from_name(path)
    wave = cols.get("wavelength")
    return _spectrum(path, locator, scal, cols.get("flux"), cols.get("flux_error"), wave)


def _spectrum(path, locator, scal, flux, error, wave) -> RvsSpectrum:
    sid = as_int(scal.get("source_id"))
    where = f"{locator}" + (f" (source_id {sid})" if sid is not None else "")
    if sid is None:
        raise AdapterError(path, f"{where}: no source_id")
    if flux is None:
        raise AdapterError(path, f"{where}: no spectrum (flux is null)")
    if error is None:
        raise AdapterError(path, f"{where}: no flux_error (the spectrum has no uncertainties)")
    flux, error = _floats(flux).ravel(), _floats(error).ravel()
    if flux.shape != error.shape:
        raise AdapterError(path, f"{where}: flux has {flux.size} values but flux_error {error.size}")
    if wave is not None:
        wave = _floats(wave).ravel()
        if wave.shape != flux.shape:
            raise AdapterError(path, f"{where}: wavelength has {wave.size} values but flux {flux.size}")
        if np.nanmedian(wave) > 2000:  # Angstrom rather than the published nm
            wave = wave / 10.0
    return RvsSpectrum(sid, flux, error, scal, wave, path, locator)
