"""Catalogue tables keyed by Gaia source_id: labels for the schema, and gaia_source values (S/N, RV).

A labels table is FITS, CSV/ECSV (plain or .gz; Gaia's bulk ECSV-style files included) or Parquet. Columns
are matched case-insensitively; the first candidate present wins (or `label_columns={teff: COL, ...}`):

| label    | candidates                                          | error                                  |
|----------|-----------------------------------------------------|----------------------------------------|
| teff     | teff_gspspec, teff                                  | COL_err, COL_error, e_COL, or          |
| logg     | logg_gspspec, logg                                  | (COL_upper - COL_lower) / 2 (GSP-Spec  |
| fe_h     | mh_gspspec, fe_h, feh, m_h, mh                      | 16th/84th percentiles)                 |
| alpha_fe | alphafe_gspspec, alpha_fe, alpha_m, afe             |                                        |

id column: source_id, gaia_source_id, gaiadr3_source_id, gaia_dr3_source_id, gaiaedr3_source_id (APOGEE
DR17 allStar: GAIAEDR3_SOURCE_ID; EDR3 and DR3 share source ids), dr3_source_id. Rows with an id <= 0
(allStar writes 0 when unmatched) are ignored. Flags: GSP-Spec's 41-character `flags_gspspec` gives every
label the bitmask "bit i set when character i (i < 13, the parameter flags) is not '0'"; a catalogue with
COL_flag columns (APOGEE FE_H_FLAG ...) gives those. APOGEE allStar rows with EXTRATARG bit 4 (duplicate)
are dropped and ASPCAPFLAG STAR_BAD (bit 23) makes the labels NaN; when one id has several rows the one
with the highest SNR (else the first) is kept. GSP-Spec's published calibrations of log g and [M/H]
(Recio-Blanco et al. 2023) are NOT applied: the labels are as published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pairspec.surveys.base import AdapterError
from pairspec.surveys.gaia_rvs.bulk import TEXT_SUFFIXES, BulkFile

ID_COLUMNS = ("source_id", "gaia_source_id", "gaiadr3_source_id", "gaia_dr3_source_id", "gaiaedr3_source_id",
              "dr3_source_id")
LABEL_CANDIDATES = {
    "teff": ("teff_gspspec", "teff"),
    "logg": ("logg_gspspec", "logg"),
    "fe_h": ("mh_gspspec", "fe_h", "feh", "m_h", "mh"),
    "alpha_fe": ("alphafe_gspspec", "alpha_fe", "alpha_m", "afe"),
}
SOURCE_COLUMNS = ("rvs_spec_sig_to_noise", "radial_velocity", "radial_velocity_error", "rv_nb_transits",
                  "rv_method_used", "grvs_mag", "ra", "dec")
STAR_BAD_BIT, DUPLICATE_BIT = 23, 4  # APOGEE ASPCAPFLAG STAR_BAD, EXTRATARG duplicate
N_GSPSPEC_PARAM_FLAGS = 13
_STRING_COLUMNS = set(ID_COLUMNS) | {"flags_gspspec"}  # read as text: all 19 digits, leading zeros kept


def _err_names(col: str) -> tuple[str, ...]:
    return (f"{col}_err", f"{col}_error", f"e_{col}")


def read_columns(path: str, wanted) -> dict[str, np.ndarray]:
    """The columns of `wanted` (lower-case names) a table has, lower-case keys, as numpy arrays."""
    path = str(path)
    wanted = {w.lower() for w in wanted}
    name = Path(path).name.lower()
    try:
        if name.endswith((".fits", ".fit", ".fits.gz", ".fit.gz")):
            from astropy.io import fits

            with fits.open(path, memmap=not name.endswith(".gz")) as hdul:
                hdu = next((h for h in hdul[1:] if isinstance(h, (fits.BinTableHDU, fits.TableHDU))), None)
                if hdu is None:
                    raise AdapterError(path, "no table HDU (not a catalogue?)")
                names = {n.lower(): n for n in hdu.columns.names}
                return {k: np.array(hdu.data.field(names[k])) for k in wanted if k in names}
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            names = {n.lower(): n for n in schema.names}
            tab = pq.read_table(path, columns=[names[k] for k in wanted if k in names])
            return {k.lower(): tab.column(k).to_numpy(zero_copy_only=False) for k in tab.column_names}
        if name.endswith(TEXT_SUFFIXES):
            f = BulkFile(path)  # not the one-file cache: that is the spectrum readers'
            if f.problem:
                raise AdapterError(path, f.problem)
            idx = {k: f.index[k] for k in wanted if k in f.index}
            rows = [f.fields(r) for r in range(len(f))]
            return {k: (np.array([row[i].strip() for row in rows], dtype=object) if k in _STRING_COLUMNS
                        else _text_column([row[i] for row in rows])) for k, i in idx.items()}
    except AdapterError:
        raise
    except FileNotFoundError as exc:
        raise AdapterError(path, "no such catalogue file") from exc
    except Exception as exc:
        raise AdapterError(path, f"cannot read catalogue: {type(exc).__name__}: {exc}") from exc
    raise AdapterError(path, "catalogue must be FITS, CSV/ECSV (.gz) or Parquet")


def _text_column(values: list[str]) -> np.ndarray:
    """int64 when every value is an integer (ids keep all 19 digits), else float64 (null -> NaN), else str."""
    vals = [v.strip() for v in values]
    try:
        return np.array([int(v) for v in vals], dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        return np.array([np.nan if v in ("", "null", "NULL") else float(v) for v in vals])
    except ValueError:
        return np.array(vals, dtype=object)


def _floats(col) -> np.ndarray:
    if isinstance(col, np.ma.MaskedArray):
        col = np.ma.filled(col.astype(np.float64), np.nan)
    try:
        return np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_to_float(v) for v in col])


def _to_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ids(col) -> np.ndarray:
    """Source ids as int64 (-1 where missing): from integer, float or string columns."""
    arr = np.asarray(col)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    out = np.full(arr.shape[0], -1, dtype=np.int64)
    for i, v in enumerate(arr.tolist()):
        try:
            text = v.decode() if isinstance(v, bytes) else str(v)
            out[i] = int(text.strip()) if text.strip().lstrip("-").isdigit() else int(float(text))
        except (TypeError, ValueError, OverflowError):
            continue
    return out


def gspspec_flag_bits(text) -> int:
    """Bitmask of flags_gspspec: bit i when character i (< 13, the parameter flags) is not '0'."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        return 0
    return sum(1 << i for i, ch in enumerate(text.strip()[:N_GSPSPEC_PARAM_FLAGS]) if ch not in "0 ")


