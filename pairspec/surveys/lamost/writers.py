"""Writers of LAMOST-format files (the simulator's output, and the tests' hand-made bad files).

They reproduce what the real files show (tests/data/lamost, read with astropy): MRS primary HDU
`Information` (header only), `COADD_B`/`COADD_R` then `B-<LMJM>`... `R-<LMJM>`...; DR7 "rows" layout = one
table row per pixel, columns FLUX, IVAR, LOGLAM (float32 'E') and PIXMASK or ANDMASK, ORMASK (int16 'I'),
with exposures in the order the file gives them (the real R arm runs red to blue); the DR9 v1+ "arrays"
layout (one row of vector columns WAVELENGTH in Angstrom, FLUX, IVAR, masks) follows formats.md 3.2, whose
column types are unverified. LRS "image" = the (5, N) float32 primary image (flux, ivar, wavelength,
andmask, ormask; EXTEN0 names the rows; the DR1 variant puts a "Subcontinuum" in row 2 and the grid in
COEFF0/COEFF1 only), "table" = DR9+ one-row BINTABLE in HDU 1 with float32 masks and NORMALIZATION.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MRS_LAYOUTS = ("rows", "arrays")
LRS_LAYOUTS = ("image", "image_dr1", "table")


def _header(fits, values: dict):
    h = fits.Header()
    for k, v in values.items():
        h[k] = v.item() if isinstance(v, np.generic) else v
    return h


_BLOCK = 2880
_CODES = {"E": ">f4", "I": ">i2", "D": ">f8", "J": ">i4"}


def _padded(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % _BLOCK)


def _mrs_table(fits, name: str, cards: dict, columns: list[tuple[str, str, np.ndarray]], layout: str) -> bytes:
    """One MRS spectrum HDU as FITS bytes. columns: (name, 'E' or 'I', values). Written directly (header
    cards by astropy, data by numpy): astropy's table writer costs ~50 ms per 4136-row HDU."""
    if layout != "rows":
        columns = [("WAVELENGTH" if c == "LOGLAM" else c, f, 10.0 ** np.asarray(a, np.float64) if c == "LOGLAM" else a)
                   for c, f, a in columns]
    n = len(columns[0][2])
    repeat = 1 if layout == "rows" else n
    dtype = np.dtype([(c, _CODES[f], (repeat,)) if repeat > 1 else (c, _CODES[f]) for c, f, _ in columns])
    rec = np.zeros(1 if repeat > 1 else n, dtype=dtype)
    for c, _, a in columns:
        rec[c] = np.asarray(a) if repeat == 1 else np.asarray(a)[None, :]
    h = fits.Header()
    for k, v in (("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", dtype.itemsize),
                 ("NAXIS2", rec.size), ("PCOUNT", 0), ("GCOUNT", 1), ("TFIELDS", len(columns))):
        h[k] = v
    h["EXTNAME"] = name
    for k, v in cards.items():
        h[k] = v
    for i, (c, f, _) in enumerate(columns, start=1):
        h[f"TTYPE{i}"] = c
        h[f"TFORM{i}"] = f"{repeat}{f}" if repeat > 1 else f
    return _padded(h.tostring().encode("ascii"), b" ") + _padded(rec.tobytes())


def write_mrs(path, primary: dict, exposures: list[dict], coadds: dict, layout: str = "rows") -> Path:
    """An MRS file. exposures: dicts arm ("B"/"R"), lmjm, loglam, flux, ivar, pixmask, snr, exptime (arrays
    written in the order given); coadds: {"B"/"R": dict loglam, flux, ivar, andmask, ormask, snr, lmjmlist}."""
    from astropy.io import fits

    if layout not in MRS_LAYOUTS:
        raise ValueError(f"layout={layout!r}; choose one of {MRS_LAYOUTS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdus = []
    for arm in ("B", "R"):
        if arm in coadds:
            c = coadds[arm]
            lists = {f"LMJMLIS{i}": "-".join(str(x) for x in c.get("lmjmlist", [])[3 * i:3 * i + 3])
                     for i in range(max(1, -(-len(c.get("lmjmlist", [])) // 3)))}
            cols = [("FLUX", "E", c["flux"]), ("IVAR", "E", c["ivar"]), ("LOGLAM", "E", c["loglam"]),
                    ("ANDMASK", "I", c["andmask"]), ("ORMASK", "I", c["ormask"])]
            hdus.append(_mrs_table(fits, f"COADD_{arm}", dict(lists, SNR=round(float(c["snr"]), 2),
                                                              LAMPLIST="lampsc_med.dat"), cols, layout))
    for arm in ("B", "R"):
        for e in (e for e in exposures if e["arm"] == arm):
            cols = [("FLUX", "E", e["flux"]), ("IVAR", "E", e["ivar"]), ("LOGLAM", "E", e["loglam"]),
                    ("PIXMASK", "I", e["pixmask"])]
            cards = {"LMJM": str(e["lmjm"]), "EXPTIME": int(e["exptime"]), "SNR": round(float(e["snr"]), 2),
                     "LAMPLIST": "lampsc_med.dat"}
            hdus.append(_mrs_table(fits, f"{arm}-{e['lmjm']}", cards, cols, layout))
    head = fits.PrimaryHDU(header=_header(fits, dict(primary, EXTNAME="Information", N_EXTEN=len(hdus) + 1)))
    with open(path, "wb") as f:
        f.write(_padded(head.header.tostring().encode("ascii"), b" "))
        f.writelines(hdus)
    return path


def write_lrs(path, primary: dict, wavelength, flux, ivar, andmask, ormask, layout: str = "image") -> Path:
    """An LRS file in one of LRS_LAYOUTS; `wavelength` in Angstrom (log-linear, as LAMOST's)."""
    from astropy.io import fits

    if layout not in LRS_LAYOUTS:
        raise ValueError(f"layout={layout!r}; choose one of {LRS_LAYOUTS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = np.asarray(wavelength, dtype=np.float64)
    coeff0, coeff1 = float(np.log10(wave[0])), float(np.log10(wave[-1] / wave[0]) / (wave.size - 1))
    cards = dict(primary, COEFF0=round(coeff0, 6), COEFF1=round(coeff1, 9), CRVAL1=round(coeff0, 6),
                 CD1_1=round(coeff1, 9), CRPIX1=1, CTYPE1="LINEAR", **{"DC-FLAG": 1})
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    if layout == "table":
        n = wave.size
        cols = [fits.Column(name=c, format=f"{n}E", array=f32(a)[None, :]) for c, a in
                (("FLUX", flux), ("IVAR", ivar), ("WAVELENGTH", wave), ("ANDMASK", andmask), ("ORMASK", ormask),
                 ("NORMALIZATION", np.ones(n)))]
        hdus = [fits.PrimaryHDU(header=_header(fits, cards)), fits.BinTableHDU.from_columns(cols, name="COADD")]
    else:
        row2 = wave if layout == "image" else np.ones_like(wave)  # DR1: a "Subcontinuum" there, not lambda
        exten0 = "Flux, Inverse, Wavelength, Andmask, Ormask" if layout == "image" else \
            "Flux Inverse Subcontinuum Andmask Ormask"
        image = np.stack([f32(flux), f32(ivar), f32(row2), f32(andmask), f32(ormask)])
        hdus = [fits.PrimaryHDU(data=image, header=_header(fits, dict(cards, EXTEN0=exten0)))]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
