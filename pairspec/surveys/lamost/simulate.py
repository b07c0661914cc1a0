"""A synthetic LAMOST survey in the real file formats: MRS night files, LRS epoch files, their label
catalogues, and truth files. Stars (this module) -> spectra (spectra.py) -> instrument (render.py) ->
files (writers.py).

Tree under OUT (the layout of LAMOST's archive: date / plan / file):
  mrs/<LMJD>/<PLANID>/med-<LMJD>-<PLANID>_sp<SPID>-<FIBERID>.fits   one file per star and night
  lrs/<LMJD>/<PLANID>/spec-<LMJD>-<PLANID>_sp<SPID>-<FIBERID>.fits  one file per star and epoch (70 % of stars)
  lamost_MRS_catalogue.fits, lamost_LRS_catalogue.fits  one row per file (obsid): LASP-like labels, rv
  truth.fits (MRS grid), truth_lrs.fits (LRS grid): star_id, true labels; HDU SPECTRA noiseless models
Stars: the Galactic mix of pairspec.surveys.population in northern LAMOST-like pointings (Kepler field,
anticentre, ...), g = 10.5-15. MRS: 1-7 nights (time-domain fields), 1-8 exposures a night; B-arm
exposure S/N = 45 x 10^(-0.2 (g - 12.5)) x night (lognormal 0.35) x exposure (lognormal 0.1) factors, so
most exposures are below 60; files before LMJD 59000 in the DR7 "rows" layout, later ones in the DR9
"arrays" layout. 15 % of later nights carry a DESIG whose last digit differs and a position 0.3" off (as
KIC 8098300's real files). 10 % of stars are binaries (K 5-30 km/s). LRS: 1-4 epochs, layouts DR1
image (LMJD < 56000), DR2-8 image, DR9 table (LMJD >= 58800); header Z = (RV + 3 km/s noise) / c.
Catalogue labels = truth + S/N-dependent noise (sigma_Teff = hypot(2500/SNR, 60) K, sigma_logg =
hypot(4/SNR, 0.08), sigma_[Fe/H] = hypot(1.5/SNR, 0.05), sigma_[alpha/M] = hypot(1/SNR, 0.03)) + small
systematics (giants +30 K, dwarfs' log g -0.03); 1 % of rows -9999 everywhere (failed fits), 3 % no alpha_m.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairspec.surveys.lamost.layout import LRS_GRID, MRS_GRID
from pairspec.surveys.population import draw_population

# (name, site, glon, glat, kind): population.draw_population needs a disc, halo and bulge kind
FIELDS = (("KEPLER", "LAMOST", 76.3, 13.5, "disc"), ("ANTICENTRE", "LAMOST", 180.0, 5.0, "disc"),
          ("TAURUS", "LAMOST", 172.0, -15.0, "disc"), ("NGP", "LAMOST", 150.0, 60.0, "halo"),
          ("ANDROMEDA", "LAMOST", 121.0, -30.0, "halo"), ("INNER", "LAMOST", 40.0, 20.0, "bulge"))
LABELS = ("teff", "logg", "fe_h", "alpha_fe")
BATCH = 64  # stars whose models are made at once (bounded memory; linegen's set-up cost shared)


@dataclass
class Summary:
    n_stars: int
    n_mrs_files: int
    n_exposures: int
    n_lrs_files: int
    out: Path
    truth: Path
    truth_lrs: Path


def designation(ra: float, dec: float) -> str:
    """LAMOST designation (without the 'LAMOST ' prefix): JHHMMSS.ss+DDMMSS.s."""
    h = (ra % 360.0) / 15.0
    hh, mm = int(h), int((h * 60) % 60)
    ss = math.floor(((h * 3600) % 60) * 100) / 100
    d = abs(dec)
    dd, dm = int(d), int((d * 60) % 60)
    ds = math.floor(((d * 3600) % 60) * 10) / 10
    return f"J{hh:02d}{mm:02d}{ss:05.2f}{'-' if dec < 0 else '+'}{dd:02d}{dm:02d}{ds:04.1f}"


def _vary(desig: str) -> str:
    """The same star's designation from another plate: the last digit off by one (as the real files)."""
    last = int(desig[-1])
    return desig[:-1] + str(last - 1 if last > 0 else 1)


