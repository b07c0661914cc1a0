"""The visit machinery every survey simulator shares: Doppler shifts on log-linear grids, resampling,
coverage masks, a smoothed continuum, a Planck continuum shape, the loop that renders stars in worker
processes with a progress bar. Survey-specific instruments (detectors,
masks, noise recipes) live in each survey's own simulator."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

C_KMS = 299792.458


def velocity_to_pixels(v_kms: float, cdelt1: float) -> float:
    """Shift in pixels of a log10-linear grid (step cdelt1) of a Doppler velocity (positive = redward)."""
    return float(np.log10(1.0 + v_kms / C_KMS) / cdelt1)


def lanczos_shift(x: np.ndarray, d: float, a: int = 5) -> np.ndarray:
    """y[i] = x(i - d): windowed-sinc resampling (keeps white-noise variance, local, edge-clamped)."""
    n = int(np.floor(d))
    f = d - n
    m = np.arange(-a, a + 1)
    w = np.sinc(m - f) * np.sinc((m - f) / a)
    w[np.abs(m - f) >= a] = 0.0
    w /= w.sum()
    pad = a + abs(n) + 1
    xp = np.pad(x, pad, mode="edge")
    i = np.arange(x.size) + pad - n
    return sum(wk * xp[i - mk] for wk, mk in zip(w, m) if wk != 0.0)


def shift_linear(x: np.ndarray, d: float) -> np.ndarray:
    """y[i] = x(i - d) by linear interpolation (for errors, sky, telluric: no ringing)."""
    n = int(np.floor(d))
    f = d - n
    xp = np.pad(x, abs(n) + 2, mode="edge")
    i = np.arange(x.size) + abs(n) + 2 - n
    return (1.0 - f) * xp[i] + f * xp[i - 1]


def shift_mask(mask: np.ndarray, d: float) -> np.ndarray:
    """OR of the two pixels that feed each resampled pixel (bitmasks survive resampling)."""
    n = int(np.floor(d))
    mp = np.pad(mask, abs(n) + 2)
    i = np.arange(mask.size) + abs(n) + 2 - n
    return mp[i] | mp[i - 1]


def coverage(blocks, npix: int) -> np.ndarray:
    """Bool (npix,) True inside the half-open pixel blocks (clipped to the grid)."""
    cov = np.zeros(npix, dtype=bool)
    for a, b in blocks:
        cov[max(a, 0):min(b, npix)] = True
    return cov


def block_coordinate(cov: np.ndarray) -> np.ndarray:
    """Each covered pixel's position in its own covered block, mapped onto [-1, 1] (0 elsewhere)."""
    x = np.zeros(cov.size)
    edges = np.flatnonzero(np.diff(np.r_[0, cov.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2]):
        x[a:b] = np.linspace(-1.0, 1.0, b - a)
    return x


def smooth_continuum(flux: np.ndarray, good: np.ndarray, block: int = 50) -> np.ndarray:
    """Cheap stand-in for a pipeline's running median + Gaussian: block medians, interpolated, smoothed."""
    nblock = -(-flux.size // block)
    vals = np.full(nblock * block, np.nan)
    vals[:flux.size] = np.where(good, flux, np.nan)
    vals = vals.reshape(nblock, block)
    enough = np.isfinite(vals).sum(1) >= block // 5
    if enough.sum() < 2:
        return np.full_like(flux, np.median(flux[good]) if good.any() else 0.0)
    centres = np.nanmean(np.where(np.isfinite(vals), np.arange(nblock * block).reshape(nblock, block), np.nan)[enough], 1)
    meds = np.nanmedian(vals[enough], axis=1)
    return gaussian_filter1d(np.interp(np.arange(flux.size), centres, meds), 25.0, mode="nearest")


def planck_shape(wavelength_aa: np.ndarray, teff: float) -> np.ndarray:
    """B_lambda(Teff) at the given wavelengths (Angstrom), normalised to 1 at the middle pixel."""
    lam_cm = np.asarray(wavelength_aa, dtype=np.float64) * 1e-8
    b = 1.0 / (lam_cm**5 * np.expm1(1.4387769 / (lam_cm * teff)))
    return b / b[b.size // 2]


def render_all(render, tasks: list[dict], workers: int, progress: bool, description: str) -> list[dict]:
    """render(task) for every task, in order: in this process (workers <= 1) or in a pool of `workers`
    processes (render must be a module-level function), with a progress bar titled `description`."""
    from pairspec.progress import Progress

    with Progress(enabled=progress) as bar:
        job = bar.add_task(description, total=len(tasks))
        results = []
        if workers <= 1:
            for t in tasks:
                results.append(render(t))
                bar.advance(job)
            return results
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            for r in pool.map(render, tasks, chunksize=4):
                results.append(r)
                bar.advance(job)
        return results
