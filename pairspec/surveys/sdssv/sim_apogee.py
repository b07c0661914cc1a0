"""APOGEE rows of a synthetic mwmVisit / mwmStar, from APOGEE's own visit machinery (pairspec.surveys.apogee:
plan_visits for dates, RVs, fibres and S/N; render_visit for instrument, noise, masks and resampling;
combine_visits for the coadd). What is SDSS-V's own (formats.md 2.4):
- `in_stack = True` visits are the apStar's rest-frame rows; `in_stack = False` ones astra resampled from
  the apVisit with zero velocity, so they stay at their topocentric RV (rendered with vrad_measured = 0);
- ivar = err^-2 (0 where err is 0 or not finite), pixel_flags = APOGEE_PIXMASK as uint64;
- the mwmStar row is the coadd of the in-stack visits only (apStar row 0; NaN flux in the gaps);
- one exposure may come twice, reduced by the DR17 and the SDSS-V pipelines (`release` dr17 / sdss5).
"""

from __future__ import annotations

import numpy as np

from pairspec.surveys import simtools
from pairspec.surveys.apogee.files import mjd_to_iso, plan_visits, visit_starflag
from pairspec.surveys.apogee.visits import combine_visits, render_visit

RV_FAIL = 1 << 22  # STARFLAG bit astra's visit flag_bad uses (spectrum_flags)
NOT_IN_STACK_FRACTION = 0.15


def _ivar(err: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = 1.0 / np.asarray(err, dtype=np.float64) ** 2
    ivar[~np.isfinite(ivar) | ~(np.asarray(err) > 0)] = 0.0
    return ivar.astype(np.float32)


def plan_site(rng, n: int, task: dict, first: bool) -> list[dict]:
    """The APOGEE visits of one star at one observatory; on the star's main site (`first`) the earliest visit
    is always in the stack, so every APOGEE star has a rest-frame visit."""
    visits = plan_visits(dict(task, nvisits=n), rng)
    for k, v in enumerate(visits):
        v["in_stack"] = (first and k == 0) or rng.random() >= NOT_IN_STACK_FRACTION
        v["rv_fail"] = (not v["in_stack"]) and rng.random() < 0.2  # DRP leaves RV failures out of the apStar
    return visits


def render_site(rest_model: np.ndarray, star: dict, visits: list[dict], rng, base: dict) -> tuple[list, dict | None]:
    """(mwmVisit rows, mwmStar row or None) of one observatory. `base`: the scalar columns shared by every
    row (sdss_id, telescope, field, plate, obj, healpix, catalogid, v_astra, prefix)."""
    rows, rendered_stack, stack_visits = [], [], []
    for k, v in enumerate(visits):
        frame = v if v["in_stack"] else dict(v, vrad_measured=0.0)  # astra: "resample with 0 v_rad"
        r = render_visit(rest_model, star, frame, rng)
        flux = r["flux"].astype(np.float32)
        good = (r["err"] > 0) & (r["err"] < 1e4)
        cont = simtools.smooth_continuum(flux, good).astype(np.float32) if good.any() else np.ones_like(flux)
        flags = visit_starflag(v, r) | (RV_FAIL if v["rv_fail"] else 0)
        rows.append({**base, "release": "sdss5", "filetype": "apVisit", "apred": "1.3", "fiber": v["fiber"],
                     "mjd": v["mjd"], "date_obs": mjd_to_iso(v["jd"] - 2400000.5), "jd": v["jd"],
                     "exptime": 1000.0 * int(rng.integers(1, 5)), "snr": r["snr"], "in_stack": v["in_stack"],
                     "spectrum_flags": flags, "v_rad": v["vrad_measured"] + v["bc"], "v_rel": v["vrad_measured"],
                     "e_v_rel": v["verr"], "bc": v["bc"], "n_components": 1,
                     "doppler_teff": round(star["teff"], -2), "doppler_logg": round(star["logg"] * 2) / 2,
                     "doppler_fe_h": round(star["fe_h"] * 4) / 4, "reduction": base["obj"],
                     "flux": flux, "ivar": _ivar(r["err"]), "pixel_flags": r["mask"].astype(np.uint64),
                     "continuum": cont})
        if v["in_stack"]:
            rendered_stack.append(r)
            stack_visits.append(v)
    if not rendered_stack:
        return rows, None
    if len(rendered_stack) == 1:  # one visit: the apStar row 0 is that visit, NaN outside its coverage
        r = rendered_stack[0]
        c_flux, c_err, c_mask = r["flux"].copy(), r["err"].copy(), r["mask"].copy()
        c_flux[~r["cov"]], c_err[~r["cov"]] = np.nan, np.nan
    else:
        fl, er, mk = combine_visits(rendered_stack)
        c_flux, c_err, c_mask = fl[0], er[0], mk[0]
    snr = float(np.nanmedian(c_flux / np.where(c_err > 0, c_err, np.nan)))
    vr = np.array([v["vrad_measured"] + v["bc"] for v in stack_visits])
    fibers = np.array([v["fiber"] for v in stack_visits], dtype=float)
    mjds = [v["mjd"] for v in stack_visits]
    coadd = {**base, "release": "sdss5", "filetype": "apStar", "apred": "1.3", "min_mjd": min(mjds),
             "max_mjd": max(mjds), "n_entries": len(stack_visits), "n_visits": len(stack_visits),
             "n_good_visits": len(stack_visits), "n_good_rvs": len(stack_visits), "snr": snr,
             "mean_fiber": float(fibers.mean()), "std_fiber": float(fibers.std()), "spectrum_flags": 0,
             "v_rad": float(vr.mean()), "e_v_rad": float(np.mean([v["verr"] for v in stack_visits])),
             "std_v_rad": float(vr.std()), "flux": c_flux.astype(np.float32), "ivar": _ivar(c_err),
             "pixel_flags": c_mask.astype(np.uint64),
             "continuum": np.where(np.isfinite(c_flux), c_flux, 0).astype(np.float32)}
    return rows, coadd


def dr17_duplicate(row: dict, rng) -> dict:
    """The same exposure reduced again by the DR17 pipeline: nearly the same pixels (same photons), release
    dr17. The adapter must keep one of the two, or the leave-one-out target would hold the input's noise."""
    dup = dict(row, release="dr17", apred="dr17", in_stack=True)
    dup["flux"] = (row["flux"] * (1.0 + 1e-3 * rng.standard_normal(row["flux"].size))).astype(np.float32)
    dup["snr"] = row["snr"] * 0.98
    return dup
