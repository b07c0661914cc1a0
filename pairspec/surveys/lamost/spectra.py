"""The one source of the simulator's spectra: continuum-normalised model spectra from
pairspec.surveys.linegen (a colleague's line-by-line generator; see its docstring for what it is and is
not), at LAMOST's resolving powers. Everything else in the simulator (render.py) only resamples, shifts,
scales and adds noise to what `model_spectra` returns, so swapping the generator is a one-function change.
"""

from __future__ import annotations

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.surveys.lamost.layout import LRS_GRID, MRS_GRID, RESOLVING_POWER

# rest-frame log10(lambda) ranges the models are made on: each arm's native coverage plus ~600 km/s
MRS_FINE = ((3.6880, 3.7340), (3.7950, 3.8400))
LRS_FINE = ((3.5600, 3.9650),)
MRS_FINE_STEP, LRS_FINE_STEP = 5e-6, 2.5e-5  # ~2 samples per native pixel


def model_spectra(wavelength_aa: np.ndarray, labels: np.ndarray, resolution: float) -> np.ndarray:
    """(N, npix) normalised spectra of labels (N, 4) [teff, logg, fe_h, alpha_fe] at resolving power R."""
    from pairspec.surveys.linegen import normalized_spectrum

    return normalized_spectrum(wavelength_aa, np.atleast_2d(labels), float(resolution))


def fine_loglam(ranges, step: float) -> np.ndarray:
    parts = [a + step * np.arange(int(round((b - a) / step)) + 1) for a, b in ranges]
    return np.concatenate(parts)


def on_grid(loglam: np.ndarray, flux: np.ndarray, grid: LogLinearGrid) -> np.ndarray:
    """Models (N, nfine) interpolated onto a store grid's usable blocks (1 elsewhere), float32."""
    x = grid.crval1 + grid.cdelt1 * np.arange(grid.npix)
    out = np.ones((flux.shape[0], grid.npix), dtype=np.float32)
    use = grid.usable() & (x >= loglam[0]) & (x <= loglam[-1])
    for i in range(flux.shape[0]):
        out[i, use] = np.interp(x[use], loglam, flux[i])
    return out


def star_models(labels: np.ndarray) -> dict:
    """MRS (R 7500) and LRS (R 1800) rest-frame models of N stars on fine grids, and the truth spectra
    (the same models on the store grids)."""
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    mrs_ll = fine_loglam(MRS_FINE, MRS_FINE_STEP)
    lrs_ll = fine_loglam(LRS_FINE, LRS_FINE_STEP)
    mrs = model_spectra(10.0 ** mrs_ll, labels, RESOLVING_POWER["mrs"])
    lrs = model_spectra(10.0 ** lrs_ll, labels, RESOLVING_POWER["lrs"])
    return {"mrs_loglam": mrs_ll, "mrs": mrs, "lrs_loglam": lrs_ll, "lrs": lrs,
            "truth_mrs": on_grid(mrs_ll, mrs, MRS_GRID), "truth_lrs": on_grid(lrs_ll, lrs, LRS_GRID)}
