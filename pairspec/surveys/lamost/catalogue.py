"""Label tables for the LAMOST adapter: LAMOST's own per-spectrum catalogues, and another survey's catalogue
whose labels are transferred by Gaia source id or sky position.

LAMOST spectrum files carry no labels; LAMOST publishes them per spectrum (`obsid`) in its catalogues
(LRS "Stellar Parameter Catalog of A, F, G and K Stars", MRS parameter catalogues), FITS or CSV.
Columns are matched case-insensitively; the first name found wins (names beyond teff, teff_err, logg,
logg_err, feh, feh_err, rv, rv_err, obsid, designation, gaia_source_id are unverified guesses at the
MRS catalogues' pipelines, e.g. teff_lasp / teff_cnn):

| what | names accepted |
|---|---|
| spectrum id | obsid |
| designation | designation, desig ("LAMOST " prefix and case ignored) |
| Gaia id | gaia_source_id, gaia_dr3_source_id, gaiaedr3_source_id, gaia_dr2_source_id, source_id (0 = none) |
| position | ra / ra_obs, dec / dec_obs (degrees) |
| S/N | snr, snrg, snr_g, sn_g (chooses the row of a star with several spectra) |
| radial velocity | rv, rv_br0, rv_lasp, rv_b0, rv_r0 (km/s; the rest-frame shift of MRS spectra) |
| teff, logg | teff, teff_lasp, teff_cnn (+ _err, e_ prefix); logg likewise |
| fe_h | feh, fe_h, feh_lasp, feh_cnn, m_h (+ _err) |
| alpha_fe | alpha_m, alpha_fe, alpha_m_lasp, alpha_m_cnn (+ _err): LASP's [alpha/M], taken as [alpha/Fe] |

`columns={label: column}` (or `{label: [column, err_column]}`) names them explicitly. Sentinels (-9999)
and values outside the schema's range are NaN (LabelSchema.clean); errors <= 0 or NaN are NaN.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pairspec.schema import LabelSchema
from pairspec.surveys.base import AdapterError

LABEL_NAMES = {
    "teff": ("teff", "teff_lasp", "teff_cnn"),
    "logg": ("logg", "logg_lasp", "logg_cnn"),
    "fe_h": ("feh", "fe_h", "feh_lasp", "feh_cnn", "m_h"),
    "alpha_fe": ("alpha_m", "alpha_fe", "alpha_m_lasp", "alpha_m_cnn"),
}
KEY_NAMES = {
    "obsid": ("obsid",),
    "designation": ("designation", "desig"),
    "gaia": ("gaia_source_id", "gaia_dr3_source_id", "gaiaedr3_source_id", "gaia_dr2_source_id", "source_id"),
    "ra": ("ra", "ra_obs"),
    "dec": ("dec", "dec_obs"),
    "snr": ("snr", "snrg", "snr_g", "sn_g"),
    "rv": ("rv", "rv_br0", "rv_lasp", "rv_b0", "rv_r0"),
}


def err_names(column: str) -> tuple[str, ...]:
    return (f"{column}_err", f"e_{column}", f"{column}_error")


def normalise_designation(value) -> str:
    """'LAMOST J192814.09+435531.0' and 'J192814.09+435531.0 ' -> 'J192814.09+435531.0'."""
    s = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    s = s.strip().upper()
    return s[len("LAMOST"):].strip() if s.startswith("LAMOST") else s


def _read_table(path: str) -> dict[str, np.ndarray]:
    """Lower-case column name -> array (first HDU with a table for FITS; CSV/ECSV by astropy)."""
    from astropy.io import fits
    from astropy.table import Table

    p = str(path)
    if not Path(p).is_file():
        raise AdapterError(p, "catalogue file not found")
    name = Path(p).name.lower().removesuffix(".gz")
    try:
        if name.endswith((".fits", ".fit", ".fts")):
            with fits.open(p, memmap=False) as hdul:
                hdu = next((h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))), None)
                if hdu is None:
                    raise AdapterError(p, "no table HDU in this FITS file")
                cols = {}
                for c in hdu.columns.names:
                    cols.setdefault(c.lower(), np.asarray(hdu.data.field(c)))
                return cols
        fmt = "ascii.ecsv" if name.endswith(".ecsv") else "ascii.csv"
        if fmt == "ascii.csv":
            _whole_csv(p)
        table = Table.read(p, format=fmt)
    except AdapterError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise AdapterError(p, f"cannot read catalogue: {exc}") from exc
    cols = {}
    for c in table.colnames:
        col = table[c]
        arr = np.asarray(col.filled(np.nan) if hasattr(col, "filled") and col.dtype.kind == "f" else col)
        cols.setdefault(c.lower(), arr)
    return cols


def _whole_csv(path: str) -> None:
    """AdapterError if a CSV catalogue's last row has fewer fields than its header (a file cut short, whose
    partial row the reader would take as a row of missing values)."""
    import csv
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", errors="replace", newline="") as fh:
            header, last = fh.readline(), ""
            for line in fh:
                if line.strip():
                    last = line
    except (OSError, EOFError) as exc:
        raise AdapterError(path, f"cannot read catalogue: {exc}") from exc
    if not last:
        return
    (head,), (tail,) = csv.reader([header]), csv.reader([last])  # quoted commas are not separators
    if len(tail) < len(head):
        raise AdapterError(path, f"the catalogue is truncated: its last row has {len(tail)} of {len(head)} fields")


def _floats(col) -> np.ndarray:
    try:
        v = np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError):
        v = np.array([_float(x) for x in np.asarray(col).tolist()], dtype=np.float64)
    return np.where(np.isfinite(v) & (v > -9990), v, np.nan)


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _ints(col) -> np.ndarray:
    """int64 ids (0 where missing / not a number)."""
    out = np.zeros(len(col), dtype=np.int64)
    for i, x in enumerate(np.asarray(col).tolist()):
        try:
            out[i] = int(x.strip() if isinstance(x, (str, bytes)) else x)
        except (TypeError, ValueError, OverflowError):
            out[i] = 0
    return np.where(out > 0, out, 0)


class LabelTable:
    """One catalogue's labels (N, K) in schema order, with whatever keys it has to find its rows."""

    def __init__(self, path: str, schema: LabelSchema, columns: dict | None = None):
        self.path = str(path)
        cols = _read_table(self.path)
        self.n_rows = len(next(iter(cols.values()))) if cols else 0
        pick = lambda names: next((cols[n] for n in names if n in cols), None)
        keys = {k: pick(names) for k, names in KEY_NAMES.items()}
        self.obsid = None if keys["obsid"] is None else _ints(keys["obsid"])
        self.designation = None if keys["designation"] is None else np.array(
            [normalise_designation(v) for v in np.asarray(keys["designation"]).tolist()])
        self.gaia = None if keys["gaia"] is None else _ints(keys["gaia"])
        self.ra = None if keys["ra"] is None else _floats(keys["ra"])
        self.dec = None if keys["dec"] is None else _floats(keys["dec"])
        self.snr = None if keys["snr"] is None else _floats(keys["snr"])
        self.rv = None if keys["rv"] is None else _floats(keys["rv"])
        self.rv_column = next((n for n in KEY_NAMES["rv"] if n in cols), "")
        columns = {str(k).lower(): v for k, v in (columns or {}).items()}
        k = len(schema)
        self.labels = np.full((self.n_rows, k), np.nan)
        self.errors = np.full((self.n_rows, k), np.nan)
        self.missing: list[str] = []
        self.used: dict[str, str] = {}
        for j, name in enumerate(schema.names):
            given = columns.get(name)
            given = [given] if isinstance(given, str) else list(given or [])
            names = [str(g).lower() for g in given[:1]] or list(LABEL_NAMES.get(name, (name,)))
            col = next((n for n in names if n in cols), None)
            if col is None:
                if given:
                    raise AdapterError(self.path, f"columns option names {given[0]!r} for {name}, not in the "
                                                  f"catalogue (columns: {', '.join(sorted(cols)[:40])})")
                self.missing.append(name)
                continue
            self.used[name] = col
            self.labels[:, j] = _floats(cols[col])
            ecol = str(given[1]).lower() if len(given) > 1 else next((e for e in err_names(col) if e in cols), None)
            if ecol is not None and ecol in cols:
                self.errors[:, j] = _floats(cols[ecol])
        self.labels = schema.clean(self.labels).astype(np.float64) if self.n_rows else self.labels
        with np.errstate(invalid="ignore"):
            self.errors[~np.isfinite(self.errors) | (self.errors <= 0) | np.isnan(self.labels)] = np.nan
        self._by_obsid = ({int(o): i for i, o in enumerate(self.obsid) if o > 0} if self.obsid is not None else {})
        self._by_desig: dict[str, list[int]] = {}
        if self.designation is not None:
            for i, d in enumerate(self.designation):
                if d:
                    self._by_desig.setdefault(d, []).append(i)
        self._tree = None

    def missing_message(self) -> str:
        return (f"{self.path}: no column for label(s) {', '.join(self.missing)} (looked for "
                + "; ".join(f"{m}: {', '.join(LABEL_NAMES.get(m, (m,)))}" for m in self.missing)
                + "): these labels are NaN for every star; name them with --option 'columns={label: column}'")

    def rows_for(self, obsids, designations) -> list[int]:
        """Catalogue rows of a star's spectra: by obsid where the table has it, else by designation."""
        if self.obsid is None and self.designation is None:
            raise AdapterError(self.path, "the catalogue has neither an obsid nor a designation column (looked for "
                                          f"{', '.join(KEY_NAMES['obsid'] + KEY_NAMES['designation'])}), so no row "
                                          "can be matched to a spectrum file")
        rows = []
        if self._by_obsid:
            rows = [self._by_obsid[o] for o in obsids if o in self._by_obsid]
        if not rows and self._by_desig:
            for d in designations:
                rows.extend(self._by_desig.get(normalise_designation(d), []))
        return sorted(set(rows))

    def best(self, rows: list[int]) -> int:
        """The row with the highest S/N (the first when the table has no S/N or ties)."""
        if not rows:
            return -1
        if self.snr is None:
            return rows[0]
        snr = [self.snr[r] if math.isfinite(self.snr[r]) else -math.inf for r in rows]
        return rows[int(np.argmax(snr))]

    def match(self, gaia: int, ra: float, dec: float, radius_arcsec: float) -> int:
        """Row of a star in this (other survey's) table: same Gaia id if both have one, else the nearest
        row within radius_arcsec; -1 if none."""
        if gaia > 0 and self.gaia is not None:
            hit = np.flatnonzero(self.gaia == gaia)
            if hit.size:
                return int(hit[0])
        if self.ra is None or self.dec is None or not (math.isfinite(ra) and math.isfinite(dec)):
            return -1
        if self._tree is None:
            from scipy.spatial import cKDTree

            ok = np.isfinite(self.ra) & np.isfinite(self.dec)
            self._tree_rows = np.flatnonzero(ok)
            self._tree = cKDTree(unit_vectors(self.ra[ok], self.dec[ok]))
        if not self._tree_rows.size:
            return -1
        dist, k = self._tree.query(unit_vectors(np.array([ra]), np.array([dec]))[0])
        return int(self._tree_rows[k]) if dist <= chord(radius_arcsec) else -1


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)


def chord(radius_arcsec: float) -> float:
    """Chord length on the unit sphere of an angular radius."""
    return 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
