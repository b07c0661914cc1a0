"""BOSS rows of a synthetic mwmVisit / mwmStar (formats.md 2.4). The rest-frame normalised spectrum comes from
pairspec.surveys.linegen (R ~ 2000); this module adds the instrument and astra's conventions:
- a Planck continuum times a smooth spectrograph response (low in the far blue and far red) and a per-visit
  flux-calibration polynomial, in 1e-17 erg/s/cm2/A;
- photon + sky noise scaled to the visit's S/N, OH sky lines redward of 5500 A (SPPIXMASK BRIGHTSKY, 23),
  fully rejected clumps (FULLREJECT, 18: ivar 0), no data outside 3600-10350 A (NODATA, 24: ivar 0);
- `in_stack` visits resampled with their XCSAO velocity (rest frame); the others (S/N <= 3, a z-warning, a
  poor cross-correlation) with v = 0, so they stay at their barycentric RV;
- the mwmStar row: the ivar-weighted stack of the in-stack visits, flux NaN / ivar 0 below 3650 A.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pairspec.surveys import simtools
from pairspec.surveys.sdssv.layout import BOSS_GRID

NPIX = BOSS_GRID.npix
RESOLUTION = 2000.0
FULLREJECT, NOSKY, BRIGHTSKY, NODATA = 1 << 18, 1 << 22, 1 << 23, 1 << 24
COVERED_AA = (3600.0, 10350.0)
BLUE_CUT_AA = 3650.0


def wavelength() -> np.ndarray:
    return BOSS_GRID.wavelength()


def normalized_models(labels: np.ndarray) -> np.ndarray:
    """Rest-frame normalised spectra (N, 4648) of [teff, logg, fe_h, alpha_fe] rows, from linegen."""
    from pairspec.surveys.linegen import normalized_spectrum

    out = np.asarray(normalized_spectrum(wavelength(), np.atleast_2d(labels), RESOLUTION), dtype=np.float64)
    return out.reshape(np.atleast_2d(labels).shape[0], NPIX)


@lru_cache(maxsize=1)
def _instrument():
    """Sky-line positions (pixels) and strengths, and the spectrograph response: fixed for every seed."""
    rng = np.random.default_rng(20200101)
    wl = wavelength()
    red = np.flatnonzero(wl > 5500.0)
    lines = np.sort(rng.choice(red, size=120, replace=False))
    amps = rng.lognormal(np.log(3.0), 1.0, lines.size)
    x = np.arange(NPIX)
    sky = np.zeros(NPIX)
    for p, a in zip(lines, amps):
        sky += a * np.exp(-0.5 * ((x - p) / 1.2) ** 2)
    response = np.exp(-0.5 * (np.log(wl / 6200.0) / 0.38) ** 2) + 0.05
    bright = np.zeros(NPIX, dtype=np.int32)
    for p, a in zip(lines, amps):
        if a > 6.0:
            bright[max(p - 2, 0):p + 3] |= BRIGHTSKY
    return sky + 0.3, response / response.max(), bright


def continuum_shape(teff: float) -> np.ndarray:
    """The star's continuum as the spectrograph records it, up to a scale: Planck x response (no per-visit
    calibration); truth.fits normalises the noiseless model times this, as a visit is normalised."""
    return simtools.planck_shape(wavelength(), teff) * _instrument()[1]


def plan_visits(rng, n: int, mjd0: float, snr_scale: float, vhelio: float) -> list[dict]:
    """Dates, S/N, XCSAO velocities and stacking decisions of a star's BOSS visits at one observatory."""
    gaps = np.where(rng.random(n) < 0.6, rng.uniform(1, 20, n), rng.uniform(60, 500, n))
    mjds = np.floor(mjd0 + np.cumsum(gaps) - gaps[0]).astype(int)
    visits = []
    for k in range(n):
        snr = float(np.clip(snr_scale * rng.lognormal(0.0, 0.45), 1.5, 250.0))
        e_v = max(1.5, 60.0 / snr)
        rxc = float(np.clip(snr / 2.5 * rng.lognormal(0, 0.2), 0.5, 60))
        zwarn = 4 if rng.random() < 0.05 else 0
        visits.append({"mjd": int(mjds[k]), "snr": snr, "xcsao_v_rad": vhelio + rng.normal(0, e_v),
                       "xcsao_e_v_rad": e_v, "xcsao_rxc": rxc, "zwarning_flags": zwarn,
                       "in_stack": snr > 3 and rxc > 6 and zwarn <= 0, "throughput": rng.lognormal(0, 0.15),
                       "seeing": rng.uniform(0.9, 2.2), "airmass": rng.uniform(1.0, 1.6),
                       "fieldid": int(rng.integers(15000, 112000)), "sky_level": rng.uniform(0.5, 2.0)})
    return visits


