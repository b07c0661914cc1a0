"""The denoised spectra in `pairspec evaluate`: each visit's input, its denoised spectrum and the star's
leave-one-out coadd of its other visits, compared with the star's noiseless spectrum (truth, where a
simulator kept it) or, without one, with the leave-one-out coadd (real data).

Per visit-S/N bin (medians over the visits of the bin): the RMS of each against the truth over the model
pixels where the input, its leave-one-out coadd and the truth are all measured, and the mean fractional
depth error at the truth's 10 deepest lines (negative = too shallow). Without truth: the RMS of the input
and of the denoised visit against the leave-one-out coadd, with the coadd's own noise removed in
quadrature (sqrt(rms^2 - mean coadd variance)), so both estimate the distance to the star's spectrum.
That subtraction trusts the stated variances, so it uses only the pixels where they are of the visit's
usual size: a survey inflates the errors of flagged pixels (sky lines, persistence) far beyond
their real scatter, and a few such pixels would otherwise hold most of the mean variance and drive every
RMS to 0 (a simulated survey: 4 % of the pixels, 92 % of the coadd's stated variance).
"""

from __future__ import annotations

import warnings

import numpy as np

from pairspec import metrics as M

METHODS = ("input", "denoised", "loo")
N_EXAMPLES_PER_BIN = 2
# without truth: a pixel whose stated variance (input or coadd) exceeds this many times the visit's median is
# left out of the noise-subtracted RMS (an inflated error of a flagged pixel, not its scatter)
INFLATED_VARIANCE = 10.0


def honest_pixels(good: np.ndarray, *ivars: np.ndarray, factor: float = INFLATED_VARIANCE) -> np.ndarray:
    """`good` (N, npix) narrowed to the pixels where each ivar's variance is at most `factor` times that
    row's median variance over its good pixels."""
    keep = good.copy()
    for iv in ivars:
        var = np.where(good & (iv > 0), 1.0 / np.where(iv > 0, iv, 1.0), np.nan)
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # a row without a good pixel: stays empty
            med = np.nanmedian(var, axis=1, keepdims=True)
        keep &= var <= factor * med
    return keep


def read_truth_spectra(path, star_ids, wanted, npix: int | None = None) -> dict | None:
    """{star index: noiseless spectrum (npix,) float32} for the store stars `wanted` (indices into
    star_ids), from the "SPECTRA" HDU of a truth file (rows in the order of its HDU1 star_id column);
    None when the file has no such HDU (a truth table of labels only). `npix`: the store grid's pixels; a
    truth with spectra on several grids (one survey's two instruments: "SPECTRA", "SPECTRA_<X>") gives the HDU of that
    length, and one with none of that length gives None with a warning (indexing another grid's spectrum
    by this grid's pixels compared spectra at other wavelengths)."""
    from astropy.io import fits

    path = str(path)
    if not path.lower().endswith((".fits", ".fit", ".fits.gz")):
        return None
    try:
        with fits.open(path, memmap=True) as hdul:
            candidates = [h for h in hdul[1:] if str(h.name).upper().startswith("SPECTRA") and h.data is not None]
            if not candidates:
                return None
            chosen = next((h for h in candidates if npix is None or h.data.shape[-1] == npix), None)
            if chosen is None:
                warnings.warn(f"{path}: its truth spectra ({', '.join(f'{h.name}: {h.data.shape[-1]} px' for h in candidates)}) "
                              f"are not on the store's grid ({npix} px): the spectrum metrics are left out", stacklevel=3)
                return None
            ids = np.char.strip(np.asarray(hdul[1].data["star_id"]).astype(str))
            row = {sid: i for i, sid in enumerate(ids)}
            data = chosen.data
            out = {}
            for s in wanted:
                i = row.get(str(star_ids[s]).strip())
                if i is not None:
                    out[int(s)] = np.array(data[i], dtype=np.float32)
    except (OSError, TypeError, ValueError, KeyError) as err:  # e.g. a file cut short: its data are not all there
        raise ValueError(f"{path}: the truth spectra (HDU SPECTRA) cannot be read ({type(err).__name__}: {err}); "
                         "is the file complete?") from err
    return out


