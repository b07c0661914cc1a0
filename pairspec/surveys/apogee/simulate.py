"""A synthetic APOGEE DR17 survey written in the real file formats: allStar + apStar/asStar tree + truth.fits.

Stars (this module) -> spectra of their visits (visits.py) -> apStar files (files.py).

Stars come from the survey-agnostic Galactic mix of pairspec.surveys.population (its docstring has the
parameterisation), placed in APOGEE-like fields; everything lies inside the Kurucz emulator's range.

Survey ("ASPCAP") labels in allStar = truth + S/N-dependent noise (sigma_Teff = hypot(1500/SNR, 8) K,
sigma_logg = hypot(3/SNR, 0.02), sigma_[Fe/H] = hypot(1/SNR, 0.01), sigma_[Mg/Fe] = hypot(1.5/SNR, 0.015))
+ small systematics (giants' log g offset 0.02 (Teff - 4800)/1000, [Mg/Fe] -0.003); the _ERR columns are
those sigmas. ~1.5 % of rows have ASPCAPFLAG STAR_BAD and NaN labels, ~2 % NaN MG_FE; ~3 % of stars
get a second allStar row (another field / telescope, own apStar file and visits) and the lower-S/N row
of the pair has EXTRATARG bit 4 (DUPLICATE). Truth (truth.fits) never enters allStar.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pairspec.surveys.apogee.files import render_star_file
from pairspec.surveys.population import draw_population
from pairspec.surveys.simtools import render_all

# (name, telescope, glon, glat, kind)
FIELDS = (("120+12", "apo25m", 120.0, 12.0, "disc"), ("K04_083+13", "apo25m", 83.5, 13.0, "disc"),
          ("060+00", "apo25m", 60.0, 0.0, "disc"), ("180+04", "apo25m", 180.0, 4.0, "disc"),
          ("300+05", "lco25m", 300.0, 5.0, "disc"), ("090+60", "apo25m", 90.0, 60.0, "halo"),
          ("293-37-C", "lco25m", 293.0, -37.0, "halo"), ("000+02", "apo25m", 0.0, 2.0, "bulge"),
          ("004-04", "lco25m", 4.0, -4.0, "bulge"))
# MEMBERFLAG bit of each population.CLUSTERS cluster (DR17 numbering as recalled, unverified)
MEMBERFLAG_BIT = {"M67": 18, "N7789": 19, "N6819": 21, "N6791": 23, "N188": 17, "N2420": 16}
STAR_BAD, SN_WARN, EXTRATARG_DUPLICATE = 1 << 23, 1 << 11, 1 << 4


@dataclass
class SimulationSummary:
    n_stars: int
    n_files: int
    n_visits: int
    out_dir: Path
    paths: dict = field(default_factory=dict)  # allstar, truth, apstar (list of files)


def apogee_id(ra: float, dec: float) -> str:
    """2MASS-style designation 2MHHMMSSss+DDMMSSs (18 characters)."""
    h = ra / 15.0
    hh, mm = int(h), int((h % 1) * 60)
    ss = int(((h * 3600) % 60) * 100)
    sign = "-" if dec < 0 else "+"
    d = abs(dec)
    dd, dm, ds = int(d), int((d % 1) * 60), int(((d * 3600) % 60) * 10)
    return f"2M{hh:02d}{mm:02d}{ss:04d}{sign}{dd:02d}{dm:02d}{ds:03d}"


def draw_stars(n_stars: int, rng: np.random.Generator) -> dict:
    """True parameters, positions, photometry and visit counts of n_stars distinct stars (the Galactic mix of
    pairspec.surveys.population in APOGEE's fields, then 2MASS designations, H, J, K and NVISITS)."""
    stars = draw_population(n_stars, rng, FIELDS)
    n, ra, dec, teff = n_stars, stars["ra"], stars["dec"], stars["teff"]
    ids, seen = [], set()
    for i in range(n):
        sid = apogee_id(ra[i], dec[i])
        while sid in seen:  # a 2MASS designation is unique: nudge the position by ~0.1"
            ra[i] += 3e-5
            sid = apogee_id(ra[i], dec[i])
        seen.add(sid)
        ids.append(sid)
    h = np.clip(rng.normal(11.2, 1.0, n), 7.5, 13.5)
    jk = np.clip(0.45 + (5000 - teff) / 2500.0, 0.2, 1.4) + 0.1 * rng.random(n)
    nvis = rng.choice(np.arange(1, 13), size=n, p=np.array([18, 20, 20, 12, 8, 6, 5, 4, 3, 2, 1, 1]) / 100)
    stars["telescope"] = stars.pop("site")
    return {"apogee_id": np.array(ids), **stars, "h": h, "j": h + 0.75 * jk, "k": h - 0.25 * jk, "nvisits": nvis}


def plan_files(stars: dict, seed: int, rng: np.random.Generator) -> list[dict]:
    """One file per star, plus a second file (other field, ideally other telescope) for ~3 % of stars."""
    n = stars["teff"].size
    files = [{"star": i, "field": stars["field"][i], "telescope": stars["telescope"][i],
              "nvisits": int(stars["nvisits"][i])} for i in range(n)]
    field_stars = np.flatnonzero(stars["cluster"] == "")
    n_dup = min(field_stars.size, max(1, round(0.03 * n))) if n >= 10 else 0
    for i in np.sort(rng.choice(field_stars, size=n_dup, replace=False)):
        kind = next((f[4] for f in FIELDS if f[0] == stars["field"][i]), "disc")
        other = ([f for f in FIELDS if f[1] != stars["telescope"][i] and f[4] == kind]
                 or [f for f in FIELDS if f[0] != stars["field"][i] and f[4] == kind])
        f = other[int(rng.integers(len(other)))]
        files.append({"star": int(i), "field": f[0], "telescope": f[1], "nvisits": int(rng.integers(1, 5))})
    for k, f in enumerate(files):
        prefix = "asStar" if f["telescope"] == "lco25m" else "apStar"
        f["file"] = f"{prefix}-dr17-{stars['apogee_id'][f['star']]}.fits"
        f["path"] = f"{f['telescope']}/{f['field']}/{f['file']}"
        f["seed"] = (seed, 1, k)  # per-file stream: identical output for any worker count
    return files


LABEL_NAMES = ("TEFF", "LOGG", "FE_H", "MG_FE", "M_H", "ALPHA_M")


def row_draws(seed: int, k: int) -> np.ndarray:
    """The random numbers of allStar row k: 6 label normals (LABEL_NAMES order), then U(0,1) for STAR_BAD and
    for a missing MG_FE. One stream per row, so a row's values never depend on the other rows (the
    direct-to-store path draws them star by star in worker processes)."""
    rng = np.random.default_rng((seed, 2, k))
    return np.concatenate([rng.standard_normal(len(LABEL_NAMES)), rng.random(2)])


def survey_labels(truth: np.ndarray, snr: np.ndarray, z: np.ndarray) -> dict:
    """ASPCAP-like labels of allStar rows: truth (teff, logg, fe_h, mg_fe, alpha_fe) + noise + systematics;
    z (n, 6) standard normals in LABEL_NAMES order."""
    truth, z = np.atleast_2d(truth), np.atleast_2d(z)
    teff, logg, feh, mgfe, alpha = truth.T
    snr = np.maximum(np.atleast_1d(snr), 1.0)
    err = {"TEFF": np.hypot(1500.0 / snr, 8.0), "LOGG": np.hypot(3.0 / snr, 0.02),
           "FE_H": np.hypot(1.0 / snr, 0.01), "MG_FE": np.hypot(1.5 / snr, 0.015),
           "M_H": np.hypot(1.0 / snr, 0.012), "ALPHA_M": np.hypot(1.2 / snr, 0.012)}
    sys = {"TEFF": 0.0, "LOGG": np.where(logg < 3.8, 0.02 * (teff - 4800.0) / 1000.0, 0.0),
           "FE_H": 0.0, "MG_FE": -0.003, "M_H": 0.01, "ALPHA_M": 0.0}
    base = {"TEFF": teff, "LOGG": logg, "FE_H": feh, "MG_FE": mgfe, "M_H": feh + 0.3 * (alpha - 0.1) * 0.1,
            "ALPHA_M": alpha}
    out = {}
    for j, name in enumerate(LABEL_NAMES):
        out[name] = base[name] + sys[name] + err[name] * z[:, j]
        out[f"{name}_ERR"] = err[name]
    return out


def duplicate_rows(star_of_row: np.ndarray, snr: np.ndarray) -> list[int]:
    """Rows that are not their star's primary one: the highest-S/N row of a star is primary (first of equals)."""
    best, dup = set(), []
    for k in np.argsort(-np.asarray(snr), kind="stable"):
        if star_of_row[k] in best:
            dup.append(int(k))
        best.add(star_of_row[k])
    return sorted(dup)


def allstar_table(stars: dict, files: list[dict], results: list[dict], seed: int, row_ids=None):
    """HDU1 columns of allStar (one row per apStar file), labels from each row's own S/N. `row_ids`: the
    allStar row numbers of `files` when they are a subset (all rows of their stars; default 0..n-1)."""
    n = len(files)
    row_ids = range(n) if row_ids is None else row_ids
    idx = np.array([f["star"] for f in files])
    snr = np.array([r["snr"] for r in results])
    truth = np.stack([stars[k][idx] for k in ("teff", "logg", "fe_h", "mg_fe", "alpha_fe")], axis=1)
    draws = np.stack([row_draws(seed, k) for k in row_ids]) if n else np.zeros((0, 8))
    lab = survey_labels(truth, snr, draws[:, :6])
    aspcapflag = np.where(snr < 70, SN_WARN, 0).astype(np.int64)
    bad = draws[:, 6] < 0.015
    aspcapflag[bad] |= STAR_BAD
    for k in lab:
        lab[k] = np.where(bad, np.nan, lab[k])
    no_mg = ~bad & (draws[:, 7] < 0.02)
    lab["MG_FE"][no_mg], lab["MG_FE_ERR"][no_mg] = np.nan, np.nan
    extratarg = np.zeros(n, dtype=np.int32)
    for k in duplicate_rows(idx, snr):
        extratarg[k] |= EXTRATARG_DUPLICATE
    member = np.array([stars["cluster"][i] for i in idx], dtype=object)
    memberflag = np.array([(1 << MEMBERFLAG_BIT[m]) if m else 0 for m in member], dtype=np.int64)
    # PARAM order (our HDU3 PARAM_SYMBOL): TEFF LOGG VMICRO M_H C_M N_M ALPHA_M VSINI VMACRO
    param = np.full((n, 9), np.nan, dtype=np.float32)
    for j, k in ((0, "TEFF"), (1, "LOGG"), (3, "M_H"), (6, "ALPHA_M")):
        param[:, j] = lab[k]
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    cols = {
        "FILE": np.array([f["file"] for f in files]), "APOGEE_ID": stars["apogee_id"][idx],
        "TELESCOPE": np.array([f["telescope"] for f in files]), "FIELD": np.array([f["field"] for f in files]),
        "RA": stars["ra"][idx], "DEC": stars["dec"][idx], "GLON": stars["glon"][idx], "GLAT": stars["glat"][idx],
        "J": f32(stars["j"][idx]), "H": f32(stars["h"][idx]), "K": f32(stars["k"][idx]),
        "NVISITS": np.array([r["nvisits"] for r in results], dtype=np.int32), "SNR": f32(snr),
        "SNREV": f32([r["snrev"] for r in results]),
        "STARFLAG": np.array([r["starflag"] for r in results], dtype=np.int64),
        "ANDFLAG": np.array([r["andflag"] for r in results], dtype=np.int64),
        "VHELIO_AVG": f32([r["vhelio"] for r in results]), "VSCATTER": f32([r["vscatter"] for r in results]),
        "VERR": f32([r["verr"] for r in results]), "ASPCAPFLAG": aspcapflag,
        "ASPCAPFLAGS": np.array([",".join(s for b, s in ((STAR_BAD, "STAR_BAD"), (SN_WARN, "SN_WARN")) if a & b)
                                 for a in aspcapflag]),
        "EXTRATARG": extratarg, "MEMBERFLAG": memberflag, "MEMBER": np.array([m for m in member]),
        "PARAM": param,
    }
    for k in ("TEFF", "LOGG", "M_H", "ALPHA_M", "FE_H", "MG_FE"):
        cols[k], cols[f"{k}_ERR"] = f32(lab[k]), f32(lab[f"{k}_ERR"])
        if k in ("FE_H", "MG_FE"):
            cols[f"{k}_FLAG"] = np.where(np.isnan(lab[k]) & ~bad, 1, 0).astype(np.int32)
    # DR17's other abundance columns are there, as in the real file, but NaN: the emulator has no C, N, ...
    from pairspec.surveys.apogee.layout import APOGEE_ABUNDANCES

    for name in (a.upper() for a in APOGEE_ABUNDANCES):
        cols[name], cols[f"{name}_ERR"] = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        cols[f"{name}_FLAG"] = np.zeros(n, dtype=np.int32)
    return cols


def write_tables(out_dir: Path, stars: dict, cols: dict) -> tuple[Path, Path]:
    from astropy.io import fits
    from astropy.table import Table

    allstar = out_dir / "allStar-dr17-synspec_rev1.fits"
    symbols = Table({"PARAM_SYMBOL": [["TEFF", "LOGG", "VMICRO", "M_H", "C_M", "N_M", "ALPHA_M", "VSINI", "VMACRO"]],
                     "ELEM_SYMBOL": [["C", "CI", "N", "O", "Na", "Mg", "Al", "Si", "P", "S", "K", "Ca", "Ti", "TiII",
                                      "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Ce", "Yb"]]})
    hdus = [fits.PrimaryHDU(), fits.table_to_hdu(Table(cols)), fits.ImageHDU(), fits.table_to_hdu(symbols)]
    hdus[0].header.add_history("synthetic APOGEE DR17 allStar written by pairspec.simulate (no real data)")
    fits.HDUList(hdus).writeto(allstar, overwrite=True)
    return allstar, write_truth(out_dir / "truth.fits", stars)


def write_truth(path: Path, stars: dict) -> Path:
    """truth.fits: HDU1 `star_id` (the APOGEE_ID) and the true labels, masses, ages and populations (never in
    allStar); HDU2 "SPECTRA" the
    noiseless normalised spectrum of every star on the apStar grid, in HDU1's row order (float32 (n_star,
    8575); see simulate_visits.truth_spectra; present when `stars` holds the models, as plan_survey's do)."""
    from astropy.io import fits
    from astropy.table import Table

    from pairspec.surveys.apogee.visits import truth_spectra

    t = Table({"star_id": stars["apogee_id"]})  # the store's star id, which `pairspec evaluate` matches
    for k in ("teff", "logg", "fe_h", "mg_fe", "alpha_fe", "mass", "age"):
        t[k] = stars[k]
    for k in ("population", "cluster", "stage"):
        t[k] = np.array([str(v) for v in stars[k]])
    t["vhelio"] = stars["vhelio"]
    hdus = [fits.PrimaryHDU(), fits.table_to_hdu(t)]
    if "model_7214" in stars:
        spectra = fits.ImageHDU(truth_spectra(stars["model_7214"], stars["model_index"]), name="SPECTRA")
        spectra.header["COMMENT"] = ("noiseless normalised model of each star (HDU1 row order) on the apStar grid: "
                                     "the visits' mean LSF, pairspec's continuum normalisation; 1 outside the model")
        hdus.append(spectra)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def plan_survey(n_stars: int, seed: int, out_dir: str = "") -> tuple[dict, list[dict], list[dict]]:
    """(stars, files, tasks): the stars, their apStar files and one render task per file. Deterministic in seed."""
    from pairspec.surveys.apogee.emulator import KuruczEmulator

    if n_stars < 1:
        raise ValueError(f"n_stars must be >= 1, got {n_stars}")
    rng = np.random.default_rng((seed, 0))
    stars = draw_stars(n_stars, rng)
    files = plan_files(stars, seed, rng)
    emu = KuruczEmulator.load()
    labels = np.stack([stars[k] for k in ("teff", "logg", "fe_h", "alpha_fe")], axis=1)
    norm = emu.normalized(np.clip(labels, emu.x_min, emu.x_max))
    stars["model_7214"], stars["model_index"] = norm, emu.apstar_index  # for the truth spectra (write_truth)
    tasks = []
    for f in files:
        i = f["star"]
        ra = np.radians(stars["ra"][i])
        tasks.append(dict(f, out_dir=str(out_dir), apogee_id=stars["apogee_id"][i], norm_spectrum=norm[i],
                          apstar_index=emu.apstar_index, teff=float(stars["teff"][i]),
                          flux_scale=830.0 * 10 ** (-0.4 * (stars["h"][i] - 10.32)),
                          snr_scale=40.0 * 10 ** (-0.2 * (stars["h"][i] - 11.0)), vhelio=float(stars["vhelio"][i]),
                          mjd0=56000.0 + (zlib.crc32(f["path"].encode()) % 3500), bc_phase=float(ra),
                          bc_amp=29.8 * float(np.cos(np.radians(stars["dec"][i]))),
                          plate=5000 + zlib.crc32(f["field"].encode()) % 5000,
                          ra=float(stars["ra"][i]), dec=float(stars["dec"][i]), glon=float(stars["glon"][i]),
                          glat=float(stars["glat"][i]), j=float(stars["j"][i]), h=float(stars["h"][i]),
                          k=float(stars["k"][i]), truth_rv=labels[i], rv_teff=float(round(labels[i, 0], -2)),
                          rv_logg=float(round(labels[i, 1] * 2) / 2), rv_feh=float(round(labels[i, 2] * 4) / 4)))
    return stars, files, tasks


def simulate_apogee(out_dir, n_stars: int = 500, seed: int = 1, workers: int = 1, progress: bool = True) -> SimulationSummary:
    """Write a synthetic APOGEE DR17 tree under out_dir; same seed -> same files for any `workers`."""
    out_dir = Path(out_dir)
    stars, files, tasks = plan_survey(n_stars, seed, str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = render_all(render_star_file, tasks, workers, progress, "simulating apStar files")
    cols = allstar_table(stars, files, results, seed)
    allstar, truth = write_tables(out_dir, stars, cols)
    paths = {"allstar": allstar, "truth": truth, "apstar": [out_dir / f["path"] for f in files]}
    return SimulationSummary(n_stars=n_stars, n_files=len(files), n_visits=int(sum(r["nvisits"] for r in results)),
                             out_dir=out_dir, paths=paths)
