"""Labels, calibrated sigmas and denoised spectra for any visit on a checkpoint's grid.

    predictor = LabelPredictor.from_checkpoint("runs/tsn/best.pt")
    out = predictor.predict(flux, ivar)          # flux, ivar: (N, npix) on predictor.grid
    out["labels"], out["sigma"]                  # (N, K) physical units, calibrated sigma
    out["sigma_visit"], out["sigma_star"]        # its two parts (calibration.py): sigma^2 = visit^2 + star^2
    predictor.predict(flux, ivar, denoise=True)  # + "denoised" (N, npix) and its per-pixel "denoised_sigma"

A checkpoint trained with a label decoder carries a refit (pairspec.refit): the labels are then the val-chosen
mix of the network's and those refitted through the decoder (`refit=False`: the network's own).

Rows are streamed in batches, so memory is bounded by batch_size whatever N is.

`compile=True` runs the network through torch.compile (the first batch pays the compilation, seconds
to a minute). Every batch then has the same shape: the last one is padded with empty rows (all pixels
bad) whose outputs are dropped, so there is one compiled graph whatever N is. On an H100 the compiled
tsn_base network ran 1.4x faster than eager (benchmarks/results/gpu_h100.md); on a CPU it rarely pays.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

import numpy as np

from pairspec import preprocess
from pairspec.calibration import split_sigma
from pairspec.grid import grid_from_dict
from pairspec.metrics import snr_bin_index
from pairspec.refit import labels_returned
from pairspec.schema import LabelSchema


class LabelPredictor:
    def __init__(self, model, meta: dict, device="cpu", source: str = "", compile: bool = False,
                 refit: bool = True):
        import torch

        from pairspec import data

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.compiled = bool(compile)
        self.network = torch.compile(self.model, dynamic=False) if self.compiled else self.model
        self.meta, self.source = meta, str(source)
        self.refit = bool(refit)  # predict's default: apply the checkpoint's refit mix where it has one
        self.schema = LabelSchema.from_dict(meta["schema"])
        self.grid = grid_from_dict(meta["grid"])
        self.label_names = list(self.schema.names)
        self.label_stats = data.LabelStats.from_dict(meta["label_stats"])
        self.label_mean = np.asarray(self.label_stats.mean, dtype=np.float64)
        self.label_std = np.asarray(self.label_stats.std, dtype=np.float64)
        self.label_lo = np.asarray(meta["label_lo"], dtype=np.float64)  # training label range
        self.label_hi = np.asarray(meta["label_hi"], dtype=np.float64)
        self.calibration = meta.get("calibration")
        self.model_pixels = np.asarray(preprocess.model_pixels(self.grid))
        if self.model_pixels.size != int(meta["n_model_pix"]):
            raise ValueError(f"{source or 'checkpoint'}: the model was trained on {meta['n_model_pix']} pixels, "
                             f"but this pairspec selects {self.model_pixels.size} model pixels of its grid")
        # Where the inputs are built: on CUDA the whole preprocessing (cleaning, S/N, continuum, input
        # tensor) runs on the device (the torch backend of pairspec.preprocess, same maths as numpy), since numpy
        # normalisation would cap a GPU at a few hundred spectra/s per core. On CPU numpy stays: it is
        # ~1.7x faster than torch there (benchmarks/continuum.py). Setting it True on CPU runs the torch path.
        self.torch_inputs = self.device.type == "cuda"

    @classmethod
    def from_checkpoint(cls, path, device="cpu", compile: bool = False, refit: bool = True) -> LabelPredictor:
        """The predictor of a checkpoint file; warns when its sigmas are uncalibrated (a best.pt written by
        a training stopped before its closing stage, which a rerun of the train command finishes)."""
        import torch

        from pairspec.checkpoint import load_checkpoint

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch finds no CUDA device here (use 'cpu' or 'auto')")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):
            raise ValueError(f"device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'")
        model, meta = load_checkpoint(path, map_location="cpu")
        if not meta.get("calibration") and meta.get("model_class", "tsn") == "tsn":
            warnings.warn(f"{path}: no sigma calibration in this checkpoint (a training stopped before its closing "
                          "stage, or one without a val split): its errors are the network's own, not calibrated. "
                          "Rerunning the train command finishes an interrupted run", stacklevel=2)
        return cls(model, meta, device=device, source=str(Path(path)), compile=compile, refit=refit)

    @property
    def has_refit(self) -> bool:
        """Whether the checkpoint carries a refit (pairspec.refit: a label decoder and the val-chosen mix)."""
        return bool(self.meta.get("refit")) and bool(getattr(self.model, "label_decoder_width", 0))

    def calibration_method(self, refit: bool | None = None) -> str:
        """The method of the sigma calibration applied to the labels `predict` returns (the refit mix's with
        a refit): "visit+star" (the errors split into a part that averages down over a star's visits and one
        common to them), "one-part" (too few repeat pairs in the val split to split them) or "none"."""
        calibration = self._mix_and_calibration(self.refit if refit is None else refit)[1]
        return str(calibration.get("method", "none")) if calibration else "none"

    def _mix_and_calibration(self, refit: bool) -> tuple:
        """(the refit's mix weights or None, the sigma calibration that goes with the labels returned): one
        rule for `predict` and for `calibration_method`, which the catalogue's CALMETH reports."""
        mix = (self.meta.get("refit") or {}).get("weight_of_network") if refit and self.has_refit else None
        return mix, (self.meta["refit"].get("calibration") if mix is not None else self.calibration)

    def predict(self, flux, ivar, batch_size: int = 256, denoise: bool = False, refit: bool | None = None,
                return_refit: bool = False) -> dict:
        """flux, ivar (N, npix) on self.grid (bad pixels ivar 0; NaN/inf are treated as bad). A row without
        one usable model pixel (frac_bad 1) gets NaN labels, sigmas and denoised spectrum.

        refit: where the checkpoint has one (`has_refit`), the labels are the val-chosen mix of the
        network's and the label-decoder refit's (pairspec.refit), with that mix's sigma calibration, and
        the denoised spectrum is the decoder's spectrum of those labels; False gives the network's own;
        None: the predictor's `refit` (True unless built with refit=False).
        return_refit: also return "labels_network" and "labels_refit" (the pure refit, network prior) for
        any checkpoint with a label decoder (benchmarks)."""
        import torch

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        flux = np.atleast_2d(np.asarray(flux, dtype=np.float32))
        ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float32))
        if flux.shape != ivar.shape or flux.shape[1] != self.grid.npix:
            raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must both be (N, {self.grid.npix})")
        N, K, pix = flux.shape[0], len(self.label_names), self.model_pixels
        labels, sigma = np.full((N, K), np.nan), np.full((N, K), np.nan)
        snr, frac_bad = np.full(N, np.nan, dtype=np.float32), np.ones(N, dtype=np.float32)
        denoised = np.full((N, self.grid.npix), np.nan, dtype=np.float32) if denoise else None
        have_profile = bool((self.meta.get("denoise_sigma") or {}).get("sigma"))
        denoised_sigma = np.full((N, self.grid.npix), np.nan, dtype=np.float32) if denoise and have_profile else None
        refit = self.refit if refit is None else refit
        mix, calibration = self._mix_and_calibration(refit)
        do_refit = mix is not None or (return_refit and bool(getattr(self.model, "label_decoder_width", 0)))
        if return_refit and not getattr(self.model, "label_decoder_width", 0):
            raise ValueError(f"{self.source or 'checkpoint'}: no label decoder (model.label_decoder) to refit through")
        net_labels = np.full((N, K), np.nan) if do_refit else None
        refit_labels = np.full((N, K), np.nan) if do_refit else None
        cuda = self.device.type == "cuda"
        amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

        with torch.inference_mode():
            for start in range(0, N, batch_size):
                rows = slice(start, min(start + batch_size, N))
                f, iv = preprocess.clean(flux[rows], ivar[rows])
                # one numpy computation for both input paths: S/N picks the calibration bin, so the two
                # must not disagree in the last bit (torch and numpy kernels differ between CPUs)
                snr[rows], frac_bad[rows] = preprocess.visit_snr(f, iv, pix)
                if self.torch_inputs:
                    x = self._inputs_torch(f, iv)
                else:
                    x = torch.from_numpy(np.ascontiguousarray(preprocess.prepare_inputs(f, iv, self.grid),
                                                              dtype=np.float32)).to(self.device)
                n = x.shape[0]
                if self.compiled and n < batch_size:  # one shape for the compiled graph
                    x = torch.cat([x, x.new_zeros((batch_size - n,) + tuple(x.shape[1:]))])
                with amp():
                    out = self.network(x)
                mean = out["mean"][:n].float().cpu().numpy().astype(np.float64)
                log_var = out["log_var"][:n].float().cpu().numpy().astype(np.float64)
                labels[rows] = mean * self.label_std + self.label_mean
                sigma[rows] = np.exp(0.5 * log_var) * self.label_std
                if do_refit:
                    labels[rows], net_labels[rows], refit_labels[rows] = labels_returned(
                        self.model.label_decoder, x[:n], out["mean"][:n], out["log_var"][:n], self.label_mean,
                        self.label_std, snr[rows], self.meta["refit"] if mix is not None else None,
                        self.calibration, always_refit=True)
                if denoise:
                    if getattr(self.model, "label_decoder_width", 0):
                        # the (product) label decoder's spectrum of the labels returned: it agrees with them
                        zf = torch.from_numpy((labels[rows] - self.label_mean) / self.label_std).float()
                        spectrum = self.model.denoise_spectrum(zf.to(self.device))
                    else:
                        spectrum = out["recon"][:n]
                    denoised[rows, pix] = spectrum.float().cpu().numpy() + 1.0
                    if denoised_sigma is not None:
                        denoised_sigma[rows, pix] = self._denoise_sigma(snr[rows])
        raw_sigma = sigma
        sigma, sigma_visit, sigma_star = split_sigma(sigma, snr, calibration, labels)
        result = {"labels": labels, "sigma": sigma, "sigma_visit": sigma_visit, "sigma_star": sigma_star, "snr": snr,
                  "frac_bad": frac_bad, "refit": mix is not None}
        if return_refit:
            result["labels_network"], result["labels_refit"] = net_labels, refit_labels
            # the network's own labels with their own calibration (evaluate's "tsn_network")
            result["sigma_network"], result["sigma_visit_network"], _ = split_sigma(raw_sigma, snr, self.calibration,
                                                                                         net_labels)
        if denoise:
            result["denoised"] = denoised
            if denoised_sigma is not None:
                result["denoised_sigma"] = denoised_sigma
        # a row without one usable model pixel: the network saw nothing, so it returns nothing (the values it
        # would give are its prior, with sigmas like any other row's, and look like a measurement)
        blind = ~(frac_bad < 1)
        for key, arr in result.items():
            if isinstance(arr, np.ndarray) and key not in ("snr", "frac_bad"):
                arr[blind] = np.nan
        return result

    def _denoise_sigma(self, snr) -> np.ndarray:
        """(n, L) per-pixel uncertainty of the denoised spectra for visits of S/N `snr`: the val-split
        profile of the visit's S/N bin (train_steps.denoise_error_profile); the top bin for NaN S/N."""
        prof = self.meta["denoise_sigma"]
        table = np.asarray(prof["sigma"], dtype=np.float32)
        return table[np.minimum(snr_bin_index(snr, prof["snr_edges"]), len(table) - 1)]

    def _inputs_torch(self, flux: np.ndarray, ivar: np.ndarray):
        """preprocess.prepare_inputs of cleaned flux/ivar run on self.device: x (n, 2, L) float32 there."""
        import torch

        f = torch.from_numpy(np.ascontiguousarray(flux)).to(self.device)
        iv = torch.from_numpy(np.ascontiguousarray(ivar)).to(self.device)
        return preprocess.prepare_inputs(f, iv, self.grid)

    def predict_spectrum(self, spectrum, **kwargs) -> dict:
        """A specutils Spectrum (1-D or (N, npix)) on this grid; uncertainty converted to ivar."""
        from astropy.nddata import InverseVariance

        wave = spectrum.spectral_axis.to_value("Angstrom")
        expected = self.grid.wavelength()
        if wave.size != expected.size or not np.allclose(wave, expected, rtol=1e-7):
            raise ValueError(f"spectrum has {wave.size} pixels from {wave[0]:.2f} A; the model expects "
                             f"its grid of {expected.size} pixels from {expected[0]:.2f} A (resample first)")
        if spectrum.uncertainty is None:
            raise ValueError("spectrum has no uncertainty; TSN needs ivar to weight the pixels")
        ivar = np.asarray(spectrum.uncertainty.represent_as(InverseVariance).array, dtype=np.float32)
        flux = np.asarray(spectrum.flux.value, dtype=np.float32)
        if spectrum.mask is not None:
            ivar = np.where(np.asarray(spectrum.mask, dtype=bool), 0.0, ivar)
        return self.predict(flux, ivar, **kwargs)
