"""Synthetic APOGEE visit spectra on the 8575-px apStar grid: instrument, noise, masks, RV resampling, coadds.

One visit, as the DRP would see and then write it into an apStar row:
1. rest-frame normalised model (emulator on the 7214 px; the other covered apStar pixels are pure
   continuum, 1.0, since the emulator has no lines there), broadened by a per-visit Gaussian LSF;
2. shifted to the observed frame (Lanczos-5 sinc resampling) by the topocentric RV, times a Planck
   stellar continuum, a per-visit smooth flux-calibration polynomial and per-chip throughputs, in
   1e-17 erg/s/cm2/A;
3. Gaussian noise from an error array (photon-like, larger near chip edges), sky-line residuals, cosmic
   rays (a quarter of them left unflagged, as a pipeline's rejection misses some); fixed detector defects, sky lines, telluric lines and persistence live at OBSERVED pixels;
4. flagged bad pixels (bits 0-7, 14) replaced by a smoothed continuum with huge errors, as the DRP does;
5. resampled back to the rest frame with the measured RV; errors inflated for persistence and sky lines
   (DRP step 3); flux 0 / err 0 outside detector coverage; 1e5-1e10 error spikes next to chip edges.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d

from pairspec.surveys import simtools
from pairspec.surveys.apogee.layout import APOGEE_GRID

NPIX = APOGEE_GRID.npix
C_KMS = 299792.458
# APOGEE_PIXMASK bits
BADPIX, CRPIX, SATPIX, UNFIXABLE, BADDARK, BADFLAT, BADERR, NOSKY = (1 << b for b in range(8))
LITTROW_GHOST, PERSIST_HIGH, PERSIST_MED, PERSIST_LOW = (1 << b for b in range(8, 12))
SIG_SKYLINE, SIG_TELLURIC, NOT_ENOUGH_PSF = 1 << 12, 1 << 13, 1 << 14
BAD_BITS = 0xFF | NOT_ENOUGH_PSF  # DRP "bad" level: 16639
# Detector coverage in observed apStar pixels (real DR17 files: ~201-3320, 3537-6126, 6295-8378).
OBS_CHIPS = ((201, 3320), (3537, 6126), (6295, 8378))
CR_FLAGGED = 0.75  # fraction of cosmic rays the pipeline flags (CRPIX); the rest stay in the flux unflagged
PERSIST_FACTOR = ((PERSIST_HIGH, np.sqrt(5.0)), (PERSIST_MED, 2.0), (PERSIST_LOW, np.sqrt(3.0)))


def velocity_to_pixels(v_kms: float) -> float:
    """Shift in apStar pixels of a Doppler velocity (positive = receding = redward)."""
    return simtools.velocity_to_pixels(v_kms, APOGEE_GRID.cdelt1)


def coverage(blocks) -> np.ndarray:
    return simtools.coverage(blocks, NPIX)


@lru_cache(maxsize=1)
def instrument() -> dict:
    """Survey-wide hardware and sky, fixed in OBSERVED pixels (same for every seed and every star)."""
    rng = np.random.default_rng(20170913)
    obs_cov = coverage(OBS_CHIPS)
    cov_idx = np.flatnonzero(obs_cov)
    bad_idx = rng.choice(cov_idx, size=int(0.004 * cov_idx.size), replace=False)
    bad_bits = rng.choice([BADPIX, BADDARK, BADFLAT, BADPIX | BADDARK, NOT_ENOUGH_PSF], size=bad_idx.size)
    # OH lines: dense in the H band; stronger ones get SIG_SKYLINE over +-3 px
    sky_pix = np.sort(rng.uniform(210, 8370, 70))
    sky_amp = rng.lognormal(np.log(300.0), 1.0, sky_pix.size)
    tell_pix = np.sort(rng.uniform(210, 8370, 90))
    tell_depth = rng.uniform(0.02, 0.3, tell_pix.size)
    x = np.arange(NPIX)
    sky = np.zeros(NPIX)
    for p, amp in zip(sky_pix, sky_amp):
        sky += amp * np.exp(-0.5 * ((x - p) / 1.3) ** 2)
    telluric = np.ones(NPIX)
    for p, dep in zip(tell_pix, tell_depth):
        telluric *= 1.0 - dep * np.exp(-0.5 * ((x - p) / 1.5) ** 2)
    sky_mask = np.zeros(NPIX, dtype=np.int64)
    for p, amp in zip(sky_pix, sky_amp):
        if amp > 150.0:
            sky_mask[int(p) - 3:int(p) + 4] |= SIG_SKYLINE
    sky_mask[telluric < 0.97] |= SIG_TELLURIC
    fixed = np.zeros(NPIX, dtype=np.int64)
    fixed[bad_idx] = bad_bits
    fixed[4700:4760] |= LITTROW_GHOST  # a Littrow ghost in the green chip
    return {"obs_cov": obs_cov, "fixed_mask": fixed | sky_mask, "sky": sky + 20.0, "telluric": telluric * 0.985}


def planck_shape(teff: float) -> np.ndarray:
    """B_lambda(Teff) on the apStar grid, normalised to 1 at the middle pixel."""
    return simtools.planck_shape(APOGEE_GRID.wavelength(), teff)


def chip_coordinate(cov: np.ndarray) -> np.ndarray:
    return simtools.block_coordinate(cov)


LSF_SIGMA_RANGE = (0.2, 0.9)  # per-visit Gaussian LSF sigma in apStar pixels, uniform (plan_visits)


def truth_spectra(models: np.ndarray, index: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The noiseless spectrum every visit of a star scatters around, as the pipeline sees it: float32 (N, NPIX).

    `models` (N, n_model) are the rest-frame normalised emulator spectra on the apStar pixels `index`
    (1.0 elsewhere, as render_star builds them). Each is broadened by the visits' LSF averaged over its
    distribution (the mean of Gaussians with sigma uniform in LSF_SIGMA_RANGE, 8 steps) and normalised by
    pairspec.preprocess.normalize as a visit is, so it compares directly with normalised visits, their
    coadds and denoised spectra on the grid's usable pixels."""
    from pairspec.preprocess import normalize

    models = np.atleast_2d(models)
    lo, hi = LSF_SIGMA_RANGE
    sigmas = lo + (hi - lo) * (np.arange(8) + 0.5) / 8
    out = np.empty((models.shape[0], NPIX), dtype=np.float32)
    for a in range(0, models.shape[0], chunk):
        rest = np.ones((min(chunk, models.shape[0] - a), NPIX))
        rest[:, index] = models[a:a + chunk]
        mean = np.mean([gaussian_filter1d(rest, s, axis=1, mode="nearest") for s in sigmas], axis=0)
        out[a:a + chunk] = normalize(mean, np.ones_like(mean), APOGEE_GRID)[0]
    return out


