"""Write one synthetic DR17 apStar/asStar file (formats.md 1.2-1.5, copied from the real files in shared/data/real).

`render_star_file(task)` is the unit of parallel work: it draws the visits of one apStar file from its own
seed (so the output never depends on the number of workers), renders and combines them
(simulate_visits), writes the FITS file and returns the numbers allStar needs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from pairspec.surveys.apogee.layout import APOGEE_GRID
from pairspec.surveys.apogee.visits import (
    LSF_SIGMA_RANGE,
    NPIX,
    combine_visits,
    render_visit,
)

BUNITS = ("Flux (10^-17 erg/s/cm^2/Ang)", "Err (10^-17 erg/s/cm^2/Ang)", "Pixel bitmask",
          "Sky (10^-17 erg/s/cm^2/Ang)", "Sky error (10^-17 erg/s/cm^2/Ang)", "Telluric", "Telluric error")
HISTORY = ("APOGEE Reduction Pipeline Version: 0.17.22", "HDU0 : header", "HDU1 : flux", "HDU2 : flux uncertainty",
           "HDU3 : pixel bitmask", "HDU4 : sky", "HDU5 : sky uncertainty", "HDU6 : telluric",
           "HDU7 : telluric uncertainty", "HDU8 : LSF table", "HDU9 : RV table",
           "HDU10 : RV table for combined spectrum")
RV_COLUMNS = ("filename", "jd", "snr", "vhelio", "vrel", "vrelerr", "teff", "tefferr", "logg", "loggerr", "feh",
              "feherr", "chisq", "bc", "x_ccf", "ccf", "ccferr", "xcorr_vrel", "xcorr_vrelerr", "xcorr_vhelio",
              "ccpfwhm", "autofwhm", "autoccf")
APVISIT_SNR_SCALE = 0.74  # real file: HDU9 snr 49.6 vs SNRVIS 67.2 (apVisit vs apStar pixel scale)
# STARFLAG bits
BRIGHT_NEIGHBOR, PERSIST_HIGH_FLAG, PERSIST_MED_FLAG, PERSIST_LOW_FLAG = 1 << 2, 1 << 9, 1 << 10, 1 << 11
GREEN = (3585, 6080)  # middle-chip block used for SNREV


def mjd_to_iso(mjd: float) -> str:
    t = datetime(1858, 11, 17) + timedelta(days=float(mjd))
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def plan_visits(task: dict, rng: np.random.Generator) -> list[dict]:
    """Dates, barycentric corrections, RVs, fibres, S/N and conditions of the file's visits."""
    n = task["nvisits"]
    gaps = np.where(rng.random(n) < 0.7, rng.uniform(1, 30, n), rng.uniform(100, 700, n))
    mjds = np.floor(task["mjd0"] + np.cumsum(gaps) - gaps[0]).astype(int)
    visits, fiber = [], int(rng.integers(1, 301))
    for k in range(n):
        fiber = fiber if (k == 0 or rng.random() < 0.6) else int(rng.integers(1, 301))
        jd = mjds[k] + 2400000.5 + rng.uniform(0.15, 0.45)
        bc = task["bc_amp"] * np.cos(2 * np.pi * (jd - 2451545.0) / 365.25 + task["bc_phase"])
        snr = float(np.clip(task["snr_scale"] * rng.lognormal(0.0, 0.3), 5.0, 300.0))
        vhelio = task["vhelio"] + rng.normal(0.0, 0.1)
        verr = max(0.02, 2.5 / snr)
        vrad = vhelio - bc
        persist = int(rng.choice([0, 1, 2, 3], p=[0.75, 0.1, 0.1, 0.05]))
        visits.append({
            "mjd": int(mjds[k]), "jd": jd, "bc": bc, "fiber": fiber, "snr": snr, "vrad": vrad,
            "vrad_measured": vrad + rng.normal(0.0, verr), "verr": verr,
            "lsf_sigma": rng.uniform(*LSF_SIGMA_RANGE), "throughput": rng.lognormal(0.0, 0.1),
            "sky_level": rng.uniform(0.5, 2.0), "persist": persist, "persist_len": int(rng.integers(300, 2900)),
            "bright_neighbor": rng.random() < 0.03,
        })
    return visits


