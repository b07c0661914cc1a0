"""A learnable synthetic star for training tests: two lines whose depths follow Teff and log g."""

from __future__ import annotations

import numpy as np

from pairspec.surveys.base import StarRecord, recompute_snr


def learnable_star(i: int, rng, npix: int, n_visits: int, labels: np.ndarray) -> StarRecord:
    """Star `i` with `n_visits` noisy visits (S/N 10-80) of a clean spectrum set by labels[0:2]."""
    pix = np.arange(npix)
    clean = 1000 * (1 - 0.4 * (labels[0] - 3500) / 3000 * np.exp(-0.5 * ((pix - 100) / 3) ** 2)
                    - 0.1 * labels[1] * np.exp(-0.5 * ((pix - 200) / 3) ** 2))
    snr = rng.uniform(10, 80, n_visits)[:, None]
    vf = (clean * (1 + rng.normal(size=(n_visits, npix)) / snr)).astype(np.float32)
    vi = ((snr / clean) ** 2 * np.ones((n_visits, 1))).astype(np.float32)
    return StarRecord(
        star_id=f"2M{i:08d}", source=f"u{i}", labels=labels, label_err=np.full(len(labels), 0.01, np.float32),
        label_flags=np.zeros(len(labels), np.int64), star_flags=0, coadd_flux=clean.astype(np.float32),
        coadd_ivar=np.full(npix, 1e-2, np.float32), coadd_pixmask=np.zeros(npix, np.int64),
        visit_flux=vf, visit_ivar=vi, visit_pixmask=np.zeros((n_visits, npix), np.int64),
        visit_snr=recompute_snr(vf, vi), visit_snr_survey=np.full(n_visits, np.nan, np.float32),
        visit_mjd=np.arange(n_visits, dtype=np.float64), visit_id=[f"v{i}_{j}" for j in range(n_visits)],
        visit_fiber=np.full(n_visits, -1, np.int32), snr=50.0, meta={})