def render_visit(rest_model: np.ndarray, star: dict, visit: dict, rng: np.random.Generator) -> dict:
    """One visit as written in an apStar row (rest frame). `visit` holds vrad, vrad_measured, snr, ..."""
    inst = instrument()
    d_true = velocity_to_pixels(visit["vrad"])
    d_meas = velocity_to_pixels(visit["vrad_measured"])
    # per-fibre trace: coverage edges move by a few pixels between visits
    jitter = rng.integers(-3, 4, size=2 * len(OBS_CHIPS))
    obs_cov = coverage([(a + jitter[2 * k], b + jitter[2 * k + 1]) for k, (a, b) in enumerate(OBS_CHIPS)])
    x_chip = chip_coordinate(obs_cov)

    model = simtools.lanczos_shift(gaussian_filter1d(rest_model, visit["lsf_sigma"], mode="nearest"), d_true)
    xs = np.linspace(-1.0, 1.0, NPIX)
    fluxcal = np.polynomial.legendre.legval(xs, np.r_[1.0, rng.normal(0.0, 0.03, 3)])
    chip_gain = np.select([np.arange(NPIX) < 3400, np.arange(NPIX) < 6200], rng.normal(1.0, 0.03, 2),
                          rng.normal(1.0, 0.03))
    cont = star["flux_scale"] * visit["throughput"] * planck_shape(star["teff"]) * fluxcal * chip_gain
    truth = model * cont
    sig0 = np.median(cont[obs_cov]) / visit["snr"]
    chip_noise = np.select([np.arange(NPIX) < 3400, np.arange(NPIX) < 6200], [1.1, 1.0], 0.95)
    err = sig0 * chip_noise * np.sqrt(0.75 * np.clip(model, 0.05, None) + 0.25) * (1.0 + 2.0 * x_chip**12)
    sky = inst["sky"] * visit["sky_level"]
    err = np.sqrt(err**2 + (sig0 * sky / 300.0) ** 2)  # sky photons add noise under the OH lines
    flux = truth + err * rng.standard_normal(NPIX)

    mask = inst["fixed_mask"].copy()
    mask[visit["fiber"] % 7 != 0] &= ~LITTROW_GHOST  # the ghost hits a subset of fibres only
    n_cr = rng.poisson(6)
    for p in rng.choice(np.flatnonzero(obs_cov), size=n_cr, replace=False):
        w = int(rng.integers(1, 3))
        flux[p:p + w] += rng.uniform(5, 50) * sig0
        if rng.random() < CR_FLAGGED:  # the DRP's cosmic-ray rejection misses some
            mask[p:p + w] |= CRPIX
    for _ in range(rng.poisson(2)):  # undersampled PSF clumps
        p = int(rng.choice(np.flatnonzero(obs_cov)))
        mask[p:p + int(rng.integers(3, 15))] |= NOT_ENOUGH_PSF
    if visit["persist"]:  # persistence: blue chip, from its blue edge (a real DRP pattern)
        bit = PERSIST_HIGH if visit["persist"] == 3 else PERSIST_MED if visit["persist"] == 2 else PERSIST_LOW
        mask[OBS_CHIPS[0][0]:OBS_CHIPS[0][0] + visit["persist_len"]] |= bit
    mask[~obs_cov] = 0

    bad = (mask & BAD_BITS) != 0
    repl = simtools.smooth_continuum(flux, obs_cov & ~bad)  # DRP: flagged pixels carry smooth flux, huge error
    flux[bad] = repl[bad]
    err[bad] = 10.0 ** rng.uniform(10.0, 13.0, bad.sum())
    flux[~obs_cov], err[~obs_cov] = 0.0, 0.0

    # back to the rest frame with the measured RV
    cov = simtools.shift_mask(obs_cov.astype(np.int64), -d_meas) == 1
    cov &= simtools.shift_mask((~obs_cov).astype(np.int64), -d_meas) == 0
    out_flux = simtools.lanczos_shift(flux, -d_meas)
    out_err = simtools.shift_linear(err, -d_meas)
    out_mask = simtools.shift_mask(mask, -d_meas)
    for bit, factor in PERSIST_FACTOR:
        hit = (out_mask & bit) != 0
        out_err[hit] *= factor
        if hit.any():
            break  # PERSIST_HIGH, else MED, else LOW
    out_err[(out_mask & SIG_SKYLINE) != 0] *= 10.0
    out_sky = simtools.shift_linear(sky, -d_meas)
    out_tell = simtools.shift_linear(inst["telluric"], -d_meas)
    _edge_spikes(out_err, out_mask, cov, rng)
    out = {"flux": out_flux, "err": out_err, "mask": out_mask, "sky": out_sky, "sky_err": np.sqrt(np.abs(out_sky)),
           "telluric": out_tell, "telluric_err": np.full(NPIX, 5e-4), "cov": cov}
    for k in ("flux", "err", "mask", "sky", "sky_err", "telluric", "telluric_err"):
        out[k][~cov] = 0
    good = cov & (out_err > 0)
    out["snr"] = float(np.median(out_flux[good] / out_err[good]))
    out["frac_persist"] = float(np.mean((out_mask[cov] & (PERSIST_HIGH | PERSIST_MED | PERSIST_LOW)) != 0))
    return out


