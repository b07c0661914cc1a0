"""Read the HDUs of one instrument from an astra mwmVisit / mwmStar file (formats.md 2.2-2.4).

Everything that can be wrong with a file becomes an AdapterError naming the file and the HDU: not FITS,
cut short, an HDU missing, a table without flux / ivar, a grid that is not the instrument's. Empty HDUs
are found by their row count (NAXIS2 = 0), never by DATASUM, and their data are never touched (astra
writes zero-length vector columns there, declared float32 even for pixel_flags).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.surveys.base import AdapterError
from pairspec.surveys.fitsutil import fits_layout
from pairspec.surveys.sdssv.layout import HDU_NAMES, SITES

# Grid cards of an mwm HDU (no "1" suffix, formats.md 2.2), with the apStar-style names as a fallback.
_GRID_KEYS = {"crval": ("CRVAL", "CRVAL1"), "cdelt": ("CDELT", "CDELT1"), "npix": ("NPIXELS", "NWAVE")}


@dataclass
class MwmHdu:
    """One instrument x observatory HDU: its name, row count, header values and the wanted columns
    (lower-case names; strings stripped; vectors (n_rows, npix)). Empty HDUs have no columns."""

    name: str
    n_rows: int
    header: dict
    columns: dict = field(default_factory=dict)

    def get(self, name: str, default=None):
        """Column `name` as an array of n_rows values, or `default` repeated when the file lacks it."""
        if name in self.columns:
            return self.columns[name]
        return np.array([default] * self.n_rows, dtype=object)


def _plain(value):
    """A header value as plain Python (astropy's Undefined -> None)."""
    if value is None or type(value).__name__ == "Undefined":
        return None
    return value.item() if isinstance(value, np.generic) else value


def _header_dict(header) -> dict:
    return {k: _plain(v) for k, v in header.items() if k and k not in ("COMMENT", "HISTORY")}


def as_bitmask(values: np.ndarray, path: str, what: str) -> np.ndarray:
    """pixel_flags as int64 whatever astra stored: uint64 (TZERO-shifted 'K'), int, bool or float.
    A float column must hold non-negative whole numbers (NaN counts as no flag)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)  # uint64 above 2**63 wraps onto the sign bit: bit 63 stays bit 63
    if arr.dtype.kind == "f":
        clean = np.where(np.isfinite(arr), arr, 0.0)
        if (clean < 0).any() or (clean != np.floor(clean)).any():
            raise AdapterError(path, f"{what}: pixel_flags has non-integer values; expected a bitmask")
        return clean.astype(np.int64)
    raise AdapterError(path, f"{what}: pixel_flags has dtype {arr.dtype}; expected an integer bitmask")


def _column(data, name: str, path: str, what: str):
    arr = np.asarray(data.field(name))
    if arr.dtype.kind in "SU":
        return np.char.strip(arr.astype(str))
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _check_grid(path: str, what: str, header: dict, npix_found: int, grid: LogLinearGrid) -> None:
    """The HDU's grid cards (when present) and its vector length must be the instrument's grid."""
    found = {k: next((header[c] for c in cards if header.get(c) is not None), None) for k, cards in _GRID_KEYS.items()}
    crval = grid.crval1 if found["crval"] is None else found["crval"]
    cdelt = grid.cdelt1 if found["cdelt"] is None else found["cdelt"]
    try:
        ok = grid.matches(float(crval), float(cdelt), int(npix_found))
        if found["npix"] is not None:
            ok = ok and int(found["npix"]) == grid.npix
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise AdapterError(path, f"{what}: wrong wavelength grid: CRVAL={found['crval']} CDELT={found['cdelt']} "
                                 f"NPIXELS={found['npix']}, vectors of {npix_found} px; expected CRVAL={grid.crval1} "
                                 f"CDELT={grid.cdelt1} NPIXELS={grid.npix}")


def _find_hdu(hdul, name: str):
    """The HDU with EXTNAME `name`, else the one at astra's position when it has no EXTNAME, else None."""
    for hdu in hdul[1:]:
        if str(hdu.header.get("EXTNAME", "")).strip().upper() == name:
            return hdu
    k = HDU_NAMES.index(name) + 1
    if k < len(hdul) and not str(hdul[k].header.get("EXTNAME", "")).strip():
        return hdul[k]
    return None


def read_mwm(path: str, instrument: str, grid: LogLinearGrid, wanted) -> tuple[dict, dict[str, MwmHdu]]:
    """(primary header values, {site: MwmHdu}) of `instrument`'s two HDUs in an mwmVisit/mwmStar file.
    `wanted`: lower-case column names to read (those present are returned); flux and ivar are required
    in every non-empty HDU."""
    from astropy.io import fits

    path = str(path)
    wanted = set(wanted) | {"flux", "ivar"}
    try:
        if not path.endswith(".gz"):
            fits_layout(path)  # a cut or non-FITS file is named here, before astropy parses anything
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*truncated.*")  # astropy only warns on a short file
            with fits.open(path, memmap=False) as hdul:
                primary = _header_dict(hdul[0].header)
                out = {}
                for site in SITES:
                    name = f"{instrument.upper()}/{site.upper()}"
                    out[site] = _read_hdu(path, hdul, name, grid, wanted)
                return primary, out
    except AdapterError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, UserWarning) as exc:
        raise AdapterError(path, f"cannot read FITS: {exc}") from exc