def visit_starflag(visit: dict, rendered: dict) -> int:
    flag = BRIGHT_NEIGHBOR if visit["bright_neighbor"] else 0
    if rendered["frac_persist"] > 0.2:
        flag |= {3: PERSIST_HIGH_FLAG, 2: PERSIST_MED_FLAG, 1: PERSIST_LOW_FLAG}[visit["persist"]]
    return flag


def render_star(task: dict):
    """Render the apStar rows of `task` without writing them: (cards, rows, visits, snrvis, summary, rng).

    cards: the primary header as (key, value, comment) tuples; rows: flux, err (float64) and mask (int64)
    (NROW, npix) plus sky/telluric rows, exactly what the file would hold; rng: the file's generator in
    the state the writer continues from. Pure function of task."""
    rng = np.random.default_rng(task["seed"])
    visits = plan_visits(task, rng)
    rest_model = np.ones(NPIX)  # continuum only where the 7214-px emulator has no pixels
    rest_model[task["apstar_index"]] = task["norm_spectrum"]
    star = {"teff": task["teff"], "flux_scale": task["flux_scale"]}
    rendered = [render_visit(rest_model, star, v, rng) for v in visits]
    n = len(visits)
    vis = {k: np.stack([r[k] for r in rendered]) for k in ("flux", "err", "mask", "sky", "sky_err", "telluric",
                                                            "telluric_err")}
    if n == 1:  # DR17: NROW = 2, row 0 = the visit written like a coadd, row 1 all zeros
        c_flux, c_err = vis["flux"][:1].copy(), vis["err"][:1].copy()
        c_flux[:, ~rendered[0]["cov"]], c_err[:, ~rendered[0]["cov"]] = np.nan, np.nan
        rows = {"flux": np.vstack([c_flux, np.zeros((1, NPIX))]), "err": np.vstack([c_err, np.zeros((1, NPIX))]),
                "mask": np.vstack([vis["mask"][:1], np.zeros((1, NPIX), np.int64)])}
        for k in ("sky", "sky_err", "telluric", "telluric_err"):
            rows[k] = np.vstack([vis[k][:1], np.zeros((1, NPIX))])
    else:
        c_flux, c_err, c_mask = combine_visits(rendered)
        rows = {"flux": np.vstack([c_flux, vis["flux"]]), "err": np.vstack([c_err, vis["err"]]),
                "mask": np.vstack([c_mask, vis["mask"]])}
        for k in ("sky", "sky_err", "telluric", "telluric_err"):
            rows[k] = np.vstack([np.zeros((2, NPIX)), vis[k]])
    rows["flux"], rows["err"] = rows["flux"].astype(np.float64), rows["err"].astype(np.float64)
    rows["mask"] = rows["mask"].astype(np.int64)  # the dtypes written to (and read back from) the file
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = float(np.nanmedian(rows["flux"][0] / rows["err"][0]))
        snrev = float(np.nanmedian(rows["flux"][0, GREEN[0]:GREEN[1]] / rows["err"][0, GREEN[0]:GREEN[1]]))
    flags = [visit_starflag(v, r) for v, r in zip(visits, rendered)]
    snrvis = [r["snr"] for r in rendered]
    w = np.array(snrvis) ** 2
    vhelio_n = np.array([v["vrad_measured"] + v["bc"] for v in visits])
    summary = {
        "path": task["path"], "nvisits": n, "snr": snr, "snrev": snrev,
        "starflag": int(np.bitwise_or.reduce(flags)), "andflag": int(np.bitwise_and.reduce(flags)),
        "vhelio": float(np.sum(w * vhelio_n) / w.sum()), "vscatter": float(np.std(vhelio_n)),
        "verr": float(1.0 / np.sqrt(np.sum(1.0 / np.array([v["verr"] for v in visits]) ** 2))),
        "visit_snr": snrvis,
    }
    cards = header_cards(task, visits, snrvis, flags, summary)
    return cards, rows, visits, snrvis, summary, rng


def render_star_file(task: dict) -> dict:
    """Render and write the apStar file of `task`; return allStar-level numbers. Pure function of task."""
    cards, rows, visits, snrvis, summary, rng = render_star(task)
    write_apstar(Path(task["out_dir"]) / task["path"], primary_header(cards), rows, visits, snrvis, task, summary,
                 rng)
    return summary


