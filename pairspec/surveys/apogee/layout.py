"""APOGEE's fixed layout: the apStar wavelength grid and its chip blocks, the DR17 label schema, and the
Cannon continuum pixels on that grid."""

from __future__ import annotations

import numpy as np

from pairspec.grid import LogLinearGrid
from pairspec.schema import Label, LabelSchema

# APOGEE apStar grid (formats.md 1.6): 15100.80 -> 16999.81 A, and the DR13-DR17 chip blocks (7514 px).
APOGEE_CHIP_BLOCKS = ((246, 3274), (3585, 6080), (6344, 8335))
APOGEE_GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=8575, blocks=APOGEE_CHIP_BLOCKS)
# The older 7214-px ASPCAP grid of the shipped emulator (apStar pixel index blocks).
ASPCAP_7214_BLOCKS = ((322, 3242), (3648, 6048), (6412, 8306))


def aspcap7214_index() -> np.ndarray:
    """apStar pixel indices (into the 8575 grid) of the 7214-px emulator grid, increasing."""
    return np.concatenate([np.arange(a, b) for a, b in ASPCAP_7214_BLOCKS])


# DR17 allStar's named ASPCAP labels (formats.md 1.9): the four the shipped emulator and simulator know
# first, then the overall metallicity and alpha, then every element abundance DR17 publishes, each with its
# _ERR and _FLAG columns. Ingest keeps every one the allStar has (the others are NaN, with a warning);
# a recipe's data.labels chooses what to train.
APOGEE_CORE_LABELS = ("teff", "logg", "fe_h", "mg_fe")
APOGEE_ABUNDANCES = ("c_fe", "ci_fe", "n_fe", "o_fe", "na_fe", "al_fe", "si_fe", "p_fe", "s_fe", "k_fe", "ca_fe",
                     "ti_fe", "tiii_fe", "v_fe", "cr_fe", "mn_fe", "co_fe", "ni_fe", "cu_fe", "ce_fe", "yb_fe")
APOGEE_DR17_SCHEMA = LabelSchema(
    survey="apogee",
    labels=(
        Label("teff", "K", 2500.0, 10000.0, "TEFF", "TEFF_ERR"),
        Label("logg", "dex", -1.0, 6.0, "LOGG", "LOGG_ERR"),
        Label("fe_h", "dex", -5.0, 1.5, "FE_H", "FE_H_ERR", "FE_H_FLAG"),
        Label("mg_fe", "dex", -1.5, 2.0, "MG_FE", "MG_FE_ERR", "MG_FE_FLAG"),
        Label("m_h", "dex", -5.0, 1.5, "M_H", "M_H_ERR"),
        Label("alpha_m", "dex", -1.5, 2.0, "ALPHA_M", "ALPHA_M_ERR"),
    ) + tuple(Label(name, "dex", -3.0, 3.0, name.upper(), f"{name.upper()}_ERR", f"{name.upper()}_FLAG")
              for name in APOGEE_ABUNDANCES),
)
APOGEE_CORE_SCHEMA = APOGEE_DR17_SCHEMA.subset(list(APOGEE_CORE_LABELS))


def apogee_continuum_pixels() -> np.ndarray:
    """Cannon continuum pixels (Ness et al.; shipped 7214-px mask) on the 8575-px apStar grid: bool (8575,)."""
    from pairspec.surveys.apogee.emulator import load_npz

    cannon = load_npz("cannon_cont_pixels_apogee.npz")["pixels_cannon"].astype(bool)
    index = aspcap7214_index()
    if cannon.shape != index.shape:
        raise ValueError(f"cannon_cont_pixels_apogee.npz: pixels_cannon has shape {cannon.shape}, expected {index.shape}")
    mask = np.zeros(APOGEE_GRID.npix, dtype=bool)
    mask[index[cannon]] = True
    return mask
