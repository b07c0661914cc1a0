"""Write astra's file formats (formats.md 2.2-2.5, sdss/datamodel mwmVisit/mwmStar/astraAllStar*, DR20): an
mwmVisit / mwmStar file is a source-summary primary HDU and four BINTABLEs BOSS/APO, BOSS/LCO, APOGEE/APO,
APOGEE/LCO that always exist (empty ones with NAXIS2 = 0 and zero-length vector columns); a summary file
has HDU1 BOSS and HDU2 APOGEE rows. Columns are written in the datamodel's order and types (a subset of the
~60 scalar columns: what a reader could want); pixel_flags of APOGEE is uint64 as astra fills it.

mwm files are written by the small BINTABLE writer below rather than astropy's: astropy byte-swaps vector
columns in Python-sized pieces and formats cards slowly, which made it 90 % of the simulation's time. The
tests read every file back through astropy, so the bytes are checked against a full FITS reader.
"""

from __future__ import annotations

import numpy as np

from pairspec.surveys.apogee.layout import APOGEE_GRID
from pairspec.surveys.sdssv.layout import BOSS_GRID, HDU_NAMES

V_ASTRA = "0.8.1"  # DR20
APOGEE_NPIX, BOSS_NPIX = APOGEE_GRID.npix, BOSS_GRID.npix
_CREATED = "26-01-24 07:09:45"  # fixed, so the same seed gives the same bytes

# (name, FITS format) of the scalar columns written, in the datamodel's order
APOGEE_VISIT_COLS = (
    ("spectrum_pk", "K"), ("catalogid", "K"), ("star_pk", "K"), ("visit_pk", "K"), ("rv_visit_pk", "K"),
    ("release", "5A"), ("filetype", "7A"), ("v_astra", "5A"), ("healpix", "J"), ("sdss_id", "K"), ("apred", "4A"),
    ("plate", "8A"), ("telescope", "6A"), ("fiber", "J"), ("mjd", "J"), ("field", "16A"), ("prefix", "2A"),
    ("reduction", "18A"), ("obj", "18A"), ("date_obs", "26A"), ("jd", "E"), ("exptime", "E"), ("snr", "E"),
    ("in_stack", "L"), ("spectrum_flags", "K"), ("v_rad", "E"), ("v_rel", "E"), ("e_v_rel", "E"), ("bc", "E"),
    ("doppler_teff", "E"), ("doppler_logg", "E"), ("doppler_fe_h", "E"), ("n_components", "J"))
BOSS_VISIT_COLS = (
    ("spectrum_pk", "K"), ("release", "5A"), ("filetype", "7A"), ("v_astra", "5A"), ("healpix", "J"),
    ("sdss_id", "K"), ("run2d", "6A"), ("mjd", "J"), ("fieldid", "J"), ("catalogid", "K"), ("n_exp", "J"),
    ("exptime", "E"), ("telescope", "6A"), ("seeing", "E"), ("airmass", "E"), ("snr", "E"), ("in_stack", "L"),
    ("gri_gaia_transform_flags", "K"), ("zwarning_flags", "K"), ("xcsao_v_rad", "E"), ("xcsao_e_v_rad", "E"),
    ("xcsao_teff", "E"), ("xcsao_logg", "E"), ("xcsao_fe_h", "E"), ("xcsao_rxc", "E"))
APOGEE_STAR_COLS = (
    ("spectrum_pk", "K"), ("release", "5A"), ("filetype", "7A"), ("v_astra", "5A"), ("healpix", "J"),
    ("sdss_id", "K"), ("apred", "4A"), ("obj", "18A"), ("telescope", "6A"), ("min_mjd", "J"), ("max_mjd", "J"),
    ("n_entries", "J"), ("n_visits", "J"), ("n_good_visits", "J"), ("n_good_rvs", "J"), ("snr", "E"),
    ("mean_fiber", "E"), ("std_fiber", "E"), ("spectrum_flags", "K"), ("v_rad", "E"), ("e_v_rad", "E"),
    ("std_v_rad", "E"))
