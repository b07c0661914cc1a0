"""A synthetic Gaia DR3 RVS set in the published formats: mean spectra + catalogues + truth.fits.

Stars: the shared Galactic mix (pairspec.surveys.population) over the whole sky. Per star (all assumed,
chosen to look like DR3, not fitted to it): G_RVS = 13 - Exp(1.3) clipped to 5.5-13.5; rv_nb_transits
5 + Poisson(18) (5 % of stars 2-8), combined_transits = that minus ~10 % rejected; single-transit S/N per
0.01 nm bin 12 * 10^(-0.2 (G_RVS - 11)), so the mean's S/N is that * sqrt(N) (>= 8); rv_method_used 2
(faint, G_RVS > 12) else 1. Spectra: pairspec.surveys.linegen at R = 11500 on the 2401-px vacuum grid (the
noiseless truth), then the DR3 normalisation quirks (faint: median set to 1, so the continuum sits a
little above 1; bright: continuum ~0.5-1 % below 1), noise sigma = sqrt(flux)/S/N, smoothed over the ~2.5
bins of a native pixel (renormalised), errors rising ~4x towards both ends over ~0.3 nm, null (NaN) flux
and error in the outer 1-10 bins of ~20 % of stars, a few zero or null errors inside ~3 %, and edge spikes
the errors do not cover in ~5 % (DR3 validation, "small spikes at the edges"). rvs_spec_sig_to_noise =
median flux / flux_error. GSP-Spec labels (AstrophysicalParameters_*): truth + noise of sigma
hypot(3000/SNR, 40) K, hypot(6/SNR, 0.08), hypot(2.5/SNR, 0.04), hypot(2/SNR, 0.03) dex, log g +0.15 for
giants (a stand-in for the uncalibrated GSP-Spec gravities), _lower/_upper = value -+ sigma, flags_gspspec
41 characters (~10 % with a parameter flag set); ~8 % of stars have no GSP-Spec row, ~4 % a null [M/H].
Products (by star index): bulk RvsMeanSpectrum_*.csv.gz (2 in 6), datalink INDIVIDUAL FITS, ECSV and
VOTable, and RAW FITS (1 in 6 each); ~3 % of stars appear in a second file too (a duplicate the adapter
skips). Source ids carry a pseudo-HEALPix level-12 index above bit 35 (not the real HEALPix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairspec.surveys.gaia_rvs import writers
from pairspec.surveys.gaia_rvs.layout import (
    GAIA_RVS_GRID,
    NPIX,
    RESOLVING_POWER,
    wavelength_nm,
)
from pairspec.surveys.gaia_rvs.twins import native_pixel_kernel
from pairspec.surveys.population import draw_population

# all-sky pointings for the population: (name, site, glon, glat, kind)
FIELDS = tuple((f"sky{i:02d}", "gaia", float(l), float(b), kind) for i, (l, b, kind) in enumerate(
    [(30, 5, "disc"), (90, -10, "disc"), (150, 8, "disc"), (210, -4, "disc"), (270, 12, "disc"), (330, -6, "disc"),
     (60, 55, "halo"), (240, -60, "halo"), (120, 70, "halo"), (0, 4, "bulge"), (5, -6, "bulge")]))
PRODUCTS = ("bulk", "bulk", "fits", "ecsv", "xml", "raw")
SOLUTION_ID = 375316653866487564


def pseudo_source_ids(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Distinct int64 ids: a level-12 sky-cell number (equal-area in sin dec, NOT real HEALPix) << 35 + serial."""
    iy = np.clip(((np.sin(np.radians(dec)) + 1) / 2 * 8192).astype(np.int64), 0, 8191)
    ix = np.clip((ra / 360.0 * 24576).astype(np.int64), 0, 24575)
    cell = iy * 24576 + ix
    return (cell << 35) + np.arange(ra.size, dtype=np.int64) + 1


def plan(n_stars: int, seed: int) -> dict:
    """Every star's truth and Gaia values, sorted by source_id (deterministic in seed)."""
    if n_stars < 1:
        raise ValueError(f"--stars must be at least 1, got {n_stars}")
    rng = np.random.default_rng((seed, 41))
    s = draw_population(n_stars, rng, FIELDS)
    n = n_stars
    s["source_id"] = pseudo_source_ids(s["ra"], s["dec"])
    s["grvs_mag"] = np.clip(13.0 - rng.exponential(1.3, n), 5.5, 13.5)
    nb = 5 + rng.poisson(18, n)
    few = rng.random(n) < 0.05
    nb[few] = rng.integers(2, 9, few.sum())
    s["rv_nb_transits"] = np.minimum(nb, 80)
    s["combined_transits"] = np.maximum(1, s["rv_nb_transits"] - rng.binomial(s["rv_nb_transits"], 0.1))
    s["combined_ccds"] = 3 * s["combined_transits"] - rng.binomial(s["combined_transits"], 0.05)
    s["deblended_ccds"] = rng.binomial(s["combined_ccds"], 0.02)
    s["snr_target"] = np.maximum(12.0 * 10 ** (-0.2 * (s["grvs_mag"] - 11.0)) * np.sqrt(s["combined_transits"]), 8.0)
    s["rv_method_used"] = np.where(s["grvs_mag"] > 12.0, 2, 1)
    s["radial_velocity"] = s["vhelio"] + rng.normal(0, 1.0, n)
    s["product"] = np.array([PRODUCTS[i % len(PRODUCTS)] for i in range(n)])
    s["duplicate"] = rng.random(n) < 0.03
    order = np.argsort(s["source_id"])
    return {k: np.asarray(v)[order] for k, v in s.items()}


