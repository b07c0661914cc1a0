"""Readers of LAMOST's published spectrum files (formats.md section 3), both layouts of each survey:

- MRS `med-*.fits[.gz]`: HDUs by EXTNAME, `COADD_B`/`COADD_R` (one night's coadd per arm) and one
  `B-<LMJM>`/`R-<LMJM>` per exposure and arm. DR7-DR9 v0 write one table row per pixel (columns LOGLAM,
  FLUX, IVAR, PIXMASK or ANDMASK/ORMASK); DR9 v1 and later one row of array columns (WAVELENGTH or
  LOGLAM, FLUX, IVAR, ...). Rows are not guaranteed sorted (the R arm of the real DR7 files runs
  red to blue), so every arm is sorted by wavelength here.
- LRS `spec-*.fits[.gz]`: DR1-DR8 a primary image (5, N): flux, ivar, row 2, ANDMASK, ORMASK, where
  row 2 is the wavelength from DR2 on but the "Subcontinuum" in DR1 (EXTEN0 says which: the real DR1
  files), so the wavelength is rebuilt from COEFF0/COEFF1 (or CRVAL1/CD1_1) when row 2 is not one;
  DR9+ one row of array columns in HDU1 (FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK as float32 ...).
The layout is told by structure, never by the DATA_V release string. Every problem is an AdapterError
naming the file; nothing deep inside astropy escapes.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from pairspec.surveys.base import AdapterError
from pairspec.surveys.lamost.layout import ANDMASK_SHIFT, OWN_MASK_BITS

_EXPOSURE = re.compile(r"^([BR])-(\d+)$")
# wavelength range (Angstrom) a file's arm must fall in; wider than the published ranges
_ARM_LIMITS = {"B": (4800.0, 5500.0), "R": (6150.0, 6950.0), "LRS": (3500.0, 9500.0)}
PRIMARY_KEYS = ("OBSID", "DESIG", "OBJNAME", "RA", "DEC", "RA_OBS", "DEC_OBS", "LMJD", "MJD", "PLANID", "SPID",
                "FIBERID", "DATA_V", "HELIO", "HELIO_RV", "VACUUM", "Z", "Z_ERR", "CLASS", "SNRG", "SN_G", "SNRR",
                "SN_R", "DATE-OBS", "FIBERTYP", "FIBERMAS", "TSOURCE", "EXTEN0", "COEFF0", "COEFF1", "CRVAL1",
                "CD1_1", "CDELT1", "CRPIX1", "EXPTIME")


@dataclass
class Arm:
    """One spectrum of one arm as the file holds it, sorted by wavelength (float64, native order).
    `bits` is the pairspec pixmask encoding (layout.py): own mask in bits 0-15, ANDMASK << 16."""

    loglam: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    bits: np.ndarray
    own_mask: np.ndarray  # PIXMASK (exposure) or ORMASK (coadd, LRS), int64
    and_mask: np.ndarray | None  # ANDMASK where the file has one
    snr: float = math.nan  # header SNR of the HDU (MRS) / SNRG or SN_G (LRS)
    exptime: float = math.nan


@dataclass
class MrsFile:
    path: str
    header: dict
    exposures: dict[int, dict[str, Arm]] = field(default_factory=dict)  # LMJM -> {"B": Arm, "R": Arm}
    coadds: dict[str, Arm] = field(default_factory=dict)  # "B"/"R" -> the night's coadd
    layout: str = ""  # "rows" (DR7) or "arrays" (DR9 v1+)


@dataclass
class LrsFile:
    path: str
    header: dict
    spectrum: Arm
    layout: str = ""  # "image" (DR1-DR8) or "table" (DR9+)


def text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return "" if value is None else str(value).strip()


def as_float(value) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) and f > -9990 else math.nan  # LAMOST writes -9999 for "none"


def _open(path: str):
    """astropy HDUList, fully read. A cut file is an AdapterError: plain files are checked block by block
    (fitsutil.fits_layout), .gz files are decompressed here, because astropy silently returns the HDUs
    before the cut of a truncated gzip stream (seen with a real MRS file cut in half)."""
    import gzip
    import io
    import zlib

    from astropy.io import fits

    try:
        if path.endswith(".gz"):
            with open(path, "rb") as f:
                source = io.BytesIO(gzip.decompress(f.read()))
        else:
            from pairspec.surveys.fitsutil import fits_layout

            fits_layout(path)
            source = path
    except (OSError, EOFError, zlib.error) as exc:
        raise AdapterError(path, f"cannot read FITS: corrupt or truncated gzip file ({exc})") from exc
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*(truncated|[Cc]orrupt).*")
            hdul = fits.open(source, memmap=False, lazy_load_hdus=False)
            for hdu in hdul:
                _ = hdu.data  # force the read: a cut file fails here, not later
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, UserWarning) as exc:
        raise AdapterError(path, f"cannot read FITS: {exc}") from exc
    n_exten = hdul[0].header.get("N_EXTEN")
    if isinstance(n_exten, int) and n_exten > len(hdul):
        hdul.close()
        raise AdapterError(path, f"cannot read FITS: file is truncated (N_EXTEN = {n_exten}, {len(hdul)} HDUs found)")
    return hdul


def read_primary(path: str) -> dict:
    """The primary-header values of PRIMARY_KEYS (missing ones absent): what discovery needs, read cheaply.
    Plain .fits: raw header blocks (fitsutil; also finds a file cut short); .gz: astropy's first header."""
    if not str(path).endswith(".gz"):
        from pairspec.surveys.fitsutil import fits_layout, header_values

        hdus = fits_layout(str(path))
        values = header_values(str(path), hdus[0])
        return {k: values[k] for k in PRIMARY_KEYS if k in values}
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(path, 0)
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        raise AdapterError(str(path), f"cannot read FITS: {exc}") from exc
    return {k: header[k] for k in PRIMARY_KEYS if k in header}


