"""Why a fit to the denoised spectrum loses Teff: how the visit-level fit reads the label decoder's spectra.

    python benchmarks/decoder_response.py CHECKPOINT STORE TRUTH [--stars 150] [--threads 1] [--noisy]
        [--decoder DECODER.pt]

The denoised spectrum of a checkpoint with a label decoder is D(labels): the decoder's spectrum of TSN's
labels (its product decoder's where it has one, train.decoder_labels: network). The emulator fitted to it returns labels whose error against the truth has two parts:

- the floor: the fit of D at the TRUE labels is not the truth (the decoder is a learned emulator, and the
  Kurucz emulator does not fit even the noiseless truth spectrum exactly);
- the transfer of TSN's own error delta = labels - truth: fit(D(truth + delta)) - fit(D(truth)) ~ R delta,
  with R[i, j] = d fit_i / d label_j the response of the fitted label i to decoder input j. A decoder whose
  label response is the emulator's has R = identity; where its response to one label looks to the emulator
  like another label (e.g. log g read as Teff), TSN's error in that label leaks into the fitted one.

For --stars test stars it fits D(truth) and D(truth + step_j) for each label j (R per star, forward
differences, steps --steps) and, where the truth file has the noiseless spectra (SPECTRA HDU), the
noiseless truth spectrum itself (the emulator's own mismatch, which a fit of the noisy visit carries too),
then, on every test visit of those stars with S/N < 60, compares the measured
product, fit(D(TSN's labels)), with the two-part prediction fit(D(truth)) + R delta and with TSN's labels
themselves (robust sigma against the truth per label). --noisy adds the fit to the noisy visit (the
reference issue 12 compares with). The fit's weights for D are the checkpoint's denoised-sigma profile at
the visit's S/N (at S/N 30 for the response), as `benchmarks/denoised_fit.py` fits the product. --decoder
puts another decoder (e.g. one trained longer after the network, `posthoc_label_decoder.py --save-decoder`)
in D, with the checkpoint's labels and weights; it may have been trained beside another checkpoint (its
label standardisation is converted to this one's). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

DEFAULT_STEPS = {"teff": 50.0, "logg": 0.1, "fe_h": 0.05, "mg_fe": 0.05}


def response(fit_fn, spectrum_fn, theta: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(base (N, K), R (N, K, K)): base = fit(spectrum(theta)), R[n, i, j] = (fit_i(spectrum(theta_n + steps_j
    e_j)) - base_n,i) / steps_j. `spectrum_fn` (N, K) labels -> spectra; `fit_fn` spectra -> (N, K) labels, in
    the same label order."""
    theta = np.asarray(theta, dtype=np.float64)
    n, k = theta.shape
    moved = [theta] + [theta + np.eye(k)[j] * steps[j] for j in range(k)]
    fits = np.asarray(fit_fn(spectrum_fn(np.concatenate(moved))), dtype=np.float64).reshape(k + 1, n, k)
    base = fits[0]
    R = np.stack([(fits[1 + j] - base) / steps[j] for j in range(k)], axis=2)
    return base, R


def transfer(base: np.ndarray, R: np.ndarray, truth: np.ndarray, labels: np.ndarray, star: np.ndarray) -> np.ndarray:
    """The linear prediction of fit(D(labels)) for visits of `star` (indices into base/R/truth): the floor
    base[star] plus R[star] @ (labels - truth[star])."""
    delta = labels - truth[star]
    return base[star] + np.einsum("nij,nj->ni", R[star], delta)