def _read_hdu(path: str, hdul, name: str, grid: LogLinearGrid, wanted: set) -> MwmHdu:
    from astropy.io import fits

    hdu = _find_hdu(hdul, name)
    if hdu is None:
        raise AdapterError(path, f"missing HDU {name}: the file has {len(hdul)} HDU(s); astra writes 5 "
                                 f"(PRIMARY, {', '.join(HDU_NAMES)}), empty ones with 0 rows")
    what = f"HDU {name}"
    if not isinstance(hdu, fits.BinTableHDU):
        raise AdapterError(path, f"{what} is {type(hdu).__name__}, expected a binary table")
    header = _header_dict(hdu.header)
    n_rows = int(header.get("NAXIS2") or 0)
    if n_rows == 0:
        return MwmHdu(name, 0, header)
    names = {n.lower(): n for n in hdu.columns.names}
    missing = [c for c in ("flux", "ivar") if c not in names]
    if missing:
        raise AdapterError(path, f"{what} lacks column(s) {missing}")
    data = hdu.data
    cols = {c: _column(data, names[c], path, what) for c in sorted(wanted) if c in names}
    for c in ("flux", "ivar", "pixel_flags", "continuum"):
        if c in cols and cols[c].ndim != 2:
            cols[c] = cols[c].reshape(n_rows, -1)
    npix = cols["flux"].shape[1]
    _check_grid(path, what, header, npix, grid)
    if cols["ivar"].shape != cols["flux"].shape:
        raise AdapterError(path, f"{what}: ivar has shape {cols['ivar'].shape}, flux {cols['flux'].shape}")
    if "pixel_flags" in cols:
        if cols["pixel_flags"].shape != cols["flux"].shape:
            raise AdapterError(path, f"{what}: pixel_flags has shape {cols['pixel_flags'].shape}, "
                                     f"flux {cols['flux'].shape}")
        cols["pixel_flags"] = as_bitmask(cols["pixel_flags"], path, what)
    return MwmHdu(name, n_rows, header, cols)


def primary_counts(path: str) -> dict:
    """N_APOGEE / N_BOSS / SDSS_ID of an mwmVisit primary header, from its raw cards alone: discovery opens
    every file, so it reads the first header's few 2880-byte blocks and nothing else. Values: int, or None
    for a blank card (astra leaves N_APOGEE blank when a source has no APOGEE spectra); a key the header
    lacks is absent. AdapterError when the file does not start as FITS or its first header is cut."""
    from pairspec.surveys.fitsutil import HeaderValues

    path = str(path)
    if path.endswith(".gz"):
        return {}  # compressed: the reader decides
    cards: dict[str, bytes] = {}
    with open(path, "rb") as f:
        for k in range(_MAX_PRIMARY_BLOCKS):
            block = f.read(_BLOCK)
            if k == 0 and not block.startswith(b"SIMPLE  ="):
                raise AdapterError(path, "cannot read FITS: not a FITS file (no SIMPLE card)")
            if len(block) < _BLOCK:
                raise AdapterError(path, "cannot read FITS: file is truncated (inside the primary header)")
            for i in range(0, _BLOCK, 80):
                card = block[i:i + 80]
                key = card[:8].rstrip().decode("ascii", "replace")
                if key == "END":
                    return _counts(HeaderValues(cards))
                if card[8:10] == b"= ":
                    cards[key] = card[10:]
    raise AdapterError(path, f"cannot read FITS: no END card in the first {_MAX_PRIMARY_BLOCKS} header blocks")


_BLOCK, _MAX_PRIMARY_BLOCKS = 2880, 64


def _counts(values) -> dict:
    out = {}
    for key in ("N_APOGEE", "N_BOSS", "SDSS_ID"):
        if key in values:
            v = values[key]
            out[key] = int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
    return out
