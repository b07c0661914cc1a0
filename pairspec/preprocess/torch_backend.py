"""The torch backend of pairspec.preprocess: the numpy backend's maths on tensors, so
that prediction can normalise whole batches on the GPU instead of ~10 ms per spectrum of numpy.

The algorithm is the numpy one step for step (see numpy_backend.py for the why of each rule); only the
layout differs: the grid's blocks are stacked as a (B, N, L) tensor, L the longest block, padded with
pixels that are simply "not good", so one batched solve per iteration serves every block. Padding never
enters a result: a pixel that is not good has weight 0, is outside every median's mask and outside the
second-difference mask. Each block row keeps its own design matrix (linspace over its own length).

Precision: float64 on every device. The clipping decisions compare z with fixed thresholds, so a
float32 fit would flip a pixel now and then and move that row's continuum by ~1e-4; in float64 only the
summation order differs from numpy (~1e-15), which the float32 outputs do not see (on CPU they are
bit-identical to numpy's in tests/test_continuum_torch.py). A degree-3 fit is a handful of passes over
(B, N, L) per iteration, memory-bound even at H100 fp64 rates. Measured on one H100: ~31k spectra/s
(benchmarks/results/gpu_h100.md), about a third of the prediction time.

Early stop: the loop ends when no row of any block changed its kept set, as in numpy (where the stop is
per block). That is the same answer row by row: a row whose kept set stopped changing refits the same
pixels with the same target, so its continuum no longer changes whatever the other rows do.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from pairspec.grid import LogLinearGrid
from pairspec.preprocess.common import CONTINUUM_FLOOR as _FLOOR
from pairspec.preprocess.common import INPUT_CLIP, WEIGHT_SNR_HALF, model_pixels

_SQRT_2PI = math.sqrt(2.0 * math.pi)
# torch's CPU sort is ~6x slower than numpy's SIMD sort (the bulk of the CPU time), so CPU tensors are
# sorted by numpy; same order either way. Tests switch it off to check the torch.sort (CUDA) branch.
NUMPY_SORT_ON_CPU = True


def row_median(values: torch.Tensor, mask: torch.Tensor, default: float) -> torch.Tensor:
    """numpy_backend.row_median over the last dim: mean of the two middle values of values[mask] (masked
    entries sorted as +inf), `default` for an empty row."""
    count = mask.sum(-1)
    masked = torch.where(mask, values, math.inf)
    if NUMPY_SORT_ON_CPU and masked.device.type == "cpu":
        ordered = torch.from_numpy(np.sort(masked.numpy(), axis=-1))
    else:
        ordered = torch.sort(masked, dim=-1).values
    lo = ordered.gather(-1, ((count - 1) // 2).clamp_min(0)[..., None])[..., 0]
    hi = ordered.gather(-1, (count // 2).clamp_min(0)[..., None])[..., 0]
    return torch.where(count > 0, 0.5 * (lo + hi), default)


def _clip_bias(lower: float, upper: torch.Tensor) -> torch.Tensor:
    """Mean of a unit normal truncated to [-lower, upper] (numpy_backend._clip_bias)."""
    pdf_lower = math.exp(-0.5 * lower * lower) / _SQRT_2PI
    pdf_upper = torch.exp(-0.5 * upper * upper) / _SQRT_2PI
    ndtr_lower = torch.special.ndtr(torch.tensor(-lower, dtype=upper.dtype, device=upper.device))
    return (pdf_lower - pdf_upper) / (torch.special.ndtr(upper) - ndtr_lower)


def _noise_scale(f: torch.Tensor, sigma: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    """numpy_backend._noise_scale: true / nominal noise per row from the scatter of second differences."""
    ok = good[..., :-2] & good[..., 1:-1] & good[..., 2:]
    d2 = f[..., :-2] - 2 * f[..., 1:-1] + f[..., 2:]
    norm = torch.sqrt(sigma[..., :-2] ** 2 + 4 * sigma[..., 1:-1] ** 2 + sigma[..., 2:] ** 2)
    z = d2.abs() / torch.where(ok, norm, 1.0)
    out = torch.where(ok.sum(-1) >= 10, 1.4826 * row_median(z, ok, 1.0 / 1.4826), 1.0)
    return out.clamp(1e-3, 3.0)


@functools.lru_cache(maxsize=16)
def _layout(blocks: tuple, npix: int, degree: int, device: str):
    """Block stacking for a grid, cached per device: pixel index (B, L) into the grid (0 in padding),
    valid (B, L), the per-block Chebyshev design (B, L, D) and its row outer products (B, L, D*D)."""
    blocks = blocks or ((0, npix),)
    width = max(b - a for a, b in blocks)
    index = np.zeros((len(blocks), width), dtype=np.int64)
    valid = np.zeros((len(blocks), width), dtype=bool)
    design = np.zeros((len(blocks), width, degree + 1))
    for i, (a, b) in enumerate(blocks):
        index[i, : b - a], valid[i, : b - a] = np.arange(a, b), True
        # the same design numpy builds, so both fits see bit-identical basis functions
        design[i, : b - a] = np.polynomial.chebyshev.chebvander(np.linspace(-1.0, 1.0, b - a), degree)
    outer = (design[..., :, None] * design[..., None, :]).reshape(len(blocks), width, -1)
    dev = torch.device(device)
    return (torch.from_numpy(index).to(dev), torch.from_numpy(valid).to(dev),
            torch.from_numpy(design).to(dev), torch.from_numpy(outer).to(dev))


def fit_blocks(flux, ivar, good, fitmask, design, outer, degree=3, n_iter=8, lower=1.0, upper=3.0):
    """numpy_backend.fit_block for all blocks at once: inputs (B, N, L) float64 / bool, `good` already
    excluding padding. Returns (continuum (B, N, L) float64 in flux units, usable (B, N) bool)."""
    min_pixels = max(4 * (degree + 1), 10)
    d = degree + 1
    # Work in units of each row's median flux (weights O(snr^2) whatever the flux calibration).
    scale = row_median(flux, good, 1.0)
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, 1.0)[..., None]
    f = torch.where(good, flux / scale, 0.0)
    w = torch.where(good, ivar * scale**2, 0.0)
    sigma = torch.where(good, 1.0 / torch.sqrt(torch.where(good, w, 1.0)), 0.0)

    noise = _noise_scale(f, sigma, good)
    sigma_lo = sigma * noise[..., None]
    upper_rel = upper * torch.clamp_min(noise, 1.0) / noise
    bias = _clip_bias(lower, upper_rel)[..., None]
    inv_sigma = torch.where(good, 1.0 / torch.where(good, sigma_lo, 1.0), 0.0)
    # w * target for both targets (plain, then debiased once clipping has started); exactly numpy's
    # (w * keep) * target, as keep is 0 or 1, and one pass less per iteration.
    wf, wdebiased = w * f, w * (f - bias * sigma_lo)
    eye = torch.eye(d, dtype=f.dtype, device=f.device)
    design_t = design.transpose(-1, -2)

    keep, clipped = fitmask, False
    for _ in range(n_iter + 1):
        normal = torch.matmul(torch.where(keep, w, 0.0), outer).unflatten(-1, (d, d))
        rhs = torch.matmul(torch.where(keep, wdebiased if clipped else wf, 0.0), design)
        ridge = 1e-10 * normal.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] + 1e-300
        coef = torch.linalg.solve(normal + ridge * eye, rhs[..., None])[..., 0]
        cont = torch.matmul(coef, design_t)
        z = (f - cont) * inv_sigma
        offset = torch.clamp_min(row_median(z, fitmask & (z > 0), 0.0) - 0.6745, 0.0)
        new_keep = fitmask & (z > -lower) & (z < (upper_rel + offset)[..., None])
        starved = new_keep.sum(-1) < min_pixels
        new_keep = torch.where(starved[..., None], keep, new_keep)
        if clipped and torch.equal(new_keep, keep):
            break
        keep, clipped = new_keep, True

    usable = good.any(-1)
    few = fitmask.sum(-1) < min_pixels
    cont = torch.where((few | ~usable)[..., None], 1.0, cont)
    cont = torch.maximum(cont, torch.tensor(_FLOOR, dtype=cont.dtype, device=cont.device))
    return cont * scale, usable


def normalize(flux, ivar, grid: LogLinearGrid, degree: int = 3, n_iter: int = 8, lower: float = 1.0,
                    upper: float = 3.0, cont_pixels=None):
    """numpy_backend.normalize on torch tensors (N, npix), on their device: (norm_flux, norm_ivar, continuum)
    float32. Same rules: outside the usable blocks flux 1, ivar 0, continuum 1; never NaN."""
    flux, ivar = torch.atleast_2d(torch.as_tensor(flux)), torch.atleast_2d(torch.as_tensor(ivar))
    if flux.shape != ivar.shape or flux.shape[1] != grid.npix:
        raise ValueError(f"flux {tuple(flux.shape)} and ivar {tuple(ivar.shape)} must both be "
                         f"(N, {grid.npix}) for this grid")
    device = flux.device
    index, valid, design, outer = _layout(tuple(grid.blocks), grid.npix, degree, str(device))
    fit_valid = valid
    if cont_pixels is not None:
        if not torch.is_tensor(cont_pixels):
            cont_pixels = torch.from_numpy(np.asarray(cont_pixels, dtype=bool))
        cont_pixels = cont_pixels.to(device=device, dtype=torch.bool)
        if cont_pixels.shape != (grid.npix,):
            raise ValueError(f"cont_pixels must be bool ({grid.npix},), got {tuple(cont_pixels.shape)}")
        fit_valid = valid & cont_pixels[index]

    n = flux.shape[0]
    flux, ivar = flux.to(device, torch.float64), ivar.to(device, torch.float64)
    finite = torch.isfinite(flux) & torch.isfinite(ivar)
    clean_flux = torch.where(finite, flux, 0.0)
    clean_ivar = torch.where(finite & (ivar > 0), ivar, 0.0)

    # (B, N, L) stacks of the blocks; padding is "not good" and outside the fit mask.
    bflux = clean_flux[:, index].permute(1, 0, 2)
    bivar = clean_ivar[:, index].permute(1, 0, 2)
    good = (bivar > 0) & valid[:, None, :]  # clean_ivar > 0 already implies finite flux and ivar
    fitmask = good & fit_valid[:, None, :]
    cont, usable = fit_blocks(bflux, bivar, good, fitmask, design, outer, degree, n_iter, lower, upper)
    block_ivar = torch.where(usable[..., None], bivar * (cont * cont), 0.0)

    norm_flux = torch.ones((n, grid.npix), dtype=torch.float32, device=device)
    norm_ivar = torch.zeros((n, grid.npix), dtype=torch.float32, device=device)
    continuum = torch.ones((n, grid.npix), dtype=torch.float32, device=device)
    pix = index[valid]  # grid pixel of each valid (block, position), in block order
    norm_flux[:, pix] = (bflux / cont).permute(1, 0, 2)[:, valid].float()
    norm_ivar[:, pix] = block_ivar.permute(1, 0, 2)[:, valid].float()
    continuum[:, pix] = cont.permute(1, 0, 2)[:, valid].float()
    # float32 overflow of a pathological pixel must not leak inf into the network.
    bad = ~torch.isfinite(norm_flux) | ~torch.isfinite(norm_ivar)
    norm_flux = torch.where(bad, 1.0, norm_flux)
    norm_ivar = torch.where(bad, 0.0, norm_ivar)
    return norm_flux, norm_ivar, continuum


def pixel_weight(norm_ivar: torch.Tensor) -> torch.Tensor:
    """numpy_backend.pixel_weight on a float32 tensor: per-pixel S/N / (S/N + 10), 0 for bad pixels."""
    s = torch.sqrt(torch.clamp_min(torch.nan_to_num(norm_ivar, nan=0.0, posinf=0.0), 0.0))
    return (s / (s + WEIGHT_SNR_HALF)).float()


def inputs_from_normalized(norm_flux: torch.Tensor, norm_ivar: torch.Tensor) -> torch.Tensor:
    """numpy_backend.inputs_from_normalized on float32 tensors already on the model pixels: (N, 2, L) float32."""
    good = (norm_ivar > 0) & torch.isfinite(norm_flux) & torch.isfinite(norm_ivar)
    x0 = torch.where(good, torch.nan_to_num(norm_flux - 1.0).clamp(*INPUT_CLIP), 0.0)
    x1 = torch.where(good, pixel_weight(torch.where(good, norm_ivar, 0.0)), 0.0)
    return torch.stack([x0, x1], dim=1)


def prepare_inputs(flux, ivar, grid: LogLinearGrid, cont_pixels=None) -> torch.Tensor:
    """numpy_backend.prepare_inputs on tensors, on their device: (N, 2, L) float32 network input."""
    norm_flux, norm_ivar, _ = normalize(flux, ivar, grid, cont_pixels=cont_pixels)
    pix = torch.from_numpy(model_pixels(grid)).to(norm_flux.device)
    return inputs_from_normalized(norm_flux[:, pix], norm_ivar[:, pix])