def model_spectra(labels: np.ndarray, wavelength_aa: np.ndarray | None = None) -> np.ndarray:
    """Noiseless normalised spectra (N, npix): the shared line generator at R = 11500, on the published grid
    (or on `wavelength_aa`, e.g. the adapter's store grid for truth.fits)."""
    from pairspec.surveys.linegen import normalized_spectrum

    wave = 10.0 * wavelength_nm() if wavelength_aa is None else np.asarray(wavelength_aa, dtype=np.float64)
    return normalized_spectrum(wave, labels, RESOLVING_POWER)


def observe(model: np.ndarray, s: dict, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, flux_error, rvs_spec_sig_to_noise) of the published mean spectra (module docstring)."""
    n = model.shape[0]
    rng = np.random.default_rng((seed, 42))
    flux = np.where(s["rv_method_used"][:, None] == 2, model / np.median(model, axis=1, keepdims=True),
                    model * (1 - rng.uniform(0.005, 0.01, n))[:, None])
    d_nm = np.minimum(np.arange(NPIX), np.arange(NPIX)[::-1]) * 0.01
    edge = 1.0 + 3.0 * np.exp(-d_nm / 0.1)
    sigma = np.sqrt(np.clip(flux, 0.05, None)) / s["snr_target"][:, None] * edge[None]
    kern = native_pixel_kernel()
    z = np.stack([np.convolve(rng.standard_normal(NPIX + 8), kern, mode="valid") for _ in range(n)])
    obs = flux + sigma * z
    err = sigma.copy()
    for i in range(n):
        if rng.random() < 0.05:  # edge spikes the published errors do not cover
            side = rng.integers(2)
            pix = rng.integers(0, 10, 4) if side == 0 else NPIX - 1 - rng.integers(0, 10, 4)
            obs[i, pix] += rng.choice([-1, 1]) * rng.uniform(5, 10) * sigma[i, pix]
        if rng.random() < 0.2:  # null edge bins
            a, b = rng.integers(1, 11, 2)
            obs[i, :a] = obs[i, NPIX - b:] = np.nan
            err[i, :a] = err[i, NPIX - b:] = np.nan
        if rng.random() < 0.03:  # zero / null errors inside
            pix = rng.integers(100, NPIX - 100, 3)
            err[i, pix[:2]] = 0.0
            err[i, pix[2]] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.nanmedian(np.where(err > 0, obs / err, np.nan), axis=1)
    return obs.astype(np.float32), err.astype(np.float32), snr.astype(np.float32)


def gspspec(s: dict, snr: np.ndarray, seed: int) -> dict:
    """The AstrophysicalParameters (GSP-Spec) columns of the stars that have them."""
    rng = np.random.default_rng((seed, 43))
    n = snr.size
    sig = np.stack([np.hypot(3000 / snr, 40), np.hypot(6 / snr, 0.08), np.hypot(2.5 / snr, 0.04),
                    np.hypot(2 / snr, 0.03)], axis=1)
    truth = np.stack([s["teff"], s["logg"], s["fe_h"], s["alpha_fe"]], axis=1)
    val = truth + sig * rng.standard_normal((n, 4))
    val[:, 1] += np.where(s["logg"] < 3.5, 0.15, 0.0)
    val[rng.random(n) < 0.04, 2] = np.nan
    flags = []
    for i in range(n):
        chars = ["0"] * 41
        if rng.random() < 0.1:
            chars[int(rng.integers(0, 13))] = str(int(rng.integers(1, 3)))
        flags.append("".join(chars))
    keep = rng.random(n) >= 0.08
    cols = {"solution_id": np.full(keep.sum(), SOLUTION_ID, np.int64), "source_id": s["source_id"][keep]}
    for k, name in enumerate(("teff_gspspec", "logg_gspspec", "mh_gspspec", "alphafe_gspspec")):
        v = val[keep, k]
        cols[name] = v
        cols[f"{name.replace('_gspspec', '')}_gspspec_lower"] = v - sig[keep, k]
        cols[f"{name.replace('_gspspec', '')}_gspspec_upper"] = v + sig[keep, k]
    cols["flags_gspspec"] = np.array(flags, dtype=object)[keep]
    return cols


def simulate_gaia_rvs(out, n_stars: int = 500, seed: int = 1, progress: bool = False) -> dict:
    """Write the set under `out`; returns {"n_stars", "n_files", "paths"}."""
    out = Path(out)
    s = plan(n_stars, seed)
    truth_labels = np.stack([s["teff"], s["logg"], s["fe_h"], s["alpha_fe"]], axis=1)
    model = model_spectra(truth_labels)
    flux, err, snr = observe(model, s, seed)
    files = []

    def scalars(i):
        return {"source_id": int(s["source_id"][i]), "solution_id": SOLUTION_ID, "ra": float(s["ra"][i]),
                "dec": float(s["dec"][i]), "combined_transits": int(s["combined_transits"][i]),
                "combined_ccds": int(s["combined_ccds"][i]), "deblended_ccds": int(s["deblended_ccds"][i])}

    def array_columns(idx):
        return {"solution_id": np.full(idx.size, SOLUTION_ID, np.int64), "source_id": s["source_id"][idx],
                "ra": s["ra"][idx], "dec": s["dec"][idx], "flux": flux[idx], "flux_error": err[idx],
                "combined_transits": s["combined_transits"][idx].astype(np.int16),
                "combined_ccds": s["combined_ccds"][idx].astype(np.int16),
                "deblended_ccds": s["deblended_ccds"][idx].astype(np.int16)}

    bulk = np.flatnonzero(s["product"] == "bulk")
    for part in (np.array_split(bulk, 2) if bulk.size >= 2 else [bulk]):
        if part.size:
            lo, hi = (int(s["source_id"][part].min()) >> 43), (int(s["source_id"][part].max()) >> 43)
            files.append(writers.write_bulk_ecsv(
                out / "Spectroscopy" / "rvs_mean_spectrum" / f"RvsMeanSpectrum_{lo:06d}-{hi:06d}.csv.gz", array_columns(part)))
    dl = out / "datalink"
    for i in range(n_stars):
        kind, sid = s["product"][i], int(s["source_id"][i])
        kinds = [kind] + (["fits" if kind != "fits" else "ecsv"] if s["duplicate"][i] else [])
        for k in kinds:
            if k in ("fits", "ecsv", "xml"):
                files.append(writers.write_pixel_table(dl / f"RVS-Gaia DR3 {sid}.{k}", flux[i], err[i], scalars(i)))
    raw = np.flatnonzero(s["product"] == "raw")
    if raw.size:
        files.append(writers.write_array_table(dl / "RVS_RAW-Gaia DR3.fits", array_columns(raw)))
    ap = gspspec(s, snr, seed)
    files.append(writers.write_bulk_ecsv(out / "Astrophysical_parameters" / "AstrophysicalParameters_000000-003111.csv.gz", ap))
    files.append(writers.write_bulk_ecsv(out / "gaia_source" / "GaiaSource_000000-003111.csv.gz", {
        "solution_id": np.full(n_stars, SOLUTION_ID, np.int64), "designation": np.array([f"Gaia DR3 {v}" for v in s["source_id"]], dtype=object),
        "source_id": s["source_id"], "ra": s["ra"], "dec": s["dec"], "radial_velocity": s["radial_velocity"],
        "rv_nb_transits": s["rv_nb_transits"].astype(np.int16), "rv_method_used": s["rv_method_used"].astype(np.int16),
        "grvs_mag": s["grvs_mag"], "rvs_spec_sig_to_noise": snr, "has_rvs": np.ones(n_stars, dtype=bool)}))
    truth = write_truth(out / "truth.fits", s, snr, model_spectra(truth_labels, GAIA_RVS_GRID.wavelength()))
    return {"n_stars": n_stars, "n_files": len(files), "paths": {"truth": truth, "files": files}}


def write_truth(path: Path, s: dict, snr: np.ndarray, model: np.ndarray) -> Path:
    """truth.fits: HDU1 star_id (the store's id: the source_id as text), true labels, population; HDU2
    "SPECTRA" the noiseless normalised model of each star on the adapter's default store grid GAIA_RVS_GRID
    (2401 px, log-linear; HDU1 row order)."""
    from astropy.io import fits
    from astropy.table import Table

    t = Table({"star_id": np.array([str(v) for v in s["source_id"]])})
    for k in ("teff", "logg", "fe_h", "alpha_fe", "mg_fe", "mass", "age", "vhelio", "grvs_mag"):
        t[k] = s[k]
    for k in ("population", "cluster", "stage", "product"):
        t[k] = np.array([str(v) for v in s[k]])
    t["rvs_spec_sig_to_noise"] = snr
    t["combined_transits"] = s["combined_transits"]
    spectra = fits.ImageHDU(model.astype(np.float32), name="SPECTRA")
    spectra.header["COMMENT"] = ("noiseless normalised linegen model (R=11500) of each star on the adapter's "
                                 "default grid (log-linear, 8460-8700 A, 2401 px), HDU1 row order")
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(t), spectra]).writeto(path, overwrite=True)
    return path