def render_visit(rest_norm: np.ndarray, star: dict, visit: dict, vhelio: float, rng) -> dict:
    """flux, ivar, pixel_flags, wresl, continuum of one BOSS visit as astra writes it on the BOSS grid."""
    sky, _, bright = _instrument()
    wl = wavelength()
    # in the stack: resampled with the measured RV (residual = error); otherwise left at the true RV
    residual = vhelio - visit["xcsao_v_rad"] if visit["in_stack"] else vhelio
    model = simtools.lanczos_shift(rest_norm, simtools.velocity_to_pixels(residual, BOSS_GRID.cdelt1))
    xs = np.linspace(-1.0, 1.0, NPIX)
    fluxcal = np.polynomial.legendre.legval(xs, np.r_[1.0, rng.normal(0.0, 0.04, 3)])
    cont = star["flux_scale"] * visit["throughput"] * continuum_shape(star["teff"]) * fluxcal
    covered = (wl >= COVERED_AA[0]) & (wl <= COVERED_AA[1])
    signal = model * cont
    sky_v = sky * visit["sky_level"] * np.median(cont[covered]) * 0.05
    # variance ~ photons of star + sky, scaled so the median S/N over covered pixels is the visit's S/N
    var_shape = np.clip(signal, 1e-3 * np.median(cont[covered]), None) + sky_v
    scale = np.median((signal / np.sqrt(var_shape))[covered]) / visit["snr"]
    err = np.sqrt(var_shape) * scale
    flux = signal + err * rng.standard_normal(NPIX)
    mask = bright.copy()
    for _ in range(rng.poisson(3)):  # rejected clumps (cosmic rays, bad columns): the pipeline zeroes ivar
        p = int(rng.integers(0, NPIX - 8))
        mask[p:p + int(rng.integers(1, 8))] |= FULLREJECT
    if rng.random() < 0.05:
        mask[int(rng.integers(2500, 4000)):][:40] |= NOSKY
    mask[~covered] |= NODATA
    ivar = (1.0 / err**2).astype(np.float32)
    ivar[(mask & (FULLREJECT | NOSKY | NODATA)) != 0] = 0.0
    flux[~covered] = 0.0
    good = ivar > 0
    return {"flux": flux.astype(np.float32), "ivar": ivar, "pixel_flags": mask.astype(np.int32),
            "wresl": (wl / RESOLUTION).astype(np.float32),
            "continuum": simtools.smooth_continuum(flux, good).astype(np.float32)}


def coadd(rows: list[dict]) -> dict:
    """astra's BOSS coadd of in-stack visit rows: ivar-weighted mean, OR of the pixel bits, nothing below
    3650 A (flux NaN, ivar 0)."""
    flux = np.stack([r["flux"] for r in rows]).astype(np.float64)
    ivar = np.stack([r["ivar"] for r in rows]).astype(np.float64)
    w = ivar.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(w > 0, (ivar * flux).sum(0) / w, np.nan)
    blue = wavelength() < BLUE_CUT_AA
    mean[blue], w[blue] = np.nan, 0.0
    return {"flux": mean.astype(np.float32), "ivar": w.astype(np.float32),
            "pixel_flags": np.bitwise_or.reduce(np.stack([r["pixel_flags"] for r in rows]), axis=0),
            "wresl": rows[0]["wresl"], "continuum": np.where(np.isfinite(mean), mean, 0).astype(np.float32)}