@dataclass
class LabelTable:
    """Labels of one catalogue: row of each source id, (n, K) labels / errors / flags, and notes."""

    path: str
    kind: str  # "gspspec", "apogee" or "table"
    columns: dict[str, str]  # label name -> column used
    missing: list[str]  # schema labels the table has no column for (NaN for every star)
    row: dict[int, int]
    labels: np.ndarray
    err: np.ndarray
    flags: np.ndarray
    notes: list[str] = field(default_factory=list)
    flag_text: list | None = None  # flags_gspspec per row, when the table has it

    def lookup(self, source_id: int):
        """(labels, err, flags, flags_gspspec text or '') of one source as plain lists, or None."""
        r = self.row.get(int(source_id))
        if r is None:
            return None
        return (self.labels[r].tolist(), self.err[r].tolist(), [int(v) for v in self.flags[r]],
                self.flag_text[r] if self.flag_text is not None else "")


def read_label_table(path: str, names: list[str], label_columns: dict | None = None) -> LabelTable:
    """The labels `names` (schema order) of every source in the catalogue at `path` (module docstring)."""
    path = str(path)
    label_columns = {k: str(v).lower() for k, v in (label_columns or {}).items()}
    unknown = [k for k in label_columns if k not in names]
    if unknown:
        raise ValueError(f"label_columns names {unknown}, which are not labels of the schema {names}")
    cand = {n: (label_columns[n],) if n in label_columns else LABEL_CANDIDATES.get(n, (n,)) for n in names}
    wanted = set(ID_COLUMNS) | {"flags_gspspec", "aspcapflag", "extratarg", "snr"}
    for cols in cand.values():
        for c in cols:
            wanted |= {c, f"{c}_lower", f"{c}_upper", f"{c}_flag", *_err_names(c)}
    cols = read_columns(path, wanted)
    id_col = next((c for c in ID_COLUMNS if c in cols), None)
    if id_col is None:
        raise AdapterError(path, f"labels table has no source id column (looked for {', '.join(ID_COLUMNS)})")
    ids = _ids(cols[id_col])
    n = ids.size
    kind = "gspspec" if "flags_gspspec" in cols or any(c.endswith("_gspspec") for c in cols) else (
        "apogee" if id_col == "gaiaedr3_source_id" else "table")
    K = len(names)
    labels, err = np.full((n, K), np.nan), np.full((n, K), np.nan)
    flags = np.zeros((n, K), dtype=np.int64)
    used, missing = {}, []
    for k, name in enumerate(names):
        col = next((c for c in cand[name] if c in cols), None)
        if col is None:
            missing.append(name)
            continue
        used[name] = col
        labels[:, k] = _floats(cols[col])
        e = next((c for c in _err_names(col) if c in cols), None)
        if e is not None:
            err[:, k] = _floats(cols[e])
        elif f"{col}_lower" in cols and f"{col}_upper" in cols:
            err[:, k] = 0.5 * (_floats(cols[f"{col}_upper"]) - _floats(cols[f"{col}_lower"]))
        if f"{col}_flag" in cols:
            flags[:, k] = np.nan_to_num(_floats(cols[f"{col}_flag"]), nan=0).astype(np.int64)
    flag_text = None
    if "flags_gspspec" in cols:
        flag_text = ["" if v is None else (v.decode() if isinstance(v, bytes) else str(v)).strip()
                     for v in np.asarray(cols["flags_gspspec"]).tolist()]
        bits = np.array([gspspec_flag_bits(t) for t in flag_text], dtype=np.int64)
        for name in used:
            flags[:, names.index(name)] |= bits
    with np.errstate(invalid="ignore"):
        err[~np.isfinite(err) | (err <= 0)] = np.nan
    keep = ids > 0
    notes = []
    if "extratarg" in cols:
        dup = (np.nan_to_num(_floats(cols["extratarg"]), nan=0).astype(np.int64) >> DUPLICATE_BIT) & 1 == 1
        keep &= ~dup
    if "aspcapflag" in cols:
        bad = (np.nan_to_num(_floats(cols["aspcapflag"]), nan=0).astype(np.int64) >> STAR_BAD_BIT) & 1 == 1
        labels[bad] = np.nan
        err[bad] = np.nan
        if bad.any():
            notes.append(f"{int(bad.sum())} row(s) with ASPCAPFLAG STAR_BAD: labels NaN")
    snr = _floats(cols["snr"]) if "snr" in cols else np.zeros(n)
    row: dict[int, int] = {}
    n_dup = 0
    for r in np.flatnonzero(keep):
        sid = int(ids[r])
        if sid in row:
            n_dup += 1
            if np.nan_to_num(snr[r], nan=-np.inf) > np.nan_to_num(snr[row[sid]], nan=-np.inf):
                row[sid] = int(r)
        else:
            row[sid] = int(r)
    if n_dup:
        notes.append(f"{n_dup} duplicate row(s) of a source id: kept the highest-SNR (else first) row")
    return LabelTable(path, kind, used, missing, row, labels, err, flags, notes, flag_text)


def read_source_table(paths) -> dict[int, dict]:
    """source_id -> {rvs_spec_sig_to_noise, radial_velocity, ...} from gaia_source-like tables (the first
    file that has a source wins). Missing values are NaN."""
    out: dict[int, dict] = {}
    for path in paths:
        cols = read_columns(str(path), set(SOURCE_COLUMNS) | set(ID_COLUMNS))
        id_col = next((c for c in ID_COLUMNS if c in cols), None)
        if id_col is None:
            raise AdapterError(str(path), f"gaia_source table has no source id column (looked for {', '.join(ID_COLUMNS)})")
        ids = _ids(cols[id_col])
        vals = {c: _floats(cols[c]) for c in SOURCE_COLUMNS if c in cols}
        for r, sid in enumerate(ids.tolist()):
            if sid > 0 and sid not in out:
                out[sid] = {c: float(v[r]) for c, v in vals.items()}
    return out
