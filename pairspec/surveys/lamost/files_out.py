"""The simulator's output files: one star's MRS and LRS files (render.py + writers.py), the label
catalogues, and the truth files. Numbers and rules are in simulate.py's docstring."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from pairspec.surveys.lamost.layout import C_KMS
from pairspec.surveys.lamost.render import render_lrs_epoch, render_mrs_night
from pairspec.surveys.lamost.writers import write_lrs, write_mrs

_MJD0 = datetime(1858, 11, 17, tzinfo=timezone.utc)


def _iso(mjd: float, hours: float = 0.0) -> str:
    return (_MJD0 + timedelta(days=mjd, hours=hours)).strftime("%Y-%m-%dT%H:%M:%S")


def _common(star: dict, obs: dict, fname: str) -> dict:
    return {"FILENAME": fname, "AUTHOR": "pairspec simulate (synthetic, no real data)", "ORIGIN": "pairspec",
            "TELESCOP": "LAMOST", "LMJD": obs["lmjd"], "MJD": obs["lmjd"] - 1, "PLANID": obs["planid"],
            "RA": round(obs.get("ra", star["ra"]), 6), "DEC": round(obs.get("dec", star["dec"]), 6),
            "RA_OBS": round(obs.get("ra", star["ra"]), 6), "DEC_OBS": round(obs.get("dec", star["dec"]), 6),
            "DESIG": "LAMOST " + obs["desig"], "FIBERID": obs["fiber"], "SPID": obs["spid"],
            "OBJTYPE": "Star", "FIBERTYP": "Obj", "FIBERMAS": 0, "MAGTYPE": "g", "MAG1": round(star["gmag"], 2),
            "HELIO": True, "HELIO_RV": round(float(np.sin(obs["lmjd"] / 58.1)) * 25.0, 5), "VACUUM": True}


def _mrs_file(out: Path, star: dict, night: dict, model, rng) -> dict:
    fname = f"med-{night['lmjd']}-{night['planid']}_sp{night['spid']:02d}-{night['fiber']:03d}.fits"
    exposures, coadds = render_mrs_night(model, night, star["teff"], rng)
    start_utc = night["lmjm"][0] / 1440.0 - 8.0 / 24.0
    primary = dict(_common(star, night, fname), OBSID=night["obsid"],
                   DATA_V="LAMOST DR7" if night["layout"] == "rows" else "LAMOST MRS DR9",
                   OBJNAME=str(star["gaia"]), TSOURCE="MRS_TD", NEXP_B=len(night["lmjm"]), COMBIN_B=True,
                   NEXP_R=len(night["lmjm"]), COMBIN_R=True, **{
                       "DATE-OBS": _iso(start_utc + len(night["lmjm"]) * night["exptime"] / 2 / 86400),
                       "DATE-BEG": _iso(start_utc, 8.0), "DATE-END": _iso(start_utc + night["exptime"] / 86400, 8.0)})
    path = out / "mrs" / str(night["lmjd"]) / night["planid"] / fname
    write_mrs(path, primary, exposures, coadds, night["layout"])
    return {"obsid": night["obsid"], "desig": night["desig"], "ra": primary["RA"], "dec": primary["DEC"],
            "snr": coadds["B"]["snr"], "rv": night["rv"], "star": star["index"], "path": str(path)}


def _lrs_file(out: Path, star: dict, epoch: dict, model, rng) -> dict:
    fname = f"spec-{epoch['lmjd']}-{epoch['planid']}_sp{epoch['spid']:02d}-{epoch['fiber']:03d}.fits"
    r = render_lrs_epoch(model, epoch, star["teff"], rng, epoch["layout"])
    z = (epoch["rv"] + rng.normal(0, 3.0)) / C_KMS
    primary = dict(_common(star, epoch, fname), OBJNAME=str(star["index"] + 100000000000000), CLASS="STAR",
                   SUBCLASS="G5", Z=round(z, 8), Z_ERR=1.5e-5, EXPTIME=float(epoch["exptime"]),
                   **{"DATE-OBS": _iso(epoch["lmjd"] - 1 + 0.75)})
    if epoch["layout"] == "image_dr1":  # DR1: no OBSID, S/N keys SN_U ... SN_Z
        primary.update({k.replace("SNR", "SN_"): v for k, v in r["snr"].items()})
    else:
        primary.update(OBSID=epoch["obsid"], DATA_V="LAMOST DR9" if epoch["layout"] == "table" else "LAMOST DR7",
                       **r["snr"])
    path = out / "lrs" / str(epoch["lmjd"]) / epoch["planid"] / fname
    write_lrs(path, primary, r["wavelength"], r["flux"], r["ivar"], r["andmask"], r["ormask"], epoch["layout"])
    return {"obsid": epoch["obsid"], "desig": epoch["desig"], "ra": primary["RA"], "dec": primary["DEC"],
            "snr": r["snr"]["SNRG"], "rv": epoch["rv"], "star": star["index"], "path": str(path)}


def write_star(out, star: dict, models: dict) -> dict:
    """Every file of one star; returns {"mrs": [catalogue facts per file], "lrs": [...]}."""
    out = Path(out)
    rng = np.random.default_rng((int(star["gaia"]) % (2**63), 2))
    mrs = [_mrs_file(out, star, n, models["mrs"], rng) for n in star["nights"]]
    lrs = [_lrs_file(out, star, e, models["lrs"], rng) for e in star["epochs"]]
    return {"mrs": mrs, "lrs": lrs}


def survey_labels(truth: np.ndarray, snr: float, logg: float, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LASP-like labels and errors (teff, logg, feh, alpha_m) of one spectrum; z: 4 standard normals."""
    s = max(float(snr), 1.0)
    err = np.array([math.hypot(2500 / s, 60), math.hypot(4 / s, 0.08), math.hypot(1.5 / s, 0.05),
                    math.hypot(1 / s, 0.03)])
    sys = np.array([30.0 if logg < 3.8 else 0.0, -0.03 if logg >= 3.8 else 0.0, 0.0, 0.0])
    return truth + sys + err * z, err