class SpectrumScores:
    """Accumulates the per-visit spectrum errors of evaluate's chunks; `result()` gives the metrics."""

    def __init__(self, grid, truth: dict | None):
        from pairspec.preprocess import model_pixels

        self.pix = model_pixels(grid)
        self.truth = truth
        self.against = "truth" if truth else "loo"
        self.rows = {f"{m}_{k}": [] for m in METHODS for k in ("rms", "depth")}
        self.snr, self.examples = [], {}

    def add(self, norm_flux, norm_ivar, loo_flux, loo_ivar, denoised, star, snr) -> None:
        """One chunk: the inputs' normalised flux/ivar and their leave-one-out coadds (N, npix) on the grid,
        the denoised spectra (N, npix), each visit's star index and S/N."""
        p = self.pix
        inp, den, loo = norm_flux[:, p], denoised[:, p], loo_flux[:, p]
        good = (norm_ivar[:, p] > 0) & (loo_ivar[:, p] > 0) & np.isfinite(den)
        snr = np.asarray(snr, dtype=np.float64)
        if self.truth:
            have = np.array([int(s) in self.truth for s in star])
            if not have.any():
                return
            inp, den, loo, good, star, snr = inp[have], den[have], loo[have], good[have], star[have], snr[have]
            truth = np.stack([self.truth[int(s)][p] for s in star])
            errs = M.spectrum_errors({"input": inp, "denoised": den, "loo": loo}, truth, good)
            for m in METHODS:
                self.rows[f"{m}_rms"].append(errs[m]["rms"])
                self.rows[f"{m}_depth"].append(errs[m]["depth"])
            self._keep_examples(inp, den, loo, truth, good, snr)
        else:
            li = loo_ivar[:, p]
            good = honest_pixels(good, norm_ivar[:, p], li)
            var = np.where(good, 1.0 / np.where(good, li, 1.0), np.nan)
            with warnings.catch_warnings():  # a visit without a usable pixel (a star's only visit): NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                noise = np.nanmean(var, axis=1)
                for m, s in (("input", inp), ("denoised", den)):
                    ms = np.nanmean(np.where(good, (s - loo) ** 2, np.nan), axis=1)
                    self.rows[f"{m}_rms"].append(np.sqrt(np.maximum(ms - noise, 0.0)))
                    self.rows[f"{m}_depth"].append(np.full(len(s), np.nan))
            self.rows["loo_rms"].append(np.sqrt(noise))  # the coadd's own noise: its distance to the star
            self.rows["loo_depth"].append(np.full(len(inp), np.nan))
        self.snr.append(snr)

    def _keep_examples(self, inp, den, loo, truth, good, snr) -> None:
        for i, s in enumerate(snr):
            name = M.snr_bin_labels()[int(np.clip(np.searchsorted(M.DEFAULT_SNR_EDGES, s, side="right") - 1, 0, 3))]
            kept = self.examples.setdefault(name, [])
            if len(kept) < N_EXAMPLES_PER_BIN and good[i].sum() > 100:
                kept.append({"snr": float(s), "input": np.where(good[i], inp[i], np.nan), "denoised": den[i],
                             "loo": np.where(good[i], loo[i], np.nan), "truth": truth[i], "pixels": self.pix})

    def result(self, edges=M.DEFAULT_SNR_EDGES) -> dict:
        if not self.snr:
            return {"against": self.against, "n": 0}
        snr = np.concatenate(self.snr)
        out = {"against": self.against, "n": int(snr.size), "rms": {}, "depth": {}}
        for m in METHODS:
            out["rms"][m] = M.binned_median(np.concatenate(self.rows[f"{m}_rms"]), snr, edges)
            out["depth"][m] = M.binned_median(np.concatenate(self.rows[f"{m}_depth"]), snr, edges)
        den = np.concatenate(self.rows["denoised_rms"])
        with np.errstate(divide="ignore", invalid="ignore"):  # an RMS of 0 (no noise left): no ratio
            ratios = {k: den / np.concatenate(self.rows[f"{k}_rms"]) for k in ("input", "loo")}
        for k, ratio in ratios.items():
            out[f"denoised_over_{k}"] = M.binned_median(ratio, snr, edges)
        return out
