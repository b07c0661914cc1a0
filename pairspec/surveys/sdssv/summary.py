"""The astra summary catalogue a store takes its labels from: `astraAllStar{Pipeline}-{v_astra}.fits[.gz]`
(formats.md 2.5). HDU1 holds the BOSS results and HDU2 the APOGEE ones (found by the INSTRMNT card, else
by position); one row per coadded spectrum, so a star has one row per telescope (and per release when
DR17 and SDSS-V reductions both exist). Columns are lower case, element ratios on the X/H scale,
uncertainties `e_<x>`, per-label `<x>_flags`, and the booleans flag_warn / flag_bad.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairspec.surveys.base import AdapterError
from pairspec.surveys.sdssv.layout import SUMMARY_HDU, LabelSource, version_key

_META = ("telescope", "release", "snr", "flag_bad", "flag_warn", "result_flags")


def find_summary(source: Path, pipeline: str, explicit=None) -> Path:
    """The summary file of `pipeline` in `source` or `source/summary` (the newest v_astra when several);
    `explicit` (a path) wins. AdapterError naming where it looked when there is none."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise AdapterError(str(path), "no such summary file (option summary=...)")
        return path
    prefix = f"astraallstar{pipeline.lower()}-"
    found = []
    for folder in (source, source / "summary"):
        if folder.is_dir():
            found += [p for p in folder.iterdir()
                      if p.name.lower().startswith(prefix) and p.name.lower().endswith((".fits", ".fits.gz"))]
    if not found:
        raise AdapterError(str(source), f"no astraAllStar{pipeline}-*.fits[.gz] in this folder or its summary/ "
                                        f"folder (labels come from the astra summary; give --option summary=PATH, "
                                        f"or --option pipeline=NAME for another pipeline's file)")

    def key(p: Path):
        v = p.name[len(prefix):].removesuffix(".gz").removesuffix(".fits")
        return version_key(v), p.name

    return max(found, key=key)


@dataclass
class SummaryTable:
    """The rows of one instrument's summary HDU, with the schema's labels already computed (NaN where the
    file has no value). `index` maps sdss_id -> row numbers."""

    path: str
    hdu: int
    sdss_id: np.ndarray  # int64 (n,)
    meta: dict  # name -> (n,) array for _META
    labels: np.ndarray  # float64 (n, K)
    err: np.ndarray  # float64 (n, K)
    flags: np.ndarray  # int64 (n, K)
    missing: list  # label names whose source column the file lacks
    index: dict

    def rows_for(self, sdss_id: int) -> list[dict]:
        """Plain-Python rows of one star (small enough to travel in a WorkUnit)."""
        out = []
        for i in self.index.get(int(sdss_id), ()):
            row = {k: _plain(v[i]) for k, v in self.meta.items()}
            row.update(row=int(i), labels=self.labels[i].tolist(), err=self.err[i].tolist(),
                       flags=[int(f) for f in self.flags[i]])
            out.append(row)
        return out


def _plain(v):
    v = v.item() if isinstance(v, np.generic) else v
    return v.strip() if isinstance(v, str) else v


def _pick_hdu(path: str, hdul, instrument: str) -> int:
    for k, hdu in enumerate(hdul[1:], start=1):
        if str(hdu.header.get("INSTRMNT", "")).strip().upper() == instrument.upper():
            return k
    k = SUMMARY_HDU[instrument]
    if k >= len(hdul):
        _truncated(path)  # a download cut short reads as a file with fewer HDUs: say which it is
        raise AdapterError(path, f"no {instrument.upper()} HDU: the file has {len(hdul)} HDU(s) and no INSTRMNT "
                                 f"card says {instrument.upper()} (astra: HDU1 BOSS, HDU2 APOGEE)")
    return k


def _truncated(path: str) -> None:
    """AdapterError if the (possibly gzipped) FITS file is cut short; nothing otherwise."""
    if path.endswith(".gz"):
        import gzip
        import zlib

        try:
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        except (EOFError, OSError, zlib.error) as exc:
            raise AdapterError(path, f"the file is truncated or damaged ({exc})") from exc
        return
    from pairspec.surveys.fitsutil import fits_layout

    fits_layout(path)