def _edge_spikes(err: np.ndarray, mask: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> None:
    """Chip-edge junk as in real DR17 rows: errors 1e5-1e10 in the 5-30 px next to each coverage edge."""
    edges = np.flatnonzero(np.diff(np.r_[0, cov.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2]):
        n_lo, n_hi = rng.integers(5, 31, size=2)
        err[a:a + n_lo] = 10.0 ** np.linspace(10.0, 5.0, n_lo)
        err[b - n_hi:b] = 10.0 ** np.linspace(5.0, 10.0, n_hi)
        mask[a:a + 3] |= BADPIX | NOSKY
        mask[b - 3:b] |= BADPIX | NOSKY


def combine_visits(visits: list[dict]) -> tuple[np.ndarray, ...]:
    """apStar rows 0 and 1 (flux, err, mask) from visit rows, as the DRP combines them.

    Each visit is divided by its smoothed continuum; row 0 weights pixel by pixel with 1/err^2, row 1 with
    1/err^2 smoothed over ~100 px ("global" weighting); both are multiplied back by the median continuum.
    Row 0 mask = AND of the visit masks; row 1 mask = 0. Pixels not covered by every visit are NaN.
    """
    flux = np.stack([v["flux"] for v in visits])
    err = np.stack([v["err"] for v in visits])
    cov = np.logical_and.reduce([v["cov"] for v in visits])
    conts = []
    for v in visits:
        good = v["cov"] & ((v["mask"] & BAD_BITS) == 0) & (v["err"] < 1e4)
        conts.append(np.maximum(simtools.smooth_continuum(v["flux"], good), 1e-6))
    cont = np.stack(conts)
    with np.errstate(divide="ignore", invalid="ignore"):  # uncovered pixels: 0/0, set to NaN below
        return _combine(flux, err, cont, cov, visits)


def _combine(flux, err, cont, cov, visits):
    norm, nerr = flux / cont, np.where(err > 0, err / cont, np.inf)
    w0 = 1.0 / nerr**2
    row0 = (w0 * norm).sum(0) / w0.sum(0)
    err0 = 1.0 / np.sqrt(w0.sum(0))
    smooth_err = np.stack([np.maximum(simtools.smooth_continuum(ne, np.isfinite(ne) & (ne < 1e3), block=100), 1e-12)
                           for ne in np.where(np.isfinite(nerr), nerr, 0.0)])
    w1 = np.where(np.isfinite(nerr), 1.0 / smooth_err**2, 0.0)
    w1 = np.where(nerr > 1e3, w1 * 1e-12, w1)  # a junk pixel still must not dominate
    row1 = (w1 * norm).sum(0) / w1.sum(0)
    err1 = np.sqrt((w1**2 * np.where(np.isfinite(nerr), nerr, 0.0) ** 2).sum(0)) / w1.sum(0)
    med_cont = np.median(cont, axis=0)
    rows_flux = np.stack([row0 * med_cont, row1 * med_cont])
    rows_err = np.stack([err0 * med_cont, err1 * med_cont])
    rows_flux[:, ~cov], rows_err[:, ~cov] = np.nan, np.nan
    mask0 = np.bitwise_and.reduce(np.stack([v["mask"] for v in visits]), axis=0)
    rows_mask = np.stack([mask0, np.zeros(NPIX, dtype=np.int64)])
    return rows_flux, rows_err, rows_mask
