"""A synthetic SDSS-V MWM survey in astra's formats: OUT plays $MWM_ASTRA/{v_astra}, with
spectra/visit/{g1}/{g2}/mwmVisit-*.fits, spectra/star/{g1}/{g2}/mwmStar-*.fits, summary/astraAllStarASPCAP-*.fits.gz
(APOGEE labels, HDU2), summary/astraAllStarBossNet-*.fits.gz (BOSS labels, HDU1) and truth.fits.

Stars: the Galactic mix of pairspec.surveys.population in APO / LCO pointings. Every star but ~1 in 12 has
APOGEE visits at its observatory (1-8; ~10 % also 1-3 at the other one), ~70 % have BOSS visits (BOSS-only
stars leave both APOGEE HDUs empty); ~15 % of APOGEE visits are not in the stack (not rest-framed), some of
those with RV_FAIL; ~6 % of stars carry one exposure twice (DR17 and SDSS-V reductions). Visit S/N follows
the star's magnitude (lognormal), so many visits are below 60.
Summary labels = truth + S/N-dependent noise (apogee.simulate.survey_labels for ASPCAP; BossNet: sigma_Teff =
hypot(3000/SNR, 40) K, sigma_logg = hypot(2/SNR, 0.05), sigma_[Fe/H] = hypot(1.5/SNR, 0.05)), on the X/H
scale; ~3 % of rows flag_bad, flag_warn below S/N 70, ~2 % NaN mg_h; a DR17-release duplicate ASPCAP row for
the stars with a DR17 exposure, and one ASPCAP row of a star without files (n >= 10).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from pairspec.surveys.population import draw_population
from pairspec.surveys.sdssv import sim_files
from pairspec.surveys.sdssv.layout import mwm_relpath

FIELDS = (("120+12", "apo", 120.0, 12.0, "disc"), ("K04_083+13", "apo", 83.5, 13.0, "disc"),
          ("060+00", "apo", 60.0, 0.0, "disc"), ("180+04", "apo", 180.0, 4.0, "disc"),
          ("300+05", "lco", 300.0, 5.0, "disc"), ("090+60", "apo", 90.0, 60.0, "halo"),
          ("293-37-C", "lco", 293.0, -37.0, "halo"), ("000+02", "apo", 0.0, 2.0, "bulge"),
          ("004-04", "lco", 4.0, -4.0, "bulge"))
TELESCOPE = {"apo": "apo25m", "lco": "lco25m"}
OTHER = {"apo": "lco", "lco": "apo"}
V = sim_files.V_ASTRA


def boss_available() -> bool:
    """BOSS spectra need pairspec.surveys.linegen (a colleague's line-list generator); without it the BOSS
    HDUs are written empty."""
    try:
        from pairspec.surveys.linegen import normalized_spectrum  # noqa: F401
    except ImportError:
        return False
    return True


def _unique_ids(rng, n: int) -> np.ndarray:
    ids = set()
    while len(ids) < n:
        ids.update(int(i) for i in rng.integers(10_000_000, 130_000_000, n - len(ids)))
    return np.array(sorted(ids)[:n])[rng.permutation(n)]


def draw_stars(n: int, rng) -> dict:
    """Population, ids, photometry and what each star was observed with (see the module docstring)."""
    from pairspec.surveys.apogee.simulate import apogee_id

    s = draw_population(n, rng, FIELDS)
    s["sdss_id"] = _unique_ids(rng, n)
    s["h"] = np.clip(rng.normal(11.0, 1.0, n), 7.5, 13.5)
    s["g"] = s["h"] + np.clip(1.2 + (5200 - s["teff"]) / 900.0, 0.6, 4.0) + rng.normal(0, 0.2, n)
    s["has_apogee"] = rng.random(n) > 1 / 12
    s["has_boss"] = rng.random(n) < 0.7
    if n >= 10 and s["has_apogee"].all():
        s["has_apogee"][int(rng.integers(n))] = False  # at least one BOSS-only star: empty APOGEE HDUs
    s["has_boss"] |= ~s["has_apogee"]
    s["n_apogee"] = rng.choice(np.arange(1, 9), size=n, p=np.array([16, 20, 20, 14, 10, 8, 7, 5]) / 100)
    s["n_other"] = np.where(rng.random(n) < 0.1, rng.integers(1, 4, n), 0)
    s["n_boss"] = rng.integers(1, 6, n)
    s["dr17_dup"] = s["has_apogee"] & (rng.random(n) < 0.06)
    if n >= 10 and not s["dr17_dup"].any():
        s["dr17_dup"][int(np.flatnonzero(s["has_apogee"])[0])] = True
    s["apogee_id"] = np.array([apogee_id(r, d) if dup or rng.random() < 0.3 else ""
                               for r, d, dup in zip(s["ra"], s["dec"], s["dr17_dup"])])
    return s


def plan_survey(n_stars: int, seed: int, out_dir: str) -> tuple[dict, list[dict]]:
    """(stars, one render task per star); deterministic in seed, rest-frame models computed here once."""
    from pairspec.surveys.apogee.emulator import KuruczEmulator

    if n_stars < 1:
        raise ValueError(f"n_stars must be >= 1, got {n_stars}")
    rng = np.random.default_rng((seed, 0))
    stars = draw_stars(n_stars, rng)
    labels = np.stack([stars[k] for k in ("teff", "logg", "fe_h", "alpha_fe")], axis=1)
    emu = KuruczEmulator.load()
    stars["model_7214"] = emu.normalized(np.clip(labels, emu.x_min, emu.x_max))
    stars["model_index"] = emu.apstar_index
    boss = boss_available()
    if boss:
        from pairspec.surveys.sdssv.sim_boss import normalized_models

        stars["model_boss"] = normalized_models(labels)
    tasks = []
    for i in range(n_stars):
        sid = int(stars["sdss_id"][i])
        tasks.append({
            "seed": (seed, 1, i), "out_dir": out_dir, "sdss_id": sid, "site": stars["site"][i],
            "field": stars["field"][i], "apogee_id": stars["apogee_id"][i], "teff": float(stars["teff"][i]),
            "logg": float(stars["logg"][i]), "fe_h": float(stars["fe_h"][i]), "vhelio": float(stars["vhelio"][i]),
            "ra": float(stars["ra"][i]), "dec": float(stars["dec"][i]), "l": float(stars["glon"][i]),
            "b": float(stars["glat"][i]), "h": float(stars["h"][i]), "g": float(stars["g"][i]),
            "n_apogee": int(stars["n_apogee"][i]) if stars["has_apogee"][i] else 0,
            "n_other": int(stars["n_other"][i]) if stars["has_apogee"][i] else 0,
            "n_boss": int(stars["n_boss"][i]) if stars["has_boss"][i] and boss else 0,
            "dr17_dup": bool(stars["dr17_dup"][i]), "norm_7214": stars["model_7214"][i],
            "apstar_index": emu.apstar_index, "norm_boss": stars["model_boss"][i] if boss else None,
            "healpix": zlib.crc32(str(sid).encode()) % 196608, "catalogid": 63050395000000000 + sid,
            "gaia_id": 5000000000000000000 + sid * 1009, "plate": str(5000 + zlib.crc32(stars["field"][i].encode()) % 5000),
        })
    return stars, tasks


def render_star(task: dict) -> dict:
    """Write the star's mwmVisit and mwmStar files; return the coadd S/N per (instrument, site)."""
    from pairspec.surveys.apogee.visits import NPIX
    from pairspec.surveys.sdssv import sim_apogee

    rng = np.random.default_rng(task["seed"])
    sid, site = task["sdss_id"], task["site"]
    base = {"sdss_id": sid, "v_astra": V, "healpix": task["healpix"], "catalogid": task["catalogid"],
            "obj": task["apogee_id"] or f"{sid}", "field": task["field"], "plate": task["plate"]}
    visit_rows, star_rows, out = {}, {}, {"sdss_id": sid}
    rest = np.ones(NPIX)
    rest[task["apstar_index"]] = task["norm_7214"]
    star = {"teff": task["teff"], "logg": task["logg"], "fe_h": task["fe_h"],
            "flux_scale": 830.0 * 10 ** (-0.4 * (task["h"] - 10.32))}
    apo_task = {"mjd0": 59300.0 + zlib.crc32(str(sid).encode()) % 1200, "bc_phase": task["ra"],
                "bc_amp": 29.8 * float(np.cos(np.radians(task["dec"]))), "vhelio": task["vhelio"],
                "snr_scale": 40.0 * 10 ** (-0.2 * (task["h"] - 11.0))}
    for s, n in ((site, task["n_apogee"]), (OTHER[site], task["n_other"])):
        if not n:
            continue
        b = dict(base, telescope=TELESCOPE[s], prefix="ap")
        visits = sim_apogee.plan_site(rng, n, apo_task, first=s == site)
        rows, coadd = sim_apogee.render_site(rest, star, visits, rng, b)
        if task["dr17_dup"] and s == site:
            k = next(j for j, r in enumerate(rows) if r["in_stack"])
            rows.insert(k + 1, sim_apogee.dr17_duplicate(rows[k], rng))
        for k, r in enumerate(rows):
            r.update(spectrum_pk=sid * 100 + k, visit_pk=sid * 100 + k, star_pk=sid, rv_visit_pk=sid * 100 + k)
        visit_rows[f"APOGEE/{s.upper()}"] = rows
        if coadd is not None:
            coadd["spectrum_pk"] = sid * 100 + 99
            star_rows[f"APOGEE/{s.upper()}"] = [coadd]
            out[("apogee", s)] = {"snr": coadd["snr"], "n_visits": coadd["n_visits"], "min_mjd": coadd["min_mjd"],
                                  "max_mjd": coadd["max_mjd"], "dr17_dup": task["dr17_dup"] and s == site}
    if task["n_boss"]:
        _render_boss(task, rng, site, base, visit_rows, star_rows, out)
    source = _source(task, visit_rows)
    root = Path(task["out_dir"])
    sim_files.write_mwm(root / mwm_relpath("mwmVisit", V, sid), source, visit_rows, star=False)
    sim_files.write_mwm(root / mwm_relpath("mwmStar", V, sid), source, star_rows, star=True)
    out["n_visits"] = sum(len(r) for r in visit_rows.values())
    return out


def _render_boss(task, rng, site, base, visit_rows, star_rows, out) -> None:
    from pairspec.surveys.sdssv import sim_boss

    star = {"teff": task["teff"], "flux_scale": 40.0 * 10 ** (-0.4 * (task["g"] - 16.0))}
    visits = sim_boss.plan_visits(rng, task["n_boss"], 59200.0 + task["sdss_id"] % 1300,
                                  30.0 * 10 ** (-0.2 * (task["g"] - 14.0)), task["vhelio"])
    rows = []
    for k, v in enumerate(visits):
        r = sim_boss.render_visit(task["norm_boss"], star, v, task["vhelio"], rng)
        rows.append({**base, **v, **r, "spectrum_pk": task["sdss_id"] * 100 + 50 + k, "release": "sdss5",
                     "filetype": "specFull", "run2d": "v6_2_1", "telescope": TELESCOPE[site], "n_exp": 4,
                     "exptime": 3600.0, "catalogid": task["catalogid"]})
    visit_rows[f"BOSS/{site.upper()}"] = rows
    stack = [r for r in rows if r["in_stack"]]
    if stack:
        c = sim_boss.coadd(stack)
        with np.errstate(invalid="ignore"):
            snr = float(np.nanmedian(c["flux"] * np.sqrt(c["ivar"])))
        vr = np.array([r["xcsao_v_rad"] for r in stack])
        star_rows[f"BOSS/{site.upper()}"] = [{**base, **c, "release": "sdss5", "filetype": "specFull",
                                              "run2d": "v6_2_1", "telescope": TELESCOPE[site],
                                              "min_mjd": min(r["mjd"] for r in stack), "n_visits": len(rows),
                                              "max_mjd": max(r["mjd"] for r in stack), "n_good_visits": len(stack),
                                              "n_good_rvs": len(stack), "v_rad": float(vr.mean()),
                                              "std_v_rad": float(vr.std()), "snr": snr, "zwarning_flags": 0,
                                              "spectrum_pk": task["sdss_id"] * 100 + 98}]
        out[("boss", site)] = {"snr": snr, "n_visits": len(stack)}


def _source(task: dict, visit_rows: dict) -> dict:
    """HDU0 values: identifiers, astrometry, photometry, and the counts astra leaves blank when zero."""
    apogee = [r for k, rows in visit_rows.items() if k.startswith("APOGEE") for r in rows]
    boss = [r for k, rows in visit_rows.items() if k.startswith("BOSS") for r in rows]
    h = task["h"]
    return {"sdss_id": task["sdss_id"], "apogee_id": task["apogee_id"], "gaia_id": task["gaia_id"],
            "healpix": task["healpix"], "catalogid": task["catalogid"], "ra": task["ra"], "dec": task["dec"],
            "l": task["l"], "b": task["b"], "v_rad": task["vhelio"], "g_mag": task["g"], "j_mag": h + 0.6,
            "h_mag": h, "k_mag": h - 0.15, "n_apogee": len(apogee), "n_boss": len(boss),
            "a_minmjd": min((r["mjd"] for r in apogee), default=None),
            "a_maxmjd": max((r["mjd"] for r in apogee), default=None),
            "b_minmjd": min((r["mjd"] for r in boss), default=None),
            "b_maxmjd": max((r["mjd"] for r in boss), default=None)}