def _float_col(data, names, col, n):
    if col not in names:
        return np.full(n, np.nan)
    return np.asarray(data.field(names[col]), dtype=np.float64)


def _flag_col(data, names, col, n):
    if col not in names:
        return np.zeros(n, dtype=np.int64)
    f = np.asarray(data.field(names[col]))
    f = np.where(np.isfinite(f), f, 0).astype(np.int64) if f.dtype.kind == "f" else f.astype(np.int64)
    return np.where(f < 0, 0, f)  # astra fills missing integers with -1


def read_summary(path, instrument: str, sources: dict[str, LabelSource], pipeline: str) -> SummaryTable:
    """Read the instrument's HDU of a summary file, computing each schema label from `sources`. A label whose
    column is absent is NaN for every star, with a warning naming the file and the column."""
    from astropy.io import fits

    path = str(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*truncated.*")
            with fits.open(path, memmap=not path.endswith(".gz")) as hdul:
                k = _pick_hdu(path, hdul, instrument)
                hdu = hdul[k]
                if not isinstance(hdu, fits.BinTableHDU):
                    raise AdapterError(path, f"HDU{k} ({instrument.upper()}) is not a binary table")
                n = int(hdu.header.get("NAXIS2") or 0)
                if n == 0:
                    raise AdapterError(path, f"HDU{k} ({instrument.upper()}) has 0 rows: {Path(path).name} "
                                             f"has no {instrument.upper()} results (BOSS labels: pipeline=BossNet; "
                                             f"APOGEE: ASPCAP or AstroNN)")
                return _table(path, k, hdu.data, n, instrument, sources)
    except AdapterError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, EOFError, UserWarning) as exc:
        raise AdapterError(path, f"cannot read the summary FITS: {exc}") from exc


def _table(path, k, data, n, instrument, sources) -> SummaryTable:
    names = {c.lower(): c for c in data.columns.names}
    if "sdss_id" not in names:
        raise AdapterError(path, f"HDU{k} ({instrument.upper()}) has no sdss_id column")
    sdss_id = np.asarray(data.field(names["sdss_id"])).astype(np.int64)
    meta = {}
    for c in _META:
        if c in names:
            v = np.asarray(data.field(names[c]))
            meta[c] = np.char.strip(v.astype(str)) if v.dtype.kind in "SU" else v
    meta.setdefault("flag_bad", np.zeros(n, dtype=bool))
    meta.setdefault("flag_warn", np.zeros(n, dtype=bool))
    K = len(sources)
    labels, err, flags = np.full((n, K), np.nan), np.full((n, K), np.nan), np.zeros((n, K), dtype=np.int64)
    missing, lost_cols = [], []
    for j, (name, src) in enumerate(sources.items()):
        cols = [c for c in (src.column, src.minus) if c]
        absent = [c for c in cols if c not in names]
        if absent:
            missing.append(name)
            lost_cols += absent
            continue
        value, e = _float_col(data, names, src.column, n), _float_col(data, names, f"e_{src.column}", n)
        f = _flag_col(data, names, f"{src.column}_flags", n) if src.flags else np.zeros(n, dtype=np.int64)
        if src.minus:
            value = value - _float_col(data, names, src.minus, n)
            e = np.hypot(e, _float_col(data, names, f"e_{src.minus}", n))
            f = f | _flag_col(data, names, f"{src.minus}_flags", n) if src.flags else f
        labels[:, j], err[:, j], flags[:, j] = value, e, f
    if missing:
        warnings.warn(f"{path}: HDU{k} ({instrument.upper()}) has no column(s) {sorted(set(lost_cols))}: "
                      f"label(s) {missing} are NaN for every star", stacklevel=3)
    order = np.argsort(sdss_id, kind="stable")
    ids, starts = np.unique(sdss_id[order], return_index=True)
    groups = np.split(order, starts[1:]) if n else []
    index = {int(i): g.tolist() for i, g in zip(ids, groups) if i >= 0}  # -1: astra's fill for no id
    return SummaryTable(path, k, sdss_id, meta, labels, err, flags, missing, index)
