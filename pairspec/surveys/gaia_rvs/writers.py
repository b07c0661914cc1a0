"""Writers of the Gaia RVS file layouts (formats.md 4.2, 4.3), used by the simulator and the tests.

- `write_bulk_ecsv`: Gaia's bulk CSV (RvsMeanSpectrum_*.csv.gz, GaiaSource_*, AstrophysicalParameters_*):
  '#' ECSV YAML header (block-style column list, as the DuckDB ingest script of the real files greps it),
  a header row, one row per source, arrays as one quoted JSON field with `null` for NaN, `null` scalars.
- `write_pixel_table`: a datalink INDIVIDUAL file (FITS / ECSV / VOTable / CSV by suffix): one row per
  wavelength (`wavelength` nm, `flux`, `flux_error`), the scalars in the header (FITS HIERARCH keywords,
  ECSV meta, VOTable PARAMs; a CSV has none: the reader takes the source id from the file name).
- `write_array_table`: a datalink RAW file (FITS / VOTable): one row per source with 2401-value arrays.
  Epoch products (DR4, unverified) are array tables with one row per transit and an `obs_time_rv` column.
Column descriptions are Gaia's (rvs_mean_spectrum data model); what the real headers hold beyond the
column list is not verified, so the reader depends on none of it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from pairspec.surveys.gaia_rvs.layout import wavelength_nm

DESCRIPTIONS = {
    "solution_id": "Solution Identifier", "source_id": "Unique source identifier (unique within a particular Data Release)",
    "ra": "Right Ascension", "dec": "Declination", "flux": "Normalised mean flux",
    "flux_error": "Uncertainty on the normalised mean flux", "combined_transits": "Number of combined transits",
    "combined_ccds": "Number of combined CCD spectra", "deblended_ccds": "Number of deblended CCD spectra",
}
UNITS = {"ra": "deg", "dec": "deg", "radial_velocity": "km.s**-1", "teff_gspspec": "K", "logg_gspspec": "log(cm.s**-2)",
         "mh_gspspec": "dex", "alphafe_gspspec": "dex", "wavelength": "nm"}


def _ecsv_type(values) -> tuple[str, str | None]:
    arr = np.asarray(values)
    if arr.ndim == 2:
        return "string", "float32[null]"
    if arr.dtype.kind in "iu":
        return ("int16" if arr.dtype.itemsize <= 2 else "int64"), None
    if arr.dtype.kind == "b":
        return "bool", None
    if arr.dtype.kind == "f":
        return ("float32" if arr.dtype.itemsize == 4 else "float64"), None
    return "string", None


def _cell(v) -> str:
    if isinstance(v, np.ndarray):
        v = np.where(np.isfinite(v), v, np.nan)  # JSON has no inf either: both become null
        body = (",".join(["%.7g"] * v.size) % tuple(v.tolist())).replace("nan", "null")
        return '"[' + body + ']"'
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "null"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    text = str(v)
    return f'"{text}"' if ("," in text or '"' in text) else text


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def write_bulk_ecsv(path, columns: dict, meta: dict | None = None) -> Path:
    """A Gaia bulk CSV file (gzipped when the name ends in .gz); `columns` name -> (n,) or (n, 2401) arrays."""
    path = Path(path)
    names = list(columns)
    n = len(next(iter(columns.values())))
    head = ["# %ECSV 1.0", "# ---", "# delimiter: ','", "# datatype:"]
    for name in names:
        dtype, subtype = _ecsv_type(columns[name])
        head += ["# -", f"#   name: {name}", f"#   datatype: {dtype}"]
        if subtype:
            head.append(f"#   subtype: {subtype}")
        if name in UNITS:
            head.append(f"#   unit: {UNITS[name]}")
        if name in DESCRIPTIONS:
            head.append(f"#   description: {DESCRIPTIONS[name]}")
    if meta:
        head.append("# meta:")
        head += [f"#   {k}: {v}" for k, v in meta.items()]
    lines = head + [",".join(names)]
    cols = [np.asarray(columns[k]) for k in names]
    for r in range(n):
        lines.append(",".join(_cell(np.asarray(c[r], np.float64)) if c.ndim == 2 else _cell(_py(c[r]))
                              for c in cols))
    text = ("\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=5, mtime=0) as f:
            f.write(text)  # mtime 0 and no name: the same seed gives the same bytes
    else:
        path.write_bytes(text)
    return path


def _pixel_rows(wave, flux, error, sep: str, null: str) -> str:
    """The rows of a pixel table as text in one formatting call (2401 rows: astropy's writers take ~0.3 s)."""
    f = np.where(np.isfinite(flux), flux, np.nan)
    e = np.where(np.isfinite(error), error, np.nan)
    cells = np.stack([wave, f, e], axis=1).ravel().tolist()
    line = sep.join(["%.4f", "%.7g", "%.7g"])
    return ("\n".join([line] * wave.size) % tuple(cells)).replace("nan", null) + "\n"


def write_pixel_table(path, flux, flux_error, scalars: dict, wavelength=None) -> Path:
    """One datalink INDIVIDUAL spectrum file (format from the suffix: .fits, .ecsv, .xml, .csv)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = wavelength_nm() if wavelength is None else np.asarray(wavelength, dtype=np.float64)
    flux, error = np.asarray(flux, np.float32), np.asarray(flux_error, np.float32)
    name = path.name.lower()
    if name.endswith(".fits"):
        from astropy.io import fits

        hdu = fits.BinTableHDU.from_columns([fits.Column("wavelength", "D", unit="nm", array=wave),
                                             fits.Column("flux", "E", array=flux), fits.Column("flux_error", "E", array=error)])
        for k, v in scalars.items():
            hdu.header[f"HIERARCH {k}"] = v
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
    elif name.endswith(".ecsv"):  # astropy's ECSV: space-delimited, empty field for a missing value
        head = ["# %ECSV 1.0", "# ---", "# datatype:", "# - {name: wavelength, unit: nm, datatype: float64}",
                "# - {name: flux, datatype: float32}", "# - {name: flux_error, datatype: float32}", "# meta:"]
        head += [f"#   {k}: {v!r}" if isinstance(v, str) else f"#   {k}: {v}" for k, v in scalars.items()]
        head.append("# schema: astropy-2.0")
        path.write_text("\n".join(head) + "\nwavelength flux flux_error\n" + _pixel_rows(wave, flux, error, " ", '""'))
    elif name.endswith(".csv"):
        path.write_text("wavelength,flux,flux_error\n" + _pixel_rows(wave, flux, error, ",", ""))
    elif name.endswith(".xml"):
        _write_votable(path, wave, flux, error, scalars)
    else:
        raise ValueError(f"{path}: unknown datalink format (use .fits, .ecsv, .csv or .xml)")
    return path


def _write_votable(path: Path, wave, flux, error, scalars: dict) -> None:
    """A VOTable 1.4 TABLEDATA file (the archive's "votable_plain") with the scalars as PARAMs."""
    from xml.sax.saxutils import quoteattr

    params = []
    for k, v in scalars.items():
        if isinstance(v, (bool, np.bool_)):
            kind, text = "boolean", "T" if v else "F"
        elif isinstance(v, (int, np.integer)):
            kind, text = "long", str(int(v))
        elif isinstance(v, (float, np.floating)):
            kind, text = "double", repr(float(v))
        else:
            kind, text = "char", str(v)
        size = ' arraysize="*"' if kind == "char" else ""
        params.append(f'   <PARAM name={quoteattr(k)} datatype="{kind}"{size} value={quoteattr(text)}/>')
    rows = _pixel_rows(wave, flux, error, "</TD><TD>", "NaN").splitlines()
    body = "\n".join(f"     <TR><TD>{r}</TD></TR>" for r in rows)
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        ' <RESOURCE type="results">\n  <TABLE name="rvs_mean_spectrum">\n' + "\n".join(params) + "\n"
        '   <FIELD name="wavelength" datatype="double" unit="nm"/>\n'
        '   <FIELD name="flux" datatype="float"/>\n   <FIELD name="flux_error" datatype="float"/>\n'
        "   <DATA>\n    <TABLEDATA>\n" + body + "\n    </TABLEDATA>\n   </DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n")


def write_array_table(path, columns: dict, votable_format: str = "binary2") -> Path:
    """A datalink RAW file (or an epoch product): one row per source/transit; .fits, .xml (VOTable in
    `votable_format`: binary2 or tabledata) or .csv[.gz] (bulk layout) by suffix."""
    from astropy.table import Table

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = Table({k: (np.asarray(v, np.float32) if np.asarray(v).ndim == 2 else np.asarray(v)) for k, v in columns.items()})
    for k in t.colnames:
        if k in UNITS:
            t[k].unit = UNITS[k]
    if path.name.lower().endswith(".fits"):
        t.write(path, format="fits", overwrite=True)
    elif path.name.lower().endswith(".xml"):
        t.write(path, format="votable", overwrite=True, tabledata_format=votable_format)
    elif path.name.lower().endswith((".csv", ".csv.gz", ".ecsv", ".ecsv.gz")):
        write_bulk_ecsv(path, columns)
    else:
        raise ValueError(f"{path}: unknown RAW format (use .fits, .xml or .csv[.gz])")
    return path
