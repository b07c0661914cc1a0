"""The astra summary files and truth.fits of the synthetic SDSS-V survey (noise model: simulate.py's docstring).

Each summary row draws its own random numbers (seed, 2 | 3, row), so a row's values never depend on the
other rows. ASPCAP columns are astra's: x_h-scale abundances, e_<x> errors, <x>_flags, flag_warn / flag_bad.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairspec.surveys.apogee.simulate import LABEL_NAMES, survey_labels
from pairspec.surveys.sdssv.simulate import TELESCOPE, V


def f32(values) -> np.ndarray:
    """astra's label and S/N columns are float32."""
    return np.asarray(values, dtype=np.float32)


def _rows(stars, results, instrument: str) -> list[tuple]:
    """(star index, site, coadd snr, release) of every coadd, plus DR17-release rows where one exists."""
    out = []
    for i, res in enumerate(results):
        for key, info in sorted((k, v) for k, v in res.items() if isinstance(k, tuple)):
            if key[0] != instrument:
                continue
            out.append((i, key[1], info["snr"], "sdss5"))
            if info.get("dr17_dup"):
                out.append((i, key[1], 0.8 * info["snr"], "dr17"))
    return out


def _base(stars, rows, ids) -> dict:
    idx = np.array([r[0] for r in rows])
    return {"sdss_id": np.asarray(ids, dtype=np.int64),
            "sdss4_apogee_id": np.array([stars["apogee_id"][i] for i in idx]),
            "ra": f32(stars["ra"][idx]), "dec": f32(stars["dec"][idx]), "l": f32(stars["glon"][idx]),
            "b": f32(stars["glat"][idx]), "v_astra": np.array([V] * len(rows)),
            "release": np.array([r[3] for r in rows]), "telescope": np.array([TELESCOPE[r[1]] for r in rows]),
            "snr": f32([r[2] for r in rows])}


def aspcap_columns(stars: dict, results: list[dict], seed: int, orphan: bool) -> dict:
    """HDU2 (APOGEE) of astraAllStarASPCAP. `orphan`: add a row for an sdss_id that has no files."""
    rows = _rows(stars, results, "apogee")
    ids = [int(stars["sdss_id"][r[0]]) for r in rows]
    if orphan and rows:
        rows.append(rows[0][:2] + (rows[0][2], "sdss5"))
        ids.append(max(int(i) for i in stars["sdss_id"]) + 1)
    if not rows:
        return {}
    idx = np.array([r[0] for r in rows])
    snr = np.array([r[2] for r in rows])
    truth = np.stack([stars[k][idx] for k in ("teff", "logg", "fe_h", "mg_fe", "alpha_fe")], axis=1)
    draws = np.stack([np.random.default_rng((seed, 2, k)).standard_normal(len(LABEL_NAMES) + 6) for k in range(len(rows))])
    u = np.stack([np.random.default_rng((seed, 4, k)).random(2) for k in range(len(rows))])
    lab = survey_labels(truth, snr, draws[:, :len(LABEL_NAMES)])
    z = draws[:, len(LABEL_NAMES):]
    feh = lab["FE_H"]
    cols = _base(stars, rows, ids)
    cols.update(teff=f32(lab["TEFF"]), e_teff=f32(lab["TEFF_ERR"]), logg=f32(lab["LOGG"]), e_logg=f32(lab["LOGG_ERR"]),
                m_h_atm=f32(lab["M_H"]), e_m_h_atm=f32(lab["M_H_ERR"]), alpha_m_atm=f32(lab["ALPHA_M"]),
                e_alpha_m_atm=f32(lab["ALPHA_M_ERR"]))
    e_x = np.hypot(1.5 / np.maximum(snr, 1), 0.02)
    # element ratios to H, as astra publishes them; C, N, Si, Ca around plausible [X/Fe] with noise
    offsets = {"c_h": (-0.05, 0.10), "n_h": (0.15, 0.15), "si_h": (0.0, 0.05), "ca_h": (0.0, 0.05)}
    alpha = truth[:, 4]
    for j, (name, (mu, sd)) in enumerate(offsets.items()):
        xfe = mu + (alpha if name in ("si_h", "ca_h") else 0) + sd * z[:, j]
        cols[name], cols[f"e_{name}"], cols[f"{name}_flags"] = f32(feh + xfe), f32(e_x), np.zeros(len(rows), np.int64)
    cols.update(fe_h=f32(feh), e_fe_h=f32(lab["FE_H_ERR"]), fe_h_flags=np.zeros(len(rows), np.int64),
                mg_h=f32(lab["MG_FE"] + feh), e_mg_h=f32(lab["MG_FE_ERR"]), mg_h_flags=np.zeros(len(rows), np.int64))
    no_mg = u[:, 1] < 0.02
    cols["mg_h"][no_mg], cols["e_mg_h"][no_mg] = np.nan, np.nan
    cols["mg_h_flags"][no_mg] = 1 << 7  # censored: FERRE returned an unphysical value
    bad = u[:, 0] < 0.03
    cols.update(result_flags=np.where(bad, 1 << 3, 0).astype(np.int64), flag_warn=snr < 70, flag_bad=bad)
    return cols


