"""C/N ages of red giants in `pairspec evaluate --masses TABLE` (the paper's age comparison).

A giant's [C/N] after first dredge-up follows its mass; mass is regressed on ([C/N], [Fe/H]) for giants with
asteroseismic masses (a catalogue of seismic masses matched by star id), and age follows from mass
(pairspec.metrics: fit_mass_from_cn, age_from_mass). Here the regression is calibrated on half of the
evaluated giants with masses (chosen by a hash of the star id) with the survey's own labels, as a survey
team would calibrate it, and scored on the other half: robust scatter of the C/N age against the age from
the seismic mass, with the survey's star labels, with each method's per-star label (median of its visits)
and with each method's single visits at S/N < 60. A method whose [C/N] carries more of the truth gives
ages closer to the seismic ones (the paper: 1.70 Gyr with the survey pipeline's labels, 1.59 Gyr with TSN).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from pairspec import metrics as M
from pairspec.evaluate import _star_mean

NEEDED = ("c_fe", "n_fe", "fe_h", "logg")
GIANT_LOGG_MAX = 3.5
MASS_COLUMNS = ("mass", "m_cor", "mass_seis", "m_seis")


def read_masses(path, star_ids) -> np.ndarray:
    """Mass (Msun) per store star from a table (FITS, CSV, ECSV, VOTable: whatever astropy reads) with a
    mass column (mass, M_cor, mass_seis) and a column of the store's star ids: `star_id`, or else the
    text column whose values match the most store stars (a survey's own id column, as a seismic catalogue has);
    NaN for stars the table lacks. ValueError naming the file when it cannot be used."""
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such masses table")
    try:
        t = Table.read(path, format="ascii.csv" if path.suffix.lower() == ".csv" else None)
    except Exception as err:
        raise ValueError(f"{path}: not a readable table ({type(err).__name__}: {err})") from err
    lower = {c.lower(): c for c in t.colnames}
    mass_col = next((lower[c] for c in MASS_COLUMNS if c in lower), None)
    if mass_col is None:
        raise ValueError(f"{path}: a masses table needs a mass column ({', '.join(MASS_COLUMNS)}); "
                         f"it has {t.colnames}")
    wanted = {str(s).strip() for s in np.asarray(star_ids).astype(str)}
    best, best_n = None, 0
    for name in ([lower["star_id"]] if "star_id" in lower else []) + [c for c in t.colnames if t[c].dtype.kind in "SU"]:
        n = len(wanted & set(np.char.strip(np.asarray(t[name]).astype(str))))
        if n > best_n:
            best, best_n = name, n
        if name.lower() == "star_id" and n:
            break
    if best is None:
        raise ValueError(f"{path}: none of its {len(t)} rows names a star of the store (no column of its "
                         f"{t.colnames} holds the store's star ids)")
    ids = np.char.strip(np.asarray(t[best]).astype(str))
    mass = np.ma.filled(np.ma.asarray(t[mass_col], dtype=np.float64), np.nan)
    row = {s: i for i, s in enumerate(ids)}
    out = np.full(len(star_ids), np.nan)
    for k, s in enumerate(np.asarray(star_ids).astype(str)):
        i = row.get(s.strip())
        if i is not None and np.isfinite(mass[i]) and mass[i] > 0:
            out[k] = mass[i]
    return out


def cn_age_metrics(mass, star_ids, names, methods, survey_star, star, snr) -> dict:
    """{"n_calibration", "n_test", "survey", <method>: {"star", "visit_lt60", "n_visits"}} in Gyr, with
    `mass` per store star, `survey_star` (n_star, K) the survey's labels in `names` order, and for each
    method `labels` (n_visit, K) of the visits whose store-star index is `star`."""
    missing = [n for n in NEEDED if n not in names]
    if missing:
        raise ValueError(f"C/N ages need the labels {', '.join(NEEDED)}; the model does not predict "
                         f"{', '.join(missing)} (train with data.labels including them)")
    k = {n: names.index(n) for n in NEEDED}
    cn_s = survey_star[:, k["c_fe"]] - survey_star[:, k["n_fe"]]
    feh_s = survey_star[:, k["fe_h"]]
    giant = (survey_star[:, k["logg"]] < GIANT_LOGG_MAX) & np.isfinite(mass) & np.isfinite(cn_s) & np.isfinite(feh_s)
    giant &= np.isin(np.arange(len(mass)), np.unique(star))  # only the evaluated split's stars
    half = np.array([zlib.crc32(str(s).encode()) % 2 for s in star_ids], dtype=np.int64)
    calib, test = giant & (half == 0), giant & (half == 1)
    if calib.sum() < 5 or test.sum() < 5:
        raise ValueError(f"C/N ages need at least 10 giants (log g < {GIANT_LOGG_MAX}) with masses and survey "
                         f"[C/Fe], [N/Fe], [Fe/H] in the split; found {int(giant.sum())}")
    coef = M.fit_mass_from_cn(cn_s[calib], feh_s[calib], mass[calib])
    age_ref = M.age_from_mass(mass, feh_s)
    out = {"n_calibration": int(calib.sum()), "n_test": int(test.sum()), "coef": coef.tolist(),
           "survey": M.cn_age_precision(cn_s[test], feh_s[test], age_ref[test], coef)}
    in_test = test[star]
    low = in_test & (snr < 60)
    for meth, p in methods.items():
        lab = np.asarray(p["labels"], dtype=np.float64)
        cn_v, feh_v = lab[:, k["c_fe"]] - lab[:, k["n_fe"]], lab[:, k["fe_h"]]
        cn_star, feh_star = _star_mean(np.stack([cn_v, feh_v], axis=1), star, len(mass)).T  # per-star medians
        out[meth] = {"star": M.cn_age_precision(cn_star[test], feh_star[test], age_ref[test], coef),
                     "visit_lt60": M.cn_age_precision(cn_v[low], feh_v[low], age_ref[star[low]], coef)
                     if low.sum() >= 5 else float("nan"),
                     "n_visits": int(low.sum())}
    return out