BOSS_STAR_COLS = (
    ("spectrum_pk", "K"), ("release", "5A"), ("filetype", "7A"), ("v_astra", "5A"), ("healpix", "J"),
    ("sdss_id", "K"), ("run2d", "6A"), ("telescope", "6A"), ("min_mjd", "J"), ("max_mjd", "J"), ("n_visits", "J"),
    ("n_good_visits", "J"), ("n_good_rvs", "J"), ("v_rad", "E"), ("e_v_rad", "E"), ("std_v_rad", "E"),
    ("snr", "E"), ("zwarning_flags", "K"))
# vector columns: (name, numpy dtype written)
APOGEE_VECTORS = (("flux", np.float32), ("ivar", np.float32), ("pixel_flags", np.uint64), ("continuum", np.float32))
BOSS_VECTORS = (("flux", np.float32), ("ivar", np.float32), ("wresl", np.float32), ("pixel_flags", np.int32),
                ("continuum", np.float32))
_VECTOR_CODE = {np.float32: "E", np.uint64: "K", np.int32: "J"}
_RAW = {"K": ">i8", "J": ">i4", "E": ">f4"}


def card(key: str, value=None, comment: str = "", value_card: bool = True) -> bytes:
    """One 80-byte FITS header card in the fixed format (strings quoted, numbers right-justified to column
    30, None a blank value as astra writes for a missing count). value_card=False: COMMENT / blank-key text."""
    if not value_card:
        return f"{key:<8}{value or ''}"[:80].ljust(80).encode("ascii")
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = ("T" if value else "F").rjust(20)
    elif isinstance(value, (int, np.integer)):
        text = str(int(value)).rjust(20)
    elif isinstance(value, (float, np.floating)):
        v = repr(float(value)).upper()
        text = (v if ("." in v or "E" in v) else v + ".").rjust(20)
    else:
        text = "'" + str(value).replace("'", "''").ljust(8) + "'"
    body = f"{key:<8}= {text}"
    if comment:
        body += f" / {comment}"
    return body[:80].ljust(80).encode("ascii", "replace")


def _pad(raw: bytes, fill: bytes) -> bytes:
    return raw + fill * (-len(raw) % 2880)


def header_bytes(cards: list[bytes]) -> bytes:
    return _pad(b"".join(cards) + b"END".ljust(80), b" ")


def _raw_column(fmt: str, values: list, n: int):
    """(numpy dtype of the stored field, stored values) of one scalar column."""
    if fmt.endswith("A"):
        width = int(fmt[:-1])
        return f"S{width}", np.array([str(v or "").encode("ascii", "replace")[:width] for v in values], f"S{width}")
    if fmt == "L":
        return "S1", np.array([b"T" if v else b"F" for v in values], "S1")
    if fmt in ("K", "J"):
        return _RAW[fmt], np.array([-1 if v is None else int(v) for v in values])
    return _RAW[fmt], np.array([np.nan if v is None else float(v) for v in values])


def table_hdu_bytes(extra_cards: list[bytes], scalar_cols, vectors, rows: list[dict], npix: int) -> bytes:
    """A BINTABLE HDU (header + data) with one row per dict; empty `rows`: NAXIS2 = 0 and zero-length vector
    columns declared float32 ('0E', TDIM '(0)'), as astra's empty HDUs are."""
    n = len(rows)
    fields, values, forms = [], [], []
    for name, fmt in scalar_cols:
        dt, arr = _raw_column(fmt, [r.get(name) for r in rows], n)
        fields.append((name, dt))
        values.append(arr)
        forms.append((name, fmt, None))
    for name, dtype in vectors:
        if not n:
            forms.append((name, "0E", None))
            continue
        code = _VECTOR_CODE[dtype]
        arr = np.array([r[name] for r in rows]).astype(dtype)
        if dtype is np.uint64:  # FITS has no uint64: store value - 2**63 as int64 with TZERO = 2**63
            arr = (arr ^ np.uint64(1 << 63)).view(np.int64)
        fields.append((name, _RAW[code], (npix,)))
        values.append(arr)
        forms.append((name, f"{npix}{code}", "uint" if dtype is np.uint64 else None))
    data = np.zeros(n, dtype=fields) if fields else np.zeros(n)
    for (name, *_), arr in zip(fields, values):
        data[name] = arr
    cards = [card("XTENSION", "BINTABLE", "binary table extension"), card("BITPIX", 8, "array data type"),
             card("NAXIS", 2, "number of array dimensions"),
             card("NAXIS1", int(data.dtype.itemsize) if n else sum(_width(f) for _, f, _ in forms)),
             card("NAXIS2", n), card("PCOUNT", 0), card("GCOUNT", 1), card("TFIELDS", len(forms))]
    for k, (name, fmt, kind) in enumerate(forms, start=1):
        cards += [card(f"TTYPE{k}", name), card(f"TFORM{k}", fmt)]
        if fmt == "0E":
            cards.append(card(f"TDIM{k}", "(0)"))
        if kind == "uint":
            cards.append(card(f"TZERO{k}", 9223372036854775808))
    return header_bytes(cards + extra_cards) + _pad(data.tobytes() if n else b"", b"\0")


