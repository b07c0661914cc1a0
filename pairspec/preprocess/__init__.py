"""Preprocessing, one API with two backends: pseudo-continuum normalisation, network inputs and targets,
S/N. The same call serves training, prediction and evaluation, on numpy arrays (the numpy backend) or
on torch tensors of any device (the torch backend, the same maths step for step, used on GPUs):

    norm_flux, norm_ivar, continuum = normalize(flux, ivar, grid)   # numpy in -> numpy out, tensor -> tensor
    x = prepare_inputs(flux, ivar, grid)                            # (N, 2, L) network input
    snr, frac_bad = visit_snr(flux, ivar, model_pixels(grid))       # numpy only: one definition

Why each rule is as it is lives in numpy_backend.py; torch_backend.py says how the port differs (layout
only). The two agree to float32 rounding (tests/test_preprocess.py), not bit for bit: numbers that
decide something discrete (the S/N picks a calibration bin) are computed once, by `visit_snr`, in numpy.
Importing this module does not import torch.
"""

from __future__ import annotations

import warnings

import numpy as np

from pairspec.preprocess.common import (
    CONTINUUM_FLOOR,
    INPUT_CLIP,
    WEIGHT_SNR_HALF,
    model_pixels,
)
from pairspec.preprocess.numpy_backend import target_from_normalized

__all__ = ["CONTINUUM_FLOOR", "INPUT_CLIP", "WEIGHT_SNR_HALF", "clean", "inputs_from_normalized", "model_pixels",
           "normalize", "pixel_weight", "prepare_inputs", "target_from_normalized", "visit_snr"]


def _backend(array):
    """The backend module for an array: torch_backend for tensors, numpy_backend for anything else."""
    if type(array).__module__.startswith("torch"):
        from pairspec.preprocess import torch_backend

        return torch_backend
    from pairspec.preprocess import numpy_backend

    return numpy_backend


def normalize(flux, ivar, grid, **options):
    """(norm_flux, norm_ivar, continuum) float32 of rows of (N, npix) spectra on `grid` (numpy_backend.normalize
    documents the options: degree, n_iter, lower, upper, cont_pixels)."""
    return _backend(flux).normalize(flux, ivar, grid, **options)


def pixel_weight(norm_ivar):
    """Weight channel of the network input: per-pixel S/N / (S/N + WEIGHT_SNR_HALF), 0 on bad pixels."""
    return _backend(norm_ivar).pixel_weight(norm_ivar)


def inputs_from_normalized(norm_flux, norm_ivar):
    """(N, 2, L) float32 network input from normalised flux/ivar already on the model pixels."""
    return _backend(norm_flux).inputs_from_normalized(norm_flux, norm_ivar)


def prepare_inputs(flux, ivar, grid, cont_pixels=None):
    """(N, 2, L) float32 network input from raw spectra (N, npix) on `grid`."""
    return _backend(flux).prepare_inputs(flux, ivar, grid, cont_pixels=cont_pixels)


def clean(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 copies where NaN/inf flux or ivar, and ivar <= 0, became bad pixels (ivar 0, flux 0)."""
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
    return np.where(bad, 0.0, flux).astype(np.float32), np.where(bad, 0.0, ivar).astype(np.float32)


def visit_snr(flux: np.ndarray, ivar: np.ndarray, pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(snr (N,) float32, frac_bad (N,) float32) of cleaned spectra over the pixels `pix`: the median of
    flux * sqrt(ivar) over the good pixels (NaN for an all-bad row; the same before and after continuum
    normalisation) and the fraction of bad pixels."""
    fp, ivp = flux[:, pix], ivar[:, pix]
    good = ivp > 0
    s2n = np.where(good, fp * np.sqrt(ivp), np.nan)
    with warnings.catch_warnings():  # an all-bad row: NaN S/N is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        snr = np.nanmedian(s2n, axis=1).astype(np.float32)
    return snr, (1.0 - good.mean(1)).astype(np.float32)