def bossnet_columns(stars: dict, results: list[dict], seed: int) -> dict:
    """HDU1 (BOSS) of astraAllStarBossNet: teff, logg, fe_h with S/N-dependent noise."""
    rows = _rows(stars, results, "boss")
    if not rows:
        return {}
    idx = np.array([r[0] for r in rows])
    snr = np.maximum(np.array([r[2] for r in rows]), 1.0)
    z = np.stack([np.random.default_rng((seed, 3, k)).standard_normal(4) for k in range(len(rows))])
    err = {"teff": np.hypot(3000.0 / snr, 40.0), "logg": np.hypot(2.0 / snr, 0.05), "fe_h": np.hypot(1.5 / snr, 0.05)}
    cols = _base(stars, rows, [int(stars["sdss_id"][i]) for i in idx])
    cols["run2d"] = np.array(["v6_2_1"] * len(rows))
    for j, k in enumerate(("teff", "logg", "fe_h")):
        cols[k] = np.asarray(stars[k][idx] + err[k] * z[:, j], dtype=np.float32)
        cols[f"e_{k}"] = np.asarray(err[k], dtype=np.float32)
    bad = np.abs(z[:, 3]) > 2.2  # ~3 %
    cols.update(result_flags=np.where(bad, 1, 0).astype(np.int64), flag_warn=snr < 20, flag_bad=bad)
    return cols


def write_truth(path: Path, stars: dict) -> Path:
    """truth.fits: HDU1 `star_id` (the sdss_id as the adapter gives it) and the true labels; HDU "SPECTRA" the
    noiseless normalised spectrum of each star on the APOGEE grid (the adapter's default), "SPECTRA_BOSS" on
    the BOSS grid when BOSS spectra were simulated; both in HDU1's row order and normalised by pairspec's
    continuum fit from what a visit records (BOSS: the model times Planck x response, since over 3650-6000 A
    a cubic pseudo-continuum does not follow that exactly, and the truth must carry the same residual)."""
    from astropy.io import fits
    from astropy.table import Table

    from pairspec.preprocess import normalize
    from pairspec.surveys.apogee.visits import truth_spectra
    from pairspec.surveys.sdssv.layout import BOSS_GRID

    t = Table({"star_id": np.array([str(int(i)) for i in stars["sdss_id"]])})
    for k in ("teff", "logg", "fe_h", "mg_fe", "alpha_fe", "mass", "age", "vhelio"):
        t[k] = stars[k]
    for k in ("population", "cluster", "stage", "site"):
        t[k] = np.array([str(v) for v in stars[k]])
    t["has_apogee"], t["has_boss"] = stars["has_apogee"], stars["has_boss"]
    hdus = [fits.PrimaryHDU(), fits.table_to_hdu(t)]
    spectra = fits.ImageHDU(truth_spectra(stars["model_7214"], stars["model_index"]), name="SPECTRA")
    spectra.header["COMMENT"] = "noiseless normalised model of each star (HDU1 row order) on the APOGEE apStar grid"
    hdus.append(spectra)
    if "model_boss" in stars:
        from pairspec.surveys.sdssv.sim_boss import continuum_shape

        seen = np.stack([m * continuum_shape(t) for m, t in zip(stars["model_boss"], stars["teff"])])
        weight = 1.0 / np.clip(seen, 1e-3 * seen.max(axis=1, keepdims=True), None)  # photon noise, as in a visit
        boss = fits.ImageHDU(normalize(seen, weight, BOSS_GRID)[0], name="SPECTRA_BOSS")
        boss.header["COMMENT"] = ("noiseless model of each star (HDU1 row order) on the BOSS grid, times its "
                                  "recorded continuum and normalised as a visit is")
        hdus.append(boss)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