def header_values(cards) -> dict:
    """The keyword values of header cards as a dict (what the adapter reads from a primary header)."""
    return {k: v for k, v, _ in cards if k not in ("COMMENT", "HISTORY")}


def primary_header(cards):
    """astropy Header from header_cards' (key, value, comment) tuples."""
    from astropy.io import fits

    h = fits.Header()
    for key, value, comment in cards:
        if key in ("COMMENT", "HISTORY"):
            h.append((key, value))
        else:
            h[key] = (value, comment)
    return h


class _Cards(list):
    """A list of (key, value, comment) header cards filled as `h[key] = (value, comment)`."""

    def __setitem__(self, key, vc):
        self.append((key, vc[0], vc[1]))


def header_cards(task: dict, visits: list[dict], snrvis: list[float], flags: list[int], s: dict) -> list[tuple]:
    """The primary header of the apStar file as (key, value, comment) tuples (plain Python: no astropy)."""
    h = _Cards()
    g = APOGEE_GRID
    h["CRVAL1"] = (g.crval1, "Start log10(wavelength) in subsequent HDUs")
    h["CDELT1"] = (g.cdelt1, "Dispersion in log10(wave) in subsequent HDUs")
    h["CRPIX1"] = (1, "Pixel of starting wavelength in subsequent HDUs")
    h["CTYPE1"] = ("LOG-LINEAR", "Logarithmic wavelength scale in subsequent HDUs")
    h["DC-FLAG"] = (1, "Logarithmic wavelength scale in subsequent HDUs")
    h["NWAVE"] = (g.npix, "Number of wavelengths in subsequent HDUs")
    h["FIELD"] = (task["field"], "APOGEE field name")
    h["OBJID"] = (task["apogee_id"], "APOGEE object name")
    h["SNR"] = (s["snr"], "Median S/N per apStar pixel")
    h["SNREV"] = (s["snrev"], "Median S/N per apStar pixel in middle chip")
    h["RA"] = (task["ra"], "right ascension, deg, J2000")
    h["DEC"] = (task["dec"], "declination, deg, J2000")
    h["GLON"] = (task["glon"], "Galactic longitude")
    h["GLAT"] = (task["glat"], "Galactic latitude")
    for band in ("J", "H", "K"):
        h[band] = (task[band.lower()], f"2MASS {band} magnitude")
        h[f"{band}_ERR"] = (0.02, f"2MASS {band} magnitude uncertainty")
    h["SRC_H"] = ("2MASS", "source of H magnitude")
    h["NVISITS"] = (s["nvisits"], "Number of visit spectra combined flag")
    h["STARFLAG"] = (s["starflag"], "bitwise OR of individual visit starflags")
    h["ANDFLAG"] = (s["andflag"], "bitwise AND of individual visit starflags")
    h["N_COMP"] = (1, "Maximum number of components in RV CCFs")
    h["VHELIO"] = (s["vhelio"], "S/N weighted mean barycentric RV")
    h["VSCATTER"] = (s["vscatter"], "standard deviation of visit RVs")
    h["VERR"] = (s["verr"], "weighted error in VHELIO")
    h["RV_TEFF"] = (task["rv_teff"], "Effective temperature from RV fit")
    h["RV_LOGG"] = (task["rv_logg"], "Surface gravity from RV fit")
    h["RV_FEH"] = (task["rv_feh"], "Metallicity from RV fit")
    h["MEANFIB"] = (float(np.mean([v["fiber"] for v in visits])), "S/N weighted mean fiber number")
    h["NRES"] = (" 5.00 4.25 3.50", "number of pixels/resolution used for sinc")
    prefix = "as" if task["telescope"] == "lco25m" else "ap"
    for n, (v, snr, flag) in enumerate(zip(visits, snrvis, flags), start=1):
        h.append(("COMMENT", f"VISIT {n} INFORMATION", ""))
        v["sfile"] = f"{prefix}Visit-dr17-{task['plate']}-{v['mjd']}-{v['fiber']:03d}.fits"
        h[f"SFILE{n}"] = (v["sfile"], f" Visit #{n} spectrum file")
        h[f"DATE{n}"] = (mjd_to_iso(v["jd"] - 2400000.5), f"DATE-OBS of visit {n}")
        h[f"JD{n}"] = (round(v["jd"], 5), f"Julian date of visit {n}")
        h[f"FIBER{n}"] = (v["fiber"], f"Fiber, visit {n}")
        h[f"BC{n}"] = (v["bc"], f"Barycentric correction (km/s), visit {n}")
        h[f"VRAD{n}"] = (v["vrad_measured"], f"Radial velocity (km/s) of visit {n}")
        h[f"VERR{n}"] = (v["verr"], "Uncertainty in radial velocity (km/s)")
        h[f"VHELIO{n}"] = (v["vrad_measured"] + v["bc"], f"Barycentric velocity (km/s), visit {n}")
        # DR17 quirk seen in the real single-visit file: SNRVIS1 = 0 when NVISITS = 1
        h[f"SNRVIS{n}"] = (0.0 if len(visits) == 1 else snr, f"Median S/N per apStar pixel, visit {n}")
        h[f"FLAG{n}"] = (flag, f"STARFLAG for visit {n}")
    for line in HISTORY:
        h.append(("HISTORY", line, ""))
    return list(h)


