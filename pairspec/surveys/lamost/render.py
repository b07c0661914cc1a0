"""The synthetic LAMOST instrument: one star's MRS night file or LRS epoch file from its noiseless model.

What a file gets (numbers chosen to look like the real files in tests/data/lamost, not fitted to them):
- native pixels: MRS 4136 per arm on a non-uniform grid (log-lambda step varying +-15 % along the
  detector, as the real B 8.3e-6..1.12e-5), start shifted per night by ~1.5e-5, the R arm written red
  to blue; LRS log-linear from COEFF0 = 3.5682, step 1e-4, 3909 px (3904 in the DR1 layout);
- the star's radial velocity of that night (systemic + binary orbit + 0.3 km/s jitter) applied to the
  rest-frame model; heliocentric frame, vacuum, as LAMOST writes;
- flux = counts: a Planck(Teff) continuum times a per-exposure instrument response (a random tilt and
  curvature per arm, ~8 %) and throughput, scaled so the continuum S/N is the exposure's target; noise
  variance = 1.3 counts + sky (50 counts, x20 within 1 A of the [OI] 6302/6366 A sky lines), ivar its
  inverse (the pipeline's estimate); 3 % of MRS nights have no stellar light at all (the real 58268/58269
  nights of KIC 8098300: S/N ~ 0);
- masks: PIXMASK 1 on fixed bad columns, PIXMASK 4 with junk flux (+-1e6) on the first 12 B pixels on
  30 % of nights (both as in the real files), 1.5 unmasked cosmic rays per exposure and arm (10-50 sigma);
  the night's coadd per arm on LAMOST's 1e-5 lattice (ivar-weighted, cosmic rays rejected and flagged
  ORMASK 2, ANDMASK/ORMASK the AND/OR of the exposures' masks), header SNR = 0.95 median(flux sqrt(ivar)).
"""

from __future__ import annotations

import math

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.surveys.lamost.layout import C_KMS
from pairspec.surveys.lamost.resample import to_grid
from pairspec.surveys.simtools import planck_shape

MRS_NPIX = 4136
MRS_ARMS = {"B": (3.69017, 0.04147), "R": (3.79991, 0.03721)}  # native start, span of log10(lambda)
B_BAD_COLUMNS = (776, 777, 778, 779, 4103, 4104)
LRS_COEFF0, LRS_STEP = 3.5682, 1e-4
GAIN, SKY = 1.3, 50.0
SKY_LINES = (6302.05, 6365.54)  # [OI] 6300.30, 6363.78 A in vacuum


def counts_for_snr(snr: float) -> float:
    """Continuum counts C with C / sqrt(GAIN C + SKY) = snr."""
    s2 = snr * snr
    return 0.5 * (s2 * GAIN + math.sqrt(s2 * s2 * GAIN * GAIN + 4.0 * s2 * SKY))


def native_loglam(arm: str, shift: float, beta: float = 0.15) -> np.ndarray:
    start, span = MRS_ARMS[arm]
    u = np.linspace(0.0, 1.0, MRS_NPIX)
    return start + shift + span * (u + beta * (u * u - u))


def observe(model_loglam, model_flux, loglam, rv_kms, teff, snr, rng, no_light=False, sky_lines=True):
    """(flux, ivar, spikes) of one noisy exposure on `loglam` (observed frame) of a rest-frame model."""
    rest = loglam - math.log10(1.0 + rv_kms / C_KMS)
    norm = np.interp(rest, model_loglam, model_flux)
    wave = 10.0 ** loglam
    u = (loglam - loglam.min()) / np.ptp(loglam) - 0.5
    response = 1.0 + rng.normal(0, 0.08) * u + rng.normal(0, 0.08) * (u * u - 1.0 / 12.0)
    cont = planck_shape(wave, teff) * response
    cont /= np.median(cont)
    true = 0.0 if no_light else counts_for_snr(max(snr, 0.5)) * cont * norm
    sky = np.full(wave.size, SKY)
    if sky_lines:
        for line in SKY_LINES:
            sky[np.abs(wave - line) < 1.0] *= 20.0
    var = GAIN * np.maximum(true, 0.0) + sky
    flux = true + rng.standard_normal(wave.size) * np.sqrt(var)
    spikes = rng.choice(wave.size, size=min(rng.poisson(1.5), 5), replace=False)
    flux[spikes] += rng.uniform(10, 50, spikes.size) * np.sqrt(var[spikes])
    return flux, 1.0 / var, spikes


def header_snr(flux, ivar) -> float:
    good = ivar > 0
    return max(0.0, round(0.95 * float(np.median(flux[good] * np.sqrt(ivar[good]))), 2)) if good.any() else 0.0


