"""Helpers, no tests: small astra-format files for the SDSS-V adapter tests, written with astropy rather
than the simulator's own writer, so the adapter is checked against a second FITS writer: mwmVisit /
mwmStar files with the five HDUs, astraAllStar summaries with HDU1 BOSS and HDU2 APOGEE."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from pairspec.surveys.sdssv.layout import HDU_NAMES, mwm_relpath

APOGEE_NPIX, BOSS_NPIX = 8575, 4648
GRID_CARDS = {"APOGEE": (4.179, 6e-6, APOGEE_NPIX), "BOSS": (3.5523, 1e-4, BOSS_NPIX)}
V = "0.8.1"


def visit(flux=100.0, ivar=1.0, npix=APOGEE_NPIX, **scalars) -> dict:
    """One visit row: flux / ivar (scalars or arrays), pixel_flags zeros, and scalar columns."""
    row = {"flux": np.broadcast_to(np.asarray(flux, np.float32), (npix,)).copy(),
           "ivar": np.broadcast_to(np.asarray(ivar, np.float32), (npix,)).copy(),
           "pixel_flags": np.zeros(npix, np.uint64), "snr": 30.0, "in_stack": True, "mjd": 60000,
           "fiber": 10, "telescope": "apo25m", "release": "sdss5", "apred": "1.3", "plate": "5000",
           "field": "120+12", "spectrum_flags": 0, "v_rel": 0.0, "v_rad": 0.0, "bc": 0.0,
           "fieldid": 100, "catalogid": 7, "xcsao_v_rad": 0.0, "zwarning_flags": 0}
    row.update(scalars)
    return row


def table_hdu(name: str, rows: list[dict], in_stack_column=True, grid=None, extname=True, extra_cards=()):
    instrument = name.split("/")[0]
    crval, cdelt, npix = grid or GRID_CARDS[instrument]
    cols = []
    if rows:
        n_vec = len(rows[0]["flux"])
        for key, fmt in (("snr", "E"), ("mjd", "J"), ("fiber", "J"), ("telescope", "6A"), ("release", "5A"),
                         ("apred", "4A"), ("plate", "8A"), ("field", "16A"), ("spectrum_flags", "K"),
                         ("v_rel", "E"), ("v_rad", "E"), ("bc", "E"), ("fieldid", "J"), ("catalogid", "K"),
                         ("xcsao_v_rad", "E"), ("zwarning_flags", "K"), ("sdss_id", "K")):
            if all(key in r for r in rows):
                cols.append(fits.Column(name=key, format=fmt, array=np.array([r[key] for r in rows])))
        if in_stack_column:
            cols.append(fits.Column(name="in_stack", format="L", array=np.array([r["in_stack"] for r in rows])))
        for key, fmt in (("flux", "E"), ("ivar", "E")):
            cols.append(fits.Column(name=key, format=f"{n_vec}{fmt}", array=np.stack([r[key] for r in rows])))
        flags = np.stack([r["pixel_flags"] for r in rows]).astype(np.uint64)
        cols.append(fits.Column(name="pixel_flags", format=f"{n_vec}K", bzero=2**63, array=flags))
    else:  # astra's empty HDU: zero-length vectors declared float32
        cols = [fits.Column(name="sdss_id", format="K", array=np.zeros(0, np.int64)),
                fits.Column(name="flux", format="0E", dim="(0)", array=np.zeros((0, 0), np.float32)),
                fits.Column(name="ivar", format="0E", dim="(0)", array=np.zeros((0, 0), np.float32)),
                fits.Column(name="pixel_flags", format="0E", dim="(0)", array=np.zeros((0, 0), np.float32))]
    hdu = fits.BinTableHDU.from_columns(cols)
    if extname:
        hdu.header["EXTNAME"] = name
    hdu.header["INSTRMNT"] = instrument
    hdu.header["CRVAL"], hdu.header["CDELT"], hdu.header["NPIXELS"] = crval, cdelt, npix
    for key, value in extra_cards:
        hdu.header[key] = value
    return hdu


def write_mwm(root, kind: str, sdss_id: int, hdus: dict[str, list[dict]], v=V, header_id=None,
              counts=True, **options):
    """root/spectra/.../{kind}-{v}-{sdss_id}.fits with the five HDUs; `hdus` maps 'APOGEE/APO' ... to rows.
    options go to table_hdu (in_stack_column, grid, extname, extra_cards) for every filled HDU."""
    primary = fits.PrimaryHDU()
    primary.header["V_ASTRA"] = v
    primary.header["SDSS_ID"] = sdss_id if header_id is None else header_id
    primary.header["RA"], primary.header["DEC"] = 10.0, -20.0
    if counts:
        n_apogee = sum(len(hdus.get(n, [])) for n in HDU_NAMES[2:])
        n_boss = sum(len(hdus.get(n, [])) for n in HDU_NAMES[:2])
        primary.header["N_BOSS"] = n_boss or None
        primary.header["N_APOGEE"] = n_apogee or None
    out = [primary] + [table_hdu(n, hdus.get(n, []), **(options if hdus.get(n) else {})) for n in HDU_NAMES]
    path = root / mwm_relpath(kind, v, sdss_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(out).writeto(path, overwrite=True)
    return path


def write_summary(root, rows: list[dict], instrument="APOGEE", pipeline="ASPCAP", instrmnt_cards=True, v=V):
    """root/summary/astraAllStar{pipeline}-{v}.fits with `rows` in the instrument's HDU (the other empty)."""
    from astropy.table import Table

    def hdu(inst, rs):
        if rs:
            keys = sorted({k for r in rs for k in r})
            t = Table({k: [r.get(k, np.nan) for r in rs] for k in keys})
            h = fits.table_to_hdu(t)
        else:
            h = fits.BinTableHDU.from_columns([fits.Column(name="sdss_id", format="K", array=np.zeros(0, np.int64))])
        if instrmnt_cards:
            h.header["INSTRMNT"] = inst
        return h

    path = root / "summary" / f"astraAllStar{pipeline}-{v}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    boss = rows if instrument == "BOSS" else []
    apogee = rows if instrument == "APOGEE" else []
    fits.HDUList([fits.PrimaryHDU(), hdu("BOSS", boss), hdu("APOGEE", apogee)]).writeto(path, overwrite=True)
    return path


def aspcap_row(sdss_id, telescope="apo25m", **values) -> dict:
    row = {"sdss_id": sdss_id, "telescope": telescope, "release": "sdss5", "snr": 80.0, "teff": 4800.0,
           "e_teff": 20.0, "logg": 2.5, "e_logg": 0.03, "fe_h": -0.2, "e_fe_h": 0.01, "fe_h_flags": 0,
           "mg_h": -0.05, "e_mg_h": 0.02, "mg_h_flags": 0, "flag_warn": False, "flag_bad": False,
           "result_flags": 0}
    row.update(values)
    return row
