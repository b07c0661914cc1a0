"""Gaia RVS's fixed layout: the published wavelength grid, the label schema, and the bits this adapter sets.

The published grid is LINEAR in wavelength (formats.md 4.1: 846-870 nm in 0.01 nm steps, 2401 samples,
both ends inclusive, rest frame, vacuum per ESA as quoted by third parties). By default the adapter
resamples onto GAIA_RVS_GRID, the log-linear grid through the same end points with the same 2401 pixels
(what every other survey's grid is). The exact grid is GAIA_RVS_NATIVE_GRID (adapter option
grid="native"), a `pairspec.grid.LinearGrid`: a store and a checkpoint rebuild it as such
(`grid_from_dict`), so its wavelength array reads back exactly and `pairspec validate` accepts it.
"""

from __future__ import annotations

import numpy as np

from pairspec.grid import LinearGrid, LogLinearGrid
from pairspec.schema import Label, LabelSchema

NPIX = 2401
START_NM, STEP_NM = 846.0, 0.01  # lambda_i = 846 + 0.01 i nm, i = 0..2400 (never np.arange on floats)
RESOLVING_POWER = 11500.0  # formats.md 4.1 (unverified)
NATIVE_PIXEL_NM = 0.0245  # RVS native pixel; the 0.01 nm grid oversamples it ~2.5x (unverified)


# The published grid, exactly (adapter option grid="native"). Its blocks ((0, 2401),) (usable everywhere, as the default's empty blocks) keep the two grids unequal once a
# store has rebuilt either as a LogLinearGrid, so an ingest cannot mix resampled and native spectra.
GAIA_RVS_NATIVE_GRID = LinearGrid.linear(10 * START_NM, 10 * STEP_NM, NPIX, medium="vacuum", frame="rest",
                                         blocks=((0, NPIX),))
# The default store grid: log-linear through the same end points with the same 2401 pixels (pixel size
# 0.0986-0.1014 A, at most 0.84 A = 8.4 px from the published sample of the same index); the adapter
# resamples the published spectra onto it (linear interpolation, variance propagated).
GAIA_RVS_GRID = LogLinearGrid(crval1=GAIA_RVS_NATIVE_GRID.crval1, cdelt1=GAIA_RVS_NATIVE_GRID.cdelt1, npix=NPIX,
                              medium="vacuum", frame="rest")


def wavelength_nm() -> np.ndarray:
    """The 2401 published wavelengths in nm, from the integer index."""
    return START_NM + STEP_NM * np.arange(NPIX, dtype=np.float64)


# Labels: Gaia's own GSP-Spec (astrophysical_parameters) by default; other catalogues map onto these names
# (labels.py). fe_h is GSP-Spec's [M/H] unless the catalogue has a true [Fe/H] column.
GAIA_RVS_SCHEMA = LabelSchema(
    survey="gaia_rvs",
    labels=(
        Label("teff", "K", 2500.0, 10000.0, "teff_gspspec", "", "flags_gspspec"),
        Label("logg", "dex", -1.0, 6.0, "logg_gspspec", "", "flags_gspspec"),
        Label("fe_h", "dex", -5.0, 1.5, "mh_gspspec", "", "flags_gspspec"),
        Label("alpha_fe", "dex", -1.5, 2.0, "alphafe_gspspec", "", "flags_gspspec"),
    ),
)

# ---- pixel-mask bits (stars/pixmask and visits/pixmask of the store); ivar = 0 is what makes a pixel bad
PIX_NULL_FLUX = 1 << 0  # flux null / NaN / inf in the file
PIX_BAD_ERROR = 1 << 1  # flux_error null, NaN, <= 0 (the file gives no usable weight)
PIX_EDGE = 1 << 2  # within `edge_nm` of either grid end (fewer CCD spectra, noisier; bad only with trim_edges)
PIX_NO_COVERAGE = 1 << 3  # epoch visit: no epoch pixel maps here after the Doppler shift to the rest frame
PIX_SYNTHETIC = 1 << 8  # every pixel of a synthetic (degraded-copy) visit carries it
PIXMASK_BITS = {0: "NULL_FLUX", 1: "BAD_ERROR", 2: "EDGE", 3: "NO_COVERAGE", 8: "SYNTHETIC"}

# ---- star_flags bits (stars/star_flags)
STAR_SYNTHETIC_TWINS = 1 << 0  # the visits are synthetic degraded copies of the mean spectrum (DR3)
STAR_EPOCH_VISITS = 1 << 1  # the visits are published epoch spectra (DR4 layout, unverified)
STAR_LABELS_TRANSFERRED = 1 << 2  # labels from another survey's catalogue (labels_from), matched by source id
STAR_NO_LABEL_ROW = 1 << 3  # the labels table has no row for this source (labels NaN)
STAR_SNR_RECOMPUTED = 1 << 4  # no published rvs_spec_sig_to_noise: snr is the recomputed median of the mean
STAR_FLAG_BITS = {0: "SYNTHETIC_TWINS", 1: "EPOCH_VISITS", 2: "LABELS_TRANSFERRED", 3: "NO_LABEL_ROW",
                  4: "SNR_RECOMPUTED"}