def plan(n_stars: int, seed: int) -> list[dict]:
    """One dict per star: true labels, position, ids, and its MRS nights and LRS epochs (no spectra)."""
    rng = np.random.default_rng((seed, 0))
    pop = draw_population(n_stars, rng, FIELDS)
    stars, seen = [], set()
    for i in range(n_stars):
        r = np.random.default_rng((seed, 1, i))
        ra, dec = float(pop["ra"][i]), float(pop["dec"][i])
        desig = designation(ra, dec)
        while desig in seen:  # one designation per star: nudge it by ~0.1"
            ra += 3e-5
            desig = designation(ra, dec)
        seen.add(desig)
        star = {k: (float(pop[k][i]) if np.ndim(pop[k]) and pop[k].dtype.kind == "f" else str(pop[k][i]))
                for k in ("teff", "logg", "fe_h", "alpha_fe", "mass", "age", "vhelio", "population", "cluster",
                          "stage", "field")}
        star.update(index=i, ra=ra, dec=dec, desig=desig, gmag=float(r.uniform(10.5, 15.0)),
                    gaia=int(1_000_000_000_000_000_000 + seed * 1_000_003 + i * 7919) % (10**19),
                    binary=(float(r.uniform(5, 30)), float(r.uniform(2, 200)), float(r.uniform(0, 2 * np.pi)))
                    if r.random() < 0.1 else None)
        spid, fiber = 1 + (i // 250) % 16, 1 + i % 250
        snr0 = 45.0 * 10 ** (-0.2 * (star["gmag"] - 12.5))
        nights = []
        n_nights = int(r.choice(np.arange(1, 8), p=[0.2, 0.2, 0.2, 0.15, 0.1, 0.08, 0.07]))
        for k, lmjd in enumerate(np.sort(r.choice(np.arange(58200, 59700), size=n_nights, replace=False))):
            n_exp = int(r.choice(np.arange(1, 9), p=[0.05, 0.1, 0.2, 0.25, 0.15, 0.1, 0.1, 0.05]))
            exptime = int(r.choice([600, 900, 1200], p=[0.2, 0.2, 0.6]))
            start = int(lmjd) * 1440 + int(r.integers(0, 300))
            varied = k > 0 and r.random() < 0.15
            nights.append({
                "lmjd": int(lmjd), "lmjm": [start + e * (exptime // 60 + 3) for e in range(n_exp)],
                "snr": list(snr0 * r.lognormal(0, 0.35) * r.lognormal(0, 0.1, n_exp)), "exptime": exptime,
                "no_light": bool(r.random() < 0.03), "desig": _vary(desig) if varied else desig,
                "ra": ra + (r.normal(0, 0.3 / 3600) if varied else 0.0),
                "dec": dec + (r.normal(0, 0.3 / 3600) if varied else 0.0),
                "planid": f"{star['field'][:4].upper()}{int(lmjd) % 1000:03d}K{1 + i // 4000:02d}", "spid": spid,
                "fiber": fiber, "obsid": 600_000_000 + i * 16_000 + k * 1000 + fiber,
                "layout": "rows" if lmjd < 59000 else "arrays",
                "rv": _rv(star, lmjd, r)})
        epochs = []
        if r.random() < 0.7:
            n_ep = int(r.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
            for k, lmjd in enumerate(np.sort(r.choice(np.arange(55850, 59600), size=n_ep, replace=False))):
                layout = "image_dr1" if lmjd < 56000 else ("image" if lmjd < 58800 else "table")
                epochs.append({"lmjd": int(lmjd), "snr": float(2.0 * snr0 * r.lognormal(0, 0.4)), "layout": layout,
                               "desig": desig if k == 0 or r.random() > 0.15 else _vary(desig),
                               "planid": f"L{star['field'][:4].upper()}{int(lmjd) % 1000:03d}", "spid": spid,
                               "fiber": fiber, "obsid": 300_000_000 + i * 16_000 + k * 1000 + fiber,
                               "rv": _rv(star, lmjd, r), "exptime": 1800})
        star.update(nights=nights, epochs=epochs)
        stars.append(star)
    return stars


def _rv(star: dict, lmjd: float, rng) -> float:
    rv = star["vhelio"] + rng.normal(0, 0.3)
    if star["binary"]:
        k, period, phase = star["binary"]
        rv += k * math.sin(2 * math.pi * lmjd / period + phase)
    return float(rv)


def _task(args):
    """Render and write the files of a few stars (a worker's job); returns their per-file records."""
    from pairspec.surveys.lamost.files_out import write_star

    out, stars, models = args
    return [write_star(out, s, m) for s, m in zip(stars, models)]


def simulate_lamost(out, n_stars: int = 500, seed: int = 1, workers: int = 1, progress: bool = True) -> Summary:
    """Write the survey under `out`; the same seed gives the same files for any `workers`."""
    from pairspec.progress import Progress
    from pairspec.surveys.lamost.files_out import write_catalogue, write_truth
    from pairspec.surveys.lamost.spectra import star_models

    if n_stars < 1:
        raise ValueError(f"n_stars must be >= 1, got {n_stars}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stars = plan(n_stars, seed)
    rows, truth_mrs, truth_lrs = [], [], []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        with Progress(enabled=progress) as bar:
            job = bar.add_task("simulating LAMOST files", total=n_stars)
            for a in range(0, n_stars, BATCH):
                batch = stars[a:a + BATCH]
                labels = np.array([[s[k] for k in LABELS] for s in batch])
                models = star_models(labels)
                truth_mrs.append(models["truth_mrs"])
                truth_lrs.append(models["truth_lrs"])
                per_star = [{"mrs": (models["mrs_loglam"], models["mrs"][j]),
                             "lrs": (models["lrs_loglam"], models["lrs"][j])} for j in range(len(batch))]
                chunks = [(str(out), batch[j:j + 8], per_star[j:j + 8]) for j in range(0, len(batch), 8)]
                results = pool.map(_task, chunks) if pool else map(_task, chunks)
                for res in results:
                    rows.extend(res)
                    bar.advance(job, len(res))
    finally:
        if pool:
            pool.shutdown()
    write_catalogue(out / "lamost_MRS_catalogue.fits", stars, [r["mrs"] for r in rows], seed, "mrs")
    write_catalogue(out / "lamost_LRS_catalogue.fits", stars, [r["lrs"] for r in rows], seed, "lrs")
    t_mrs = write_truth(out / "truth.fits", stars, np.concatenate(truth_mrs), MRS_GRID, "mrs")
    has_lrs = np.array([bool(s["epochs"]) for s in stars])
    t_lrs = write_truth(out / "truth_lrs.fits", [s for s, h in zip(stars, has_lrs) if h],
                        np.concatenate(truth_lrs)[has_lrs], LRS_GRID, "lrs")
    return Summary(n_stars=n_stars, n_mrs_files=sum(len(s["nights"]) for s in stars),
                   n_exposures=sum(len(n["lmjm"]) for s in stars for n in s["nights"]),
                   n_lrs_files=sum(len(s["epochs"]) for s in stars), out=out, truth=t_mrs, truth_lrs=t_lrs)