def _width(fmt: str) -> int:
    """Bytes per row of a column of TFORM fmt (for an empty table's NAXIS1)."""
    count = int(fmt[:-1]) if fmt[:-1] else 1
    return count * {"K": 8, "J": 4, "E": 4, "L": 1, "A": 1}[fmt[-1]]


def spectrum_hdu(name: str, rows: list[dict], scalar_cols, vectors, npix: int, wavelength=False) -> bytes:
    """One mwm BINTABLE named `name` ('BOSS/APO' ...), one row per dict of `rows` (empty list: 0 rows), with
    astra's header cards (grid keys without the '1' suffix). No CHECKSUM/DATASUM cards: readers must not
    use them (formats.md 2.2), so the simulator does not spend time on them."""
    instrument, observatory = name.split("/")
    boss = instrument == "BOSS"
    if wavelength:  # mwmStar carries the wavelength array of every row
        wl = (BOSS_GRID if boss else APOGEE_GRID).wavelength().astype(np.float32)
        rows = [dict(r, wavelength=wl) for r in rows]
        vectors = (("wavelength", np.float32),) + tuple(vectors)
    extra = [card("EXTNAME", name), card("OBSRVTRY", observatory, "Observatory"),
             card("INSTRMNT", instrument, "Instrument"), card("V_ASTRA", V_ASTRA, "Astra version"),
             card("CREATED", _CREATED, "File creation time (UTC %y-%m-%d %H:%M:%S)"),
             card("", "", value_card=False), card("", "Wavelength Information (Vacuum)", value_card=False),
             card("", "", value_card=False),
             card("CRVAL", 3.5523 if boss else 4.179, "Log10 of the starting wavelength"),
             card("CDELT", 1e-4 if boss else 6e-6, "Log10 delta wavelength"),
             card("CTYPE", "LOG-LINEAR", "Wavelength axis type"), card("CUNIT", "Angstrom (Vacuum)"),
             card("CRPIX", 1, "Reference pixel"), card("DC-FLAG", 1, "Linear wavelength (0) or logarithmic (1)"),
             card("NPIXELS", npix, "Number of pixels per spectrum")]
    return table_hdu_bytes(extra, scalar_cols, vectors, rows, npix)