def write_catalogue(path: Path, stars: list[dict], rows: list[list[dict]], seed: int, kind: str) -> Path:
    """A LAMOST-like catalogue: one row per file (obsid), LASP-like labels, -9999 where a fit failed."""
    from astropy.io import fits
    from astropy.table import Table

    flat = [r for per_star in rows for r in per_star]
    cols = {k: [] for k in ("obsid", "designation", "ra", "dec", "gaia_source_id", "snrg" if kind == "lrs" else "snr",
                            "rv", "rv_err", "teff", "teff_err", "logg", "logg_err", "feh", "feh_err", "alpha_m",
                            "alpha_m_err")}
    for r in flat:
        star = stars[r["star"]]
        g = np.random.default_rng((seed, 3, int(r["obsid"])))
        truth = np.array([star["teff"], star["logg"], star["fe_h"], star["alpha_fe"]])
        lab, err = survey_labels(truth, r["snr"], star["logg"], g.standard_normal(4))
        u = g.random(2)
        if u[0] < 0.01:
            lab[:], err[:] = -9999.0, -9999.0
        elif u[1] < 0.03:
            lab[3], err[3] = -9999.0, -9999.0
        cols["obsid"].append(int(r["obsid"]))
        cols["designation"].append("LAMOST " + r["desig"])
        cols["ra"].append(r["ra"])
        cols["dec"].append(r["dec"])
        cols["gaia_source_id"].append(int(star["gaia"]))
        cols["snrg" if kind == "lrs" else "snr"].append(float(r["snr"]))
        cols["rv"].append(float(r["rv"] + g.normal(0, 1.0)))
        cols["rv_err"].append(1.0)
        for j, name in enumerate(("teff", "logg", "feh", "alpha_m")):
            cols[name].append(float(lab[j]))
            cols[f"{name}_err"].append(float(err[j]))
    table = Table({k: np.array(v, dtype=np.int64 if k in ("obsid", "gaia_source_id") else None) if v else
                   np.zeros(0, dtype=np.int64 if k in ("obsid", "gaia_source_id") else
                            (str if k == "designation" else np.float64)) for k, v in cols.items()})
    hdu = fits.table_to_hdu(table)
    hdu.header["COMMENT"] = f"synthetic LAMOST {kind.upper()} catalogue written by pairspec simulate (no real data)"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
    return path


def write_truth(path: Path, stars: list[dict], spectra: np.ndarray, grid, kind: str) -> Path:
    """truth file: HDU1 star_id (the adapter's id: the earliest file's designation) + true labels;
    HDU SPECTRA the noiseless normalised rest-frame model of each star on the adapter's grid."""
    from astropy.io import fits
    from astropy.table import Table

    t = Table({"star_id": np.array([s["desig"] for s in stars], dtype=str) if stars else np.zeros(0, dtype=str)})
    for k in ("teff", "logg", "fe_h", "alpha_fe", "mass", "age", "vhelio"):
        t[k] = np.array([s[k] for s in stars], dtype=np.float64)
    for k in ("population", "cluster", "stage"):
        t[k] = np.array([str(s[k]) for s in stars], dtype=str) if stars else np.zeros(0, dtype=str)
    t["gaia_source_id"] = np.array([s["gaia"] for s in stars], dtype=np.int64)
    t["binary"] = np.array([s["binary"] is not None for s in stars], dtype=bool)
    spec = fits.ImageHDU(np.asarray(spectra, dtype=np.float32).reshape(len(stars), grid.npix), name="SPECTRA")
    power = "7500" if kind == "mrs" else "1800"
    spec.header["COMMENT"] = (f"noiseless normalised rest-frame model (linegen, R = {power}) "
                              "of each star in HDU1 order on the adapter's grid; 1 outside the usable blocks")
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(t), spec]).writeto(path, overwrite=True)
    return path