def night_coadd(exposures: list[dict]) -> dict:
    """LAMOST-like coadd of one arm's exposures on the 1e-5 lattice they all cover."""
    lo = max(e["loglam"].min() for e in exposures)
    hi = min(e["loglam"].max() for e in exposures)
    start = math.ceil(lo / 1e-5) * 1e-5
    n = int(math.floor((hi - start) / 1e-5)) + 1
    grid = LogLinearGrid(crval1=start, cdelt1=1e-5, npix=n)
    wsum, fsum = np.zeros(n), np.zeros(n)
    and_mask, or_mask = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    for e in exposures:
        order = np.argsort(e["loglam"])
        bad = e["pixmask"][order] != 0
        bad[np.isin(order, e["spikes"])] = True
        bits = e["pixmask"][order].astype(np.int64) | np.where(np.isin(order, e["spikes"]), 2, 0)
        f, iv, b = to_grid(e["loglam"][order], e["flux"][order], e["ivar"][order], bits, bad, grid)
        wsum += iv
        fsum += iv * f
        and_mask &= b & 0xFFFF
        or_mask |= b & 0xFFFF
    flux = np.where(wsum > 0, fsum / np.where(wsum > 0, wsum, 1.0), 0.0)
    loglam = start + 1e-5 * np.arange(n)
    return {"loglam": loglam, "flux": flux, "ivar": wsum, "andmask": and_mask.astype(np.int16),
            "ormask": or_mask.astype(np.int16), "snr": header_snr(flux, wsum),
            "lmjmlist": [e["lmjm"] for e in exposures]}


def render_mrs_night(model, night: dict, teff: float, rng) -> tuple[list[dict], dict]:
    """(exposures, coadds) of one MRS night. model: (loglam, flux) rest-frame, R = 7500."""
    exposures = []
    junk = rng.random() < 0.3
    shift = rng.normal(0, 1.5e-5)
    for k, (lmjm, snr) in enumerate(zip(night["lmjm"], night["snr"])):
        for arm in ("B", "R"):
            loglam = native_loglam(arm, shift)
            arm_snr = snr * (1.0 if arm == "B" else 1.6)  # the red arm collects more light (real files: ~1.6x)
            flux, ivar, spikes = observe(model[0], model[1], loglam, night["rv"], teff, arm_snr, rng,
                                         night["no_light"], sky_lines=arm == "R")
            pixmask = np.zeros(MRS_NPIX, np.int16)
            if arm == "B":
                pixmask[list(B_BAD_COLUMNS)] = 1
                if junk:
                    pixmask[:12] = 4
                    flux[:12] = rng.uniform(-1e6, 1e6, 12)
            if arm == "R":  # written red to blue, as the real files
                loglam, flux, ivar, pixmask = loglam[::-1], flux[::-1], ivar[::-1], pixmask[::-1]
                spikes = MRS_NPIX - 1 - spikes
            exposures.append({"arm": arm, "lmjm": int(lmjm), "loglam": loglam, "flux": flux, "ivar": ivar,
                              "pixmask": pixmask, "snr": header_snr(flux, ivar), "exptime": night["exptime"],
                              "spikes": spikes})
    coadds = {arm: night_coadd([e for e in exposures if e["arm"] == arm]) for arm in ("B", "R")}
    return exposures, coadds


def lrs_wavelength(layout: str) -> np.ndarray:
    n = 3904 if layout == "image_dr1" else 3909
    return 10.0 ** (LRS_COEFF0 + LRS_STEP * np.arange(n))


def render_lrs_epoch(model, epoch: dict, teff: float, rng, layout: str) -> dict:
    """flux, ivar, andmask, ormask, wavelength and S/N keys of one LRS epoch. model: R = 1800."""
    wave = lrs_wavelength(layout)
    loglam = np.log10(wave)
    flux, ivar, _ = observe(model[0], model[1], loglam, epoch["rv"], teff, epoch["snr"], rng)
    andmask = np.zeros(wave.size, np.float32)
    ormask = np.zeros(wave.size, np.float32)
    ends = np.r_[0:int(rng.integers(0, 12)), wave.size - int(rng.integers(3, 25)):wave.size]
    flux[ends], ivar[ends] = 0.0, 0.0  # no data at the very ends (as the real files)
    bad = rng.choice(wave.size, size=3, replace=False)
    andmask[bad] = 1.0
    ormask[bad] = 1.0
    snr = {}
    for key, (a, b) in {"SNRU": (3500, 4000), "SNRG": (4000, 5500), "SNRR": (5600, 7000), "SNRI": (7000, 8500),
                        "SNRZ": (8500, 9100)}.items():
        sel = (wave >= a) & (wave < b) & (ivar > 0)
        snr[key] = header_snr(flux[sel], ivar[sel]) if sel.any() else 0.0
    return {"wavelength": wave, "flux": flux, "ivar": ivar, "andmask": andmask, "ormask": ormask, "snr": snr}