def _columns(path: str, hdu) -> dict[str, np.ndarray]:
    """Upper-case column name -> float64/int64 1-D array (row layout, or the one row of array columns)."""
    from astropy.io import fits

    if not isinstance(hdu, fits.BinTableHDU) or hdu.data is None:
        raise AdapterError(path, f"HDU {hdu.name!r} is not a binary table with data")
    data = hdu.data
    out = {}
    for name in hdu.columns.names:
        col = np.asarray(data.field(name))
        if col.ndim == 2:  # array layout: one row of vectors
            if col.shape[0] != 1:
                raise AdapterError(path, f"HDU {hdu.name!r}: {col.shape[0]} rows of array columns, expected 1")
            col = col[0]
        out[name.upper()] = col
    return out


def _mask(col, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 mask, bool non-finite) of a mask column that may be float (DR9+ LRS) or absent."""
    if col is None:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    col = np.asarray(col)
    if col.dtype.kind == "f":
        bad = ~np.isfinite(col)
        return np.where(bad, 0, np.rint(np.where(bad, 0, col))).astype(np.int64), bad
    return col.astype(np.int64), np.zeros(n, dtype=bool)


def _arm(path: str, where: str, wave, flux, ivar, own, andm, limits, snr=math.nan, exptime=math.nan) -> Arm:
    """Validated, wavelength-sorted Arm. `wave`: log10(lambda) or Angstrom (told apart by value)."""
    n = len(flux)
    if n < 10 or len(wave) != n or len(ivar) != n:
        raise AdapterError(path, f"{where}: inconsistent lengths wavelength {len(wave)}, flux {n}, ivar {len(ivar)}")
    wave = np.asarray(wave, dtype=np.float64)
    if not np.isfinite(wave).all():
        raise AdapterError(path, f"{where}: wavelength has NaN/inf")
    loglam = wave if np.nanmedian(wave) < 10 else np.log10(np.where(wave > 0, wave, np.nan))
    if not np.isfinite(loglam).all():
        raise AdapterError(path, f"{where}: wavelength has non-positive values")
    order = np.argsort(loglam, kind="stable")
    loglam = loglam[order]
    if np.any(np.diff(loglam) <= 0):
        raise AdapterError(path, f"{where}: wrong wavelength grid: repeated wavelengths")
    lo, hi = 10 ** loglam[0], 10 ** loglam[-1]
    if lo < limits[0] or hi > limits[1]:
        raise AdapterError(path, f"{where}: wrong wavelength grid: covers {lo:.1f}-{hi:.1f} A, expected within "
                                 f"{limits[0]:.0f}-{limits[1]:.0f} A")
    own_mask, own_nan = _mask(own, n)
    and_mask, and_nan = (None, np.zeros(n, dtype=bool)) if andm is None else _mask(andm, n)
    bits = own_mask & OWN_MASK_BITS
    if and_mask is not None:
        bits = bits | ((and_mask & OWN_MASK_BITS) << ANDMASK_SHIFT)
    flux = np.asarray(flux, dtype=np.float64)[order]
    ivar = np.asarray(ivar, dtype=np.float64)[order]
    bad_mask = (own_nan | and_nan)[order]
    ivar = np.where(bad_mask, 0.0, ivar)
    return Arm(loglam, flux, ivar, bits[order], own_mask[order], None if and_mask is None else and_mask[order],
               snr=snr, exptime=exptime)


def read_mrs(path: str) -> MrsFile:
    """Every exposure and coadd of one MRS file (either layout)."""
    path = str(path)
    hdul = _open(path)
    try:
        header = dict(hdul[0].header)
        out = MrsFile(path=path, header=header)
        layouts = set()
        for hdu in hdul[1:]:
            name = text(hdu.name).upper()
            m = _EXPOSURE.match(name)
            if not (m or name in ("COADD_B", "COADD_R")):
                continue  # an HDU this reader does not know: not part of the spectra
            arm = m.group(1) if m else name[-1]
            cols = _columns(path, hdu)
            wave = cols.get("LOGLAM", cols.get("WAVELENGTH"))
            if wave is None or "FLUX" not in cols or "IVAR" not in cols:
                raise AdapterError(path, f"HDU {name}: needs FLUX, IVAR and LOGLAM or WAVELENGTH, has {sorted(cols)}")
            layouts.add("arrays" if np.ndim(hdu.data.field(hdu.columns.names[0])) == 2 else "rows")
            hdr = hdu.header
            snr = as_float(hdr.get("SNR"))
            if m:
                spec = _arm(path, f"HDU {name}", wave, cols["FLUX"], cols["IVAR"], cols.get("PIXMASK"), None,
                            _ARM_LIMITS[arm], snr, as_float(hdr.get("EXPTIME")))
                lmjm = int(m.group(2))
                if arm in out.exposures.get(lmjm, {}):
                    raise AdapterError(path, f"duplicate HDU {name}")
                out.exposures.setdefault(lmjm, {})[arm] = spec
            else:
                own = cols.get("ORMASK", cols.get("PIXMASK"))
                out.coadds[arm] = _arm(path, f"HDU {name}", wave, cols["FLUX"], cols["IVAR"], own,
                                       cols.get("ANDMASK"), _ARM_LIMITS[arm], snr)
        if not out.exposures and not out.coadds:
            raise AdapterError(path, "not an MRS file: no COADD_B/COADD_R or B-<LMJM>/R-<LMJM> HDU")
        out.layout = "+".join(sorted(layouts))
        return out
    finally:
        hdul.close()


def _lrs_wavelength(path: str, header: dict, n: int, row2) -> np.ndarray:
    """The wavelength of an image-layout LRS file: row 2 when it is one (DR2+: EXTEN0 names it, or its
    values look like Angstrom), else from COEFF0/COEFF1 or CRVAL1/CD1_1/CRPIX1 (log-linear)."""
    names = text(header.get("EXTEN0")).lower().replace(",", " ").split()
    if len(names) >= 3 and names[2].startswith("wave"):
        return np.asarray(row2, dtype=np.float64)
    looks_like_wave = np.all(np.isfinite(row2)) and 3000 < np.min(row2) and np.max(row2) < 10000
    if not names and looks_like_wave and np.all(np.diff(row2) > 0):
        return np.asarray(row2, dtype=np.float64)
    c0 = as_float(header.get("COEFF0", header.get("CRVAL1")))
    c1 = as_float(header.get("COEFF1", header.get("CD1_1", header.get("CDELT1"))))
    crpix = as_float(header.get("CRPIX1")) if "COEFF0" not in header else 1.0
    if not (math.isfinite(c0) and math.isfinite(c1) and c1 > 0):
        raise AdapterError(path, f"no wavelength: row 2 is {names[2] if len(names) > 2 else 'not a wavelength'} and "
                                 f"COEFF0/COEFF1 (or CRVAL1/CD1_1) are missing")
    crpix = 1.0 if not math.isfinite(crpix) else crpix
    return c0 + c1 * (np.arange(n, dtype=np.float64) + 1.0 - crpix)  # log10, told apart by value in _arm


def read_lrs(path: str) -> LrsFile:
    """The spectrum of one LRS file (image layout DR1-DR8 or table layout DR9+)."""
    path = str(path)
    hdul = _open(path)
    try:
        header = dict(hdul[0].header)
        snr = as_float(header.get("SNRG", header.get("SN_G")))
        exptime = as_float(header.get("EXPTIME"))
        data0 = hdul[0].data
        if data0 is not None and np.ndim(data0) == 2:
            img = np.asarray(data0, dtype=np.float64)
            if img.shape[0] < 3:
                raise AdapterError(path, f"primary image has shape {img.shape}, expected (5, N)")
            n = img.shape[1]
            wave = _lrs_wavelength(path, header, n, img[2])
            andm = img[3] if img.shape[0] > 3 else None
            orm = img[4] if img.shape[0] > 4 else None
            spec = _arm(path, "primary image", wave, img[0], img[1], orm, andm, _ARM_LIMITS["LRS"], snr, exptime)
            return LrsFile(path, header, spec, "image")
        if len(hdul) > 1:
            cols = _columns(path, hdul[1])
            wave = cols.get("WAVELENGTH", cols.get("LOGLAM"))
            if wave is None or "FLUX" not in cols or "IVAR" not in cols:
                raise AdapterError(path, f"HDU1: needs FLUX, IVAR and WAVELENGTH, has {sorted(cols)}")
            spec = _arm(path, "HDU1", wave, cols["FLUX"], cols["IVAR"], cols.get("ORMASK"), cols.get("ANDMASK"),
                        _ARM_LIMITS["LRS"], snr, exptime)
            return LrsFile(path, header, spec, "table")
        raise AdapterError(path, "not an LRS file: no (5, N) primary image and no HDU1 table")
    finally:
        hdul.close()