def primary_bytes(source: dict) -> bytes:
    """HDU0: the source summary (identifiers, astrometry, photometry, observation counts) and the HDU
    descriptions. `source`: sdss_id, apogee_id, gaia_id, healpix, catalogid, ra, dec, l, b, g/j/h/k_mag,
    v_rad, n_boss, n_apogee and their MJD ranges (None or 0 counts -> a blank card, as astra writes)."""
    cards = [card("SIMPLE", True, "conforms to FITS standard"), card("BITPIX", 8, "array data type"),
             card("NAXIS", 0, "number of array dimensions"), card("EXTEND", True)]
    values = [("V_ASTRA", V_ASTRA), ("CREATED", _CREATED), ("SDSS_ID", source["sdss_id"]),
              ("APOGEEID", source.get("apogee_id") or None), ("GAIA2_ID", source["gaia_id"]),
              ("GAIA3_ID", source["gaia_id"]), ("TIC_ID", None), ("HEALPIX", source["healpix"]),
              ("LEAD", "gaia_dr3_source"), ("VER_ID", 31), ("CAT_ID", source["catalogid"]), ("CAT_ID21", None),
              ("CAT_ID25", None), ("CAT_ID31", source["catalogid"]), ("N_ASSOC", 1), ("N_NEIGH", 0),
              ("RA", source["ra"]), ("DEC", source["dec"]), ("L", source["l"]), ("B", source["b"]),
              ("V_RAD", source.get("v_rad")), ("G_MAG", source["g_mag"]), ("J_MAG", source["j_mag"]),
              ("H_MAG", source["h_mag"]), ("K_MAG", source["k_mag"]), ("N_BOSS", source.get("n_boss") or None),
              ("B_MINMJD", source.get("b_minmjd")), ("N_MAXMJD", source.get("b_maxmjd")),  # sic: astra's name
              ("N_APOGEE", source.get("n_apogee") or None), ("A_MINMJD", source.get("a_minmjd")),
              ("A_MAXMJD", source.get("a_maxmjd"))]
    cards += [card(k, v) for k, v in values]
    cards += [card("", "", value_card=False), card("", "HDU Descriptions", value_card=False),
              card("", "", value_card=False)]
    for line in ("HDU 0: Summary information only", "HDU 1: BOSS spectra from Apache Point Observatory",
                 "HDU 2: BOSS spectra from Las Campanas Observatory",
                 "HDU 3: APOGEE spectra from Apache Point Observatory",
                 "HDU 4: APOGEE spectra from Las Campanas Observatory"):
        cards.append(card("COMMENT", line, value_card=False))
    return header_bytes(cards)


def write_mwm(path, source: dict, hdu_rows: dict[str, list[dict]], star: bool) -> None:
    """An mwmVisit (star=False) or mwmStar file: `hdu_rows` maps 'APOGEE/APO' ... to rows (missing: empty).
    Written to a temporary name and renamed, so a file is either whole or absent."""
    parts = [primary_bytes(source)]
    for name in HDU_NAMES:
        boss = name.startswith("BOSS")
        scalars = (BOSS_STAR_COLS if star else BOSS_VISIT_COLS) if boss else (APOGEE_STAR_COLS if star else
                                                                              APOGEE_VISIT_COLS)
        parts.append(spectrum_hdu(name, hdu_rows.get(name, []), scalars, BOSS_VECTORS if boss else APOGEE_VECTORS,
                                  BOSS_NPIX if boss else APOGEE_NPIX, wavelength=star))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(b"".join(parts))
    tmp.replace(path)


def write_summary(path, pipeline: str, boss: dict[str, np.ndarray], apogee: dict[str, np.ndarray]) -> None:
    """astraAllStar{pipeline}: HDU1 BOSS rows, HDU2 APOGEE rows (dicts of equal-length columns; {} = empty),
    gzip-compressed when the name ends in .gz (as astra ships them)."""
    from astropy.io import fits
    from astropy.table import Table

    hdus = [fits.PrimaryHDU()]
    hdus[0].header["PIPELINE"] = (pipeline, "Pipeline name")
    hdus[0].header["V_ASTRA"] = (V_ASTRA, "Astra version")
    for line in ("HDU 0: Summary information only", "HDU 1: BOSS spectra", "HDU 2: APOGEE spectra"):
        hdus[0].header.append(("COMMENT", line), end=True)
    for instrument, cols in (("BOSS", boss), ("APOGEE", apogee)):
        hdu = fits.table_to_hdu(Table(cols)) if cols else fits.BinTableHDU.from_columns(
            [fits.Column(name="sdss_id", format="K", array=np.zeros(0, np.int64))])
        hdu.header["INSTRMNT"] = (instrument, "Instrument")
        hdu.header["PIPELINE"] = (pipeline, "Pipeline name")
        hdus.append(hdu)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
