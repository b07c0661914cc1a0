"""What both preprocessing backends share: the network-input constants and the model pixels of a grid."""

from __future__ import annotations

import numpy as np

from pairspec.grid import LogLinearGrid

# Channel-0 clip (normalised flux - 1): deep lines reach -1, unmasked cosmic rays cannot blow up the net.
INPUT_CLIP = (-1.5, 1.0)
# Weight channel w = snr_pix / (snr_pix + WEIGHT_SNR_HALF): 0.33 at S/N 5, 0.5 at 10, 0.91 at 100.
WEIGHT_SNR_HALF = 10.0
# Pseudo-continuum floor relative to the block's median flux: keeps flux/continuum finite.
CONTINUUM_FLOOR = 1e-3


def model_pixels(grid: LogLinearGrid) -> np.ndarray:
    """Indices (int64, increasing) of the grid pixels the network sees: its usable blocks."""
    return np.flatnonzero(grid.usable()).astype(np.int64)