def truth_spectra(path: str, star_ids: list[str]) -> np.ndarray | None:
    """The noiseless normalised spectra of these stars from a simulator's truth file (its SPECTRA HDU, rows
    in the order of HDU 1's star_id; NaN -> 1 outside the model), or None when the file has none."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        if "SPECTRA" not in hdul:
            return None
        ids = [str(s).strip() for s in hdul[1].data["star_id"]]
        row = {s: i for i, s in enumerate(ids)}
        missing = [s for s in star_ids if s not in row]
        if missing:
            raise SystemExit(f"{path}: no truth spectrum for {len(missing)} star(s), e.g. {missing[0]}")
        spec = np.asarray(hdul["SPECTRA"].data[[row[s] for s in star_ids]], dtype=np.float32)
    return np.where(np.isfinite(spec), spec, 1.0)


def load_decoder(path: str, label_names, label_mean, label_std, npix: int, pixels):
    """A label decoder saved by `benchmarks/posthoc_label_decoder.py --save-decoder` as a module that maps the
    checkpoint's standardised labels to its model pixels (a decoder over the whole grid is cut to `pixels`).
    A decoder trained beside another checkpoint standardises the labels its own way: its first layer is
    rewritten so that it takes this checkpoint's standardised labels (an exact affine change of input, so the
    same physical labels give the same spectrum). SystemExit naming the file when its labels are not the
    checkpoint's or its pixels are not the grid's."""
    import torch
    from torch import nn

    from pairspec.models.tsn import label_decoder_mlp

    saved = torch.load(path, map_location="cpu", weights_only=False)
    if list(saved["label_names"]) != list(label_names):
        raise SystemExit(f"{path}: decoder of labels {list(saved['label_names'])}, the checkpoint predicts "
                         f"{list(label_names)}")
    w, n_out, k = int(saved["width"]), int(saved["n_out"]), len(label_names)
    dec = label_decoder_mlp(k, w, n_out)
    dec.load_state_dict(saved["state_dict"])
    mu_d, sd_d = np.asarray(saved["label_mean"], np.float64), np.asarray(saved["label_std"], np.float64)
    mu_c, sd_c = np.asarray(label_mean, np.float64), np.asarray(label_std, np.float64)
    if not (np.allclose(mu_d, mu_c) and np.allclose(sd_d, sd_c)):
        # the decoder's input z_d = (x - mu_d) / sd_d = z_c * sd_c / sd_d + (mu_c - mu_d) / sd_d
        scale, shift = torch.from_numpy(sd_c / sd_d), torch.from_numpy((mu_c - mu_d) / sd_d)
        first = dec[0]
        with torch.no_grad():
            weight = first.weight.double()
            first.bias.copy_((first.bias.double() + weight @ shift).float())
            first.weight.copy_((weight * scale).float())
    pixels = np.asarray(pixels)
    if n_out == npix and pixels.size != npix:  # a decoder of the whole grid: keep the model pixels' rows
        last = nn.Linear(w, pixels.size)
        with torch.no_grad():
            last.weight.copy_(dec[4].weight[torch.from_numpy(pixels)])
            last.bias.copy_(dec[4].bias[torch.from_numpy(pixels)])
        dec[4] = last
    elif n_out != pixels.size:
        raise SystemExit(f"{path}: the decoder gives {n_out} pixels, the checkpoint's grid has {npix} "
                         f"({pixels.size} model pixels)")
    return dec.eval()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--split", default="test")
    ap.add_argument("--stars", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", nargs="+", metavar="LABEL=STEP", default=[],
                    help=f"finite-difference steps (default {DEFAULT_STEPS})")
    ap.add_argument("--noisy", action="store_true", help="also fit the noisy visits")
    ap.add_argument("--decoder", default=None,
                    help="measure this label decoder (posthoc_label_decoder.py --save-decoder) in place of the "
                         "checkpoint's (it may come from another checkpoint of the same labels); TSN's labels and the "
                         "weights stay the checkpoint's")
    args = ap.parse_args(argv)

    import torch

    from pairspec import metrics as M
    from pairspec.evaluate import _select_stars, read_truth
    from pairspec.inference import LabelPredictor
    from pairspec.store import open_store
    from pairspec.surveys import store_visit_fitter

    torch.set_num_threads(args.threads)
    store = open_store(args.store)
    fitter = store_visit_fitter(store)
    if fitter is None:
        raise SystemExit(f"{args.store}: survey {store.survey!r} has no visit-level fitter")
    pred = LabelPredictor.from_checkpoint(args.checkpoint, device="cpu")
    dec = getattr(pred.model, "label_decoder", None)
    if dec is None or not getattr(pred.model, "label_decoder_width", 0):
        raise SystemExit(f"{args.checkpoint}: no label decoder (model.label_decoder): its denoised spectrum is "
                         "not made from the labels, so there is no response to measure")
    if getattr(pred.model, "product_decoder", None) is not None:  # train.decoder_labels: network
        dec = pred.model.product_decoder
    if args.decoder:
        dec = load_decoder(args.decoder, pred.label_names, pred.label_mean, pred.label_std, pred.grid.npix,
                           pred.model_pixels)
    names = list(getattr(fitter, "catalogue_names", fitter.label_names))
    lacking = [n for n in names if n not in pred.label_names]
    if lacking:
        raise SystemExit(f"{args.checkpoint}: predicts no {', '.join(lacking)}, which the fit returns")
    col = [pred.label_names.index(n) for n in names]
    steps = dict(DEFAULT_STEPS)
    for s in args.steps:
        key, _, value = s.partition("=")
        if key not in steps or not value:
            raise SystemExit(f"--steps {s!r}: expected LABEL=STEP with LABEL one of {', '.join(steps)}")
        steps[key] = float(value)
    step = np.array([steps[n] for n in names])

    stars, visits = store.star_table(), store.visit_table()
    rng = np.random.default_rng(args.seed)
    pool = _select_stars(stars, args.split)
    truth_all, _ = read_truth(args.truth, [str(s) for s in np.asarray(stars["id"])], names)
    pool = pool[np.all(np.isfinite(truth_all[pool]), axis=1)]
    chosen = np.sort(rng.choice(pool, size=min(args.stars, pool.size), replace=False))
    theta = truth_all[chosen]
    vstar = np.asarray(visits["star"])
    rows = np.flatnonzero(np.isin(vstar, chosen) & (np.asarray(visits["snr"]) < 60))
    star_of = np.searchsorted(chosen, vstar[rows])
    pix, npix = pred.model_pixels, pred.grid.npix

    def spectra(lab_phys: np.ndarray) -> np.ndarray:
        """The decoder's spectra (N, npix) of physical labels in `names` order (other labels at their mean)."""
        z = np.zeros((lab_phys.shape[0], len(pred.label_names)), dtype=np.float32)
        z[:, col] = (lab_phys - pred.label_mean[col]) / pred.label_std[col]
        with torch.inference_mode():
            out = dec(torch.from_numpy(z)).float().numpy()
        full = np.ones((lab_phys.shape[0], npix), dtype=np.float32)
        full[:, pix] = out + 1.0
        return full

    def weights(snr: np.ndarray) -> np.ndarray:
        sig = np.full((snr.size, npix), np.nan, dtype=np.float32)
        sig[:, pix] = pred._denoise_sigma(snr.astype(np.float32))
        good = np.isfinite(sig) & (sig > 0)
        return np.where(good, 1.0 / np.where(good, sig, 1.0) ** 2, 0.0).astype(np.float32)

    def fit_at(snr_value):
        return lambda spec: fitter.fit(spec, weights(np.full(spec.shape[0], snr_value)))["labels"]

    t0 = time.perf_counter()
    base, R = response(fit_at(30.0), spectra, theta, step)
    t_resp = time.perf_counter() - t0
    flux, ivar, pixmask = store.visit_spectra(rows)
    out = pred.predict(flux, ivar)
    labels = out["labels"][:, col]
    snr = np.asarray(visits["snr"])[rows]
    t0 = time.perf_counter()
    product = fitter.fit(spectra(labels), weights(snr))["labels"]
    predicted = transfer(base, R, theta, labels, star_of)
    noisy = fitter.fit(flux, ivar, pixmask=pixmask)["labels"] if args.noisy else None
    truth_spec = truth_spectra(args.truth, [str(s) for s in np.asarray(stars["id"])[chosen]])
    # the same fit of the noiseless truth spectrum: the emulator's own mismatch with the survey's spectra
    floor_truth = (fitter.fit(truth_spec, weights(np.full(chosen.size, 30.0)))["labels"]
                   if truth_spec is not None else None)
    t_fit = time.perf_counter() - t0

    ref = theta[star_of]
    rows_out = {"tsn": labels, "fit_to_product": product, "predicted_floor_plus_R_delta": predicted,
                "floor_plus_delta": base[star_of] + (labels - ref)}
    if noisy is not None:
        rows_out["fit_to_noisy"] = noisy
    sigma = {m: {n: M.robust_sigma(v[:, k] - ref[:, k]) for k, n in enumerate(names)} for m, v in rows_out.items()}
    sigma["floor"] = {n: M.robust_sigma(base[:, k] - theta[:, k]) for k, n in enumerate(names)}
    if floor_truth is not None:
        sigma["floor_truth_spectrum"] = {n: M.robust_sigma(floor_truth[:, k] - theta[:, k])
                                         for k, n in enumerate(names)}
    q = np.nanpercentile(R, [16, 50, 84], axis=0)
    report = {"checkpoint": str(args.checkpoint), "decoder": args.decoder, "store": str(args.store), "split": args.split,
              "n_stars": int(chosen.size), "n_visits": int(rows.size), "labels": names,
              "steps": {n: float(s) for n, s in zip(names, step)},
              "response_median": q[1].tolist(), "response_16": q[0].tolist(), "response_84": q[2].tolist(),
              "sigma_lt60": sigma, "response_s": round(t_resp, 1), "fit_s": round(t_fit, 1)}
    # the share of each input label's TSN error in the fitted label's variance (the linear part)
    delta = labels - ref
    leak = {}
    for i, n in enumerate(names):
        parts = np.stack([R[star_of, i, j] * delta[:, j] for j in range(len(names))], 1)
        leak[n] = {m: M.robust_sigma(parts[:, j]) for j, m in enumerate(names)}
    report["transfer_by_input"] = leak
    json.dump(report, sys.stdout, indent=1, default=float)
    print()
    return report


if __name__ == "__main__":
    main()
