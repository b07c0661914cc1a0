"""A synthetic APOGEE DR17 survey written in the real file formats: allStar + apStar/asStar tree + truth.fits.

Stars (this module) -> spectra of their visits (simulate_visits) -> apStar files (simulate_apogee_files).

Galactic mix: thin disc, alpha-rich thick disc, metal-poor halo, bulge, and a few open clusters whose
members share [Fe/H], [alpha/Fe], age and RV. Stellar parameters follow a simple documented
parameterisation, NOT isochrones. With t_MS(M) = 10 Gyr * M^-2.5 the turn-off mass is
M_to = (age / 10 Gyr)^-0.4 * (1 + 0.1 [Fe/H]);
- dwarfs: M ~ U(0.65, min(1.3, M_to)), tau = age / t_MS, Teff = 5772 M^0.55 10^(-0.06 [Fe/H]) (1 - 0.05 tau),
  R = M^0.85 (1 + 0.5 tau^2), log g = 4.438 + log M - 2 log R;
- RGB: M = M_to, log g = 1 + 2.5 sqrt(u), Teff = 4600 + 280 (log g - 2.5) - 350 [Fe/H] + 120 (M - 1.2);
- red clump ([Fe/H] > -0.8 only): M = M_to - 0.1, log g = 2.45 + 0.3 log(M/1.2), Teff = 4700 - 300 [Fe/H] + 150 (M - 1.2);
each with small Gaussian scatter. Everything is clipped into the emulator's range (Teff 3529-6983,
log g 0.335-5.218, [Fe/H] -0.988..0.518, [alpha/Fe] -0.559..0.908): in particular the halo
metallicity distribution (mean -1.3) is clipped at [Fe/H] = -0.98. [Mg/Fe] truth = [alpha/Fe] truth.

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

from pairspec.simulate_apogee_files import render_star_file

POPULATIONS = ("thin", "thick", "halo", "bulge")
POP_FRACTIONS = (0.58, 0.20, 0.09, 0.13)
# (name, telescope, glon, glat, kind)
FIELDS = (("120+12", "apo25m", 120.0, 12.0, "disc"), ("K04_083+13", "apo25m", 83.5, 13.0, "disc"),
          ("060+00", "apo25m", 60.0, 0.0, "disc"), ("180+04", "apo25m", 180.0, 4.0, "disc"),
          ("300+05", "lco25m", 300.0, 5.0, "disc"), ("090+60", "apo25m", 90.0, 60.0, "halo"),
          ("293-37-C", "lco25m", 293.0, -37.0, "halo"), ("000+02", "apo25m", 0.0, 2.0, "bulge"),
          ("004-04", "lco25m", 4.0, -4.0, "bulge"))
# (name, MEMBERFLAG bit (DR17 numbering as recalled, unverified), glon, glat, [Fe/H], age Gyr, vhelio)
CLUSTERS = (("M67", 18, 215.7, 31.9, 0.0, 4.0, 34.0), ("N7789", 19, 115.5, -5.4, -0.02, 1.6, -54.0),
            ("N6819", 21, 74.0, 8.5, 0.05, 2.4, 2.8), ("N6791", 23, 70.0, 10.9, 0.3, 8.0, -47.0),
            ("N188", 17, 122.8, 22.4, 0.1, 6.0, -42.0), ("N2420", 16, 198.1, 19.6, -0.2, 2.0, 74.0))
STAR_BAD, SN_WARN, EXTRATARG_DUPLICATE = 1 << 23, 1 << 11, 1 << 4
# Galactic -> ICRS rotation (transpose of the ICRS -> Galactic matrix, Hipparcos convention)
GAL_TO_ICRS = np.array([[-0.0548755604, -0.8734370902, -0.4838350155],
                        [0.4941094279, -0.4448296300, 0.7469822445],
                        [-0.8676661490, -0.1980763734, 0.4559837762]]).T


@dataclass
class SimulationSummary:
    n_stars: int
    n_files: int
    n_visits: int
    out_dir: Path
    paths: dict = field(default_factory=dict)  # allstar, truth, apstar (list of files)


def galactic_to_icrs(glon: np.ndarray, glat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    l, b = np.radians(glon), np.radians(glat)
    v = GAL_TO_ICRS @ np.stack([np.cos(b) * np.cos(l), np.cos(b) * np.sin(l), np.sin(b)])
    return np.degrees(np.arctan2(v[1], v[0])) % 360.0, np.degrees(np.arcsin(np.clip(v[2], -1, 1)))


def apogee_id(ra: float, dec: float) -> str:
    """2MASS-style designation 2MHHMMSSss+DDMMSSs (18 characters)."""
    h = ra / 15.0
    hh, mm = int(h), int((h % 1) * 60)
    ss = int(((h * 3600) % 60) * 100)
    sign = "-" if dec < 0 else "+"
    d = abs(dec)
    dd, dm, ds = int(d), int((d % 1) * 60), int(((d * 3600) % 60) * 10)
    return f"2M{hh:02d}{mm:02d}{ss:04d}{sign}{dd:02d}{dm:02d}{ds:03d}"


def kiel(stage: np.ndarray, age: np.ndarray, feh: np.ndarray, rng: np.random.Generator):
    """(mass, teff, logg) from evolutionary stage, age and [Fe/H] (parameterisation in the module doc)."""
    n = stage.size
    m_to = np.clip((age / 10.0) ** -0.4 * (1 + 0.1 * feh), 0.75, 3.0)
    mass = np.where(stage == "rc", np.maximum(m_to - 0.1, 0.7), m_to)
    dwarf = stage == "dwarf"
    m_d = rng.uniform(0.65, np.minimum(1.3, m_to))
    tau = np.clip(age / (10.0 * m_d**-2.5), 0.0, 1.0)
    radius = m_d**0.85 * (1 + 0.5 * tau**2)
    t_d = 5772.0 * m_d**0.55 * 10 ** (-0.06 * feh) * (1 - 0.05 * tau) + rng.normal(0, 40, n)
    g_d = 4.438 + np.log10(m_d) - 2 * np.log10(radius) + rng.normal(0, 0.03, n)
    g_rgb = 1.0 + 2.5 * np.sqrt(rng.random(n))
    t_rgb = 4600 + 280 * (g_rgb - 2.5) - 350 * feh + 120 * (mass - 1.2) + rng.normal(0, 40, n)
    g_rc = 2.45 + 0.3 * np.log10(mass / 1.2) + rng.normal(0, 0.05, n)
    t_rc = 4700 - 300 * feh + 150 * (mass - 1.2) + rng.normal(0, 40, n)
    teff = np.select([dwarf, stage == "rc"], [t_d, t_rc], t_rgb)
    logg = np.select([dwarf, stage == "rc"], [g_d, g_rc], g_rgb)
    mass = np.where(dwarf, m_d, mass)
    return mass, np.clip(teff, 3560.0, 6950.0), np.clip(logg, 0.4, 5.2)


def draw_stars(n_stars: int, rng: np.random.Generator) -> dict:
    """True parameters, positions, photometry and visit counts of n_stars distinct stars."""
    n_clusters = min(len(CLUSTERS), max(1, round(n_stars / 150)))
    sizes = rng.integers(10, 21, n_clusters)
    sizes = np.minimum(sizes, max(2, n_stars // (3 * n_clusters)))
    n_field = n_stars - int(sizes.sum())
    pop = rng.choice(POPULATIONS, size=n_field, p=POP_FRACTIONS)
    cluster = np.array([""] * n_field + [CLUSTERS[c][0] for c in range(n_clusters) for _ in range(sizes[c])], dtype=object)
    pop = np.concatenate([pop, np.array(["cluster"] * int(sizes.sum()))])
    n = n_stars
    feh = np.select([pop == "thin", pop == "thick", pop == "halo"],
                    [rng.normal(-0.05, 0.2, n), rng.normal(-0.45, 0.25, n), rng.normal(-1.3, 0.35, n)],
                    np.where(rng.random(n) < 0.5, rng.normal(0.25, 0.15, n), rng.normal(-0.4, 0.25, n)))
    alpha = np.select([pop == "thin", pop == "thick", pop == "halo"],
                      [0.02 - 0.15 * feh, 0.30 - 0.1 * (feh + 0.5), np.where(rng.random(n) < 0.3, 0.1, 0.3)],
                      np.clip(0.12 - 0.3 * feh, -0.05, 0.35)) + rng.normal(0, 0.03, n)
    age = np.select([pop == "thin", pop == "thick", pop == "halo"],
                    [rng.uniform(0.5, 10, n), rng.uniform(8, 12.5, n), rng.uniform(10, 13, n)], rng.uniform(7, 12, n))
    vhelio = rng.normal(0, np.select([pop == "halo", pop == "bulge"], [150.0, 120.0], 40.0))
    glon, glat = np.zeros(n), np.zeros(n)
    field_name, telescope = np.empty(n, dtype=object), np.empty(n, dtype=object)
    for i in range(n):
        if cluster[i]:
            c = next(c for c in CLUSTERS if c[0] == cluster[i])
            feh[i], alpha[i], age[i], vhelio[i] = c[4], 0.0, c[5], c[6] + rng.normal(0, 1.0)
            field_name[i], telescope[i], l0, b0, radius = c[0], "apo25m", c[2], c[3], 0.3
        else:
            kind = {"thin": "disc", "thick": "disc", "halo": "halo", "bulge": "bulge"}[pop[i]]
            if pop[i] == "thick" and rng.random() < 0.3:
                kind = "halo"
            opts = [f for f in FIELDS if f[4] == kind]
            f = opts[int(rng.integers(len(opts)))]
            field_name[i], telescope[i], l0, b0, radius = f[0], f[1], f[2], f[3], 1.5
        glon[i] = (l0 + rng.uniform(-radius, radius) / max(np.cos(np.radians(b0)), 0.2)) % 360
        glat[i] = b0 + rng.uniform(-radius, radius)
    # cluster members share [Fe/H], [alpha/Fe], age exactly (set above, after the field draws)
    feh, alpha = np.clip(feh, -0.98, 0.51), np.clip(alpha, -0.2, 0.5)
    stage = rng.choice(["dwarf", "rgb", "rc"], size=n, p=[0.3, 0.5, 0.2])
    stage[(stage == "rc") & (feh < -0.8)] = "rgb"  # no red clump for metal-poor stars
    mass, teff, logg = kiel(stage, age, feh, rng)
    ra, dec = galactic_to_icrs(glon, glat)
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
    return {"apogee_id": np.array(ids), "population": pop, "cluster": cluster, "stage": stage,
            "teff": teff, "logg": logg, "fe_h": feh, "alpha_fe": alpha, "mg_fe": alpha.copy(), "mass": mass,
            "age": age, "vhelio": vhelio, "ra": ra, "dec": dec, "glon": glon, "glat": glat, "field": field_name,
            "telescope": telescope, "h": h, "j": h + 0.75 * jk, "k": h - 0.25 * jk, "nvisits": nvis}


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
    bits = {c[0]: c[1] for c in CLUSTERS}
    memberflag = np.array([(1 << bits[m]) if m else 0 for m in member], dtype=np.int64)
    # PARAM order (our HDU3 PARAM_SYMBOL): TEFF LOGG VMICRO M_H C_M N_M ALPHA_M VSINI VMACRO
    param = np.full((n, 9), np.nan, dtype=np.float32)
    for j, k in ((0, "TEFF"), (1, "LOGG"), (3, "M_H"), (6, "ALPHA_M")):
        param[:, j] = lab[k]
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731 - ASPCAP label columns are float32
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
    """truth.fits: the true labels, masses, ages and populations (never in allStar)."""
    from astropy.io import fits
    from astropy.table import Table

    t = Table({"APOGEE_ID": stars["apogee_id"]})
    for k in ("teff", "logg", "fe_h", "mg_fe", "alpha_fe", "mass", "age"):
        t[k] = stars[k]
    for k in ("population", "cluster", "stage"):
        t[k] = np.array([str(v) for v in stars[k]])
    t["vhelio"] = stars["vhelio"]
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(t)]).writeto(path, overwrite=True)
    return path


def plan_survey(n_stars: int, seed: int, out_dir: str = "") -> tuple[dict, list[dict], list[dict]]:
    """(stars, files, tasks): the stars, their apStar files and one render task per file. Deterministic in seed."""
    from pairspec.emulator import KuruczEmulator

    if n_stars < 1:
        raise ValueError(f"n_stars must be >= 1, got {n_stars}")
    rng = np.random.default_rng((seed, 0))
    stars = draw_stars(n_stars, rng)
    files = plan_files(stars, seed, rng)
    emu = KuruczEmulator.load()
    labels = np.stack([stars[k] for k in ("teff", "logg", "fe_h", "alpha_fe")], axis=1)
    norm = emu.normalized(np.clip(labels, emu.x_min, emu.x_max))
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
    results = _run(tasks, workers, progress)
    cols = allstar_table(stars, files, results, seed)
    allstar, truth = write_tables(out_dir, stars, cols)
    paths = {"allstar": allstar, "truth": truth, "apstar": [out_dir / f["path"] for f in files]}
    return SimulationSummary(n_stars=n_stars, n_files=len(files), n_visits=int(sum(r["nvisits"] for r in results)),
                             out_dir=out_dir, paths=paths)


def _run(tasks: list[dict], workers: int, progress: bool) -> list[dict]:
    from rich.progress import Progress

    with Progress(disable=not progress, transient=False) as bar:
        job = bar.add_task("simulating apStar files", total=len(tasks))
        if workers <= 1:
            results = []
            for t in tasks:
                results.append(render_star_file(t))
                bar.advance(job)
            return results
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for r in pool.map(render_star_file, tasks, chunksize=4):
                results.append(r)
                bar.advance(job)
            return results