def _rv_table(rows: list[dict], nccf: int):
    """HDU9/HDU10 RV table, lower-case columns as in the real DR17 files (built as one structured array: fast)."""
    from astropy.io import fits

    vectors = ("x_ccf", "ccf", "ccferr", "autoccf")
    dtype = [(n, "S72") if n == "filename" else (n, ">f8", (nccf,)) if n in vectors else (n, ">f8") for n in RV_COLUMNS]
    data = np.zeros(len(rows), dtype=dtype)
    x = np.linspace(-1.0, 1.0, nccf)
    for i, r in enumerate(rows):
        for n in RV_COLUMNS:
            if n not in vectors:
                data[n][i] = r[n]
        half = x * (nccf // 2)
        data["x_ccf"][i] = half
        data["ccf"][i] = np.exp(-0.5 * (half / r["ccfwidth"]) ** 2)
        data["ccferr"][i] = 0.01
        data["autoccf"][i] = np.exp(-0.5 * (half / (0.8 * r["ccfwidth"])) ** 2)
    return fits.BinTableHDU(data)


def write_apstar(path: Path, header, rows: dict, visits, snrvis, task: dict, s: dict, rng) -> None:
    from astropy.io import fits

    hdus = [fits.PrimaryHDU(header=header)]
    for key, bunit in zip(("flux", "err", "mask", "sky", "sky_err", "telluric", "telluric_err"), BUNITS):
        data = rows[key].astype(np.int64 if key == "mask" else np.float64)
        img = fits.ImageHDU(data)
        for k in ("CRVAL1", "CDELT1", "CRPIX1", "CTYPE1"):
            img.header[k] = header[k]
        img.header["BUNIT"] = bunit
        hdus.append(img)
    hdus.append(fits.ImageHDU())  # HDU8: LSF table, empty in DR17
    truth = task["truth_rv"]  # Doppler's coarse template fit: truth plus grid-like noise
    visit_rows = []
    for v, snr in zip(visits, snrvis):
        visit_rows.append({
            "filename": v["sfile"], "jd": v["jd"], "snr": snr * APVISIT_SNR_SCALE * rng.normal(1.0, 0.03),
            "vhelio": v["vrad_measured"] + v["bc"], "vrel": v["vrad_measured"], "vrelerr": v["verr"],
            "teff": truth[0] + rng.normal(0, 100), "tefferr": 50.0, "logg": truth[1] + rng.normal(0, 0.2),
            "loggerr": 0.1, "feh": truth[2] + rng.normal(0, 0.1), "feherr": 0.05, "chisq": rng.uniform(2, 20),
            "bc": v["bc"], "xcorr_vrel": v["vrad_measured"] + rng.normal(0, 0.3), "xcorr_vrelerr": 3 * v["verr"],
            "xcorr_vhelio": v["vrad_measured"] + v["bc"], "ccpfwhm": 18.0, "autofwhm": 12.4, "ccfwidth": 6.0,
        })
    hdus.append(_rv_table(visit_rows, 765))
    comb = dict(visit_rows[0], filename="", jd=0.0, snr=s["snr"], vhelio=s["vhelio"], vrel=0.0, vrelerr=s["verr"],
                bc=0.0, xcorr_vrel=0.0, xcorr_vhelio=0.0, ccfwidth=4.0)
    hdus.append(_rv_table([comb], 243))
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
