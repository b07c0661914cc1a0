"""Does a chi-square fit of the survey's emulator do as well on TSN's denoised visit as on the noisy visit?

    python benchmarks/denoised_fit.py CHECKPOINT STORE TRUTH [--split test] [--max-visits 150] [--threads 2]

For visits of the split (S/N < 60, at most --max-visits, a fixed random subset) it fits the survey's
visit-level fitter (`pairspec.surveys.visit_fitter`, APOGEE: the Kurucz-emulator fit of
`pairspec evaluate --emulator-fit`) twice: to the noisy visit with its ivar, and to the denoised visit
of `LabelPredictor.predict(..., denoise=True)` with ivar = 1 / denoised_sigma^2 (the checkpoint's
per-S/N-bin profile). Prints JSON: robust sigma, bias and Theil-Sen slope against the truth per label
and S/N bin for both, and the per-label ratio denoised / noisy (< 1: the denoised spectrum is the
better input) with its 16-84 % interval from resampling the stars. Issue 12 asks for the ratio <= 1.

`--inputs noisy,denoised,posterior` adds a third input: the per-pixel inverse-variance combination of the
denoised spectrum (weight 1 / denoised_sigma^2, sigma floored at --sigma-floor) and the continuum-normalised
visit (its own ivar), i.e. the visit pulled towards the model where the model knows the pixel better than
the visit does, with ivar the sum of the two weights (a lever tried for issue 12, docs/recipes.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import numpy as np


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-visits", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inputs", default="noisy,denoised",
                    help="comma-separated inputs to fit: noisy, denoised, posterior (see above)")
    ap.add_argument("--sigma-floor", type=float, default=1e-3,
                    help="floor of denoised_sigma in the posterior combination (normalised flux units)")
    args = ap.parse_args(argv)

    import torch

    from pairspec import metrics as M
    from pairspec import preprocess
    from pairspec.evaluate import read_truth, sample_visits
    from pairspec.inference import LabelPredictor
    from pairspec.store import open_store
    from pairspec.surveys import store_visit_fitter

    torch.set_num_threads(args.threads)
    store = open_store(args.store)
    fitter = store_visit_fitter(store)
    if fitter is None:
        raise SystemExit(f"{args.store}: survey {store.survey!r} has no visit-level fitter")
    predictor = LabelPredictor.from_checkpoint(args.checkpoint, device="cpu")
    stars, visits = store.star_table(), store.visit_table()
    rows = sample_visits(store, args.split, args.max_visits, args.seed, max_snr=60)
    flux, ivar, pixmask = store.visit_spectra(rows)
    star = np.asarray(visits["star"])[rows]
    snr = np.asarray(visits["snr"])[rows]

    t0 = time.perf_counter()
    out = predictor.predict(flux, ivar, denoise=True)
    if "denoised_sigma" not in out:
        raise SystemExit(f"{args.checkpoint}: no denoised_sigma profile in this checkpoint")
    den, den_sig = out["denoised"], out["denoised_sigma"]
    good = np.isfinite(den) & np.isfinite(den_sig) & (den_sig > 0)
    den_ivar = np.where(good, 1.0 / np.where(good, den_sig, 1.0) ** 2, 0.0).astype(np.float32)
    den = np.where(good, den, 1.0).astype(np.float32)
    t_pred = time.perf_counter() - t0

    names = list(fitter.label_names)
    catalogue = list(getattr(fitter, "catalogue_names", names))
    truth, _ = read_truth(args.truth, [str(s) for s in np.asarray(stars["id"])], catalogue)
    ref = truth[star]
    t0 = time.perf_counter()
    inputs = [k.strip() for k in args.inputs.split(",") if k.strip()]
    unknown = sorted(set(inputs) - {"noisy", "denoised", "posterior"})
    if unknown or not inputs:
        raise SystemExit(f"--inputs: unknown {unknown or inputs}; choose from noisy, denoised, posterior")
    fits = {}
    if "noisy" in inputs:
        fits["noisy"] = fitter.fit(flux, ivar, pixmask=pixmask)["labels"]
    if "denoised" in inputs:
        fits["denoised"] = fitter.fit(den, den_ivar)["labels"]
    if "posterior" in inputs:
        f, iv = preprocess.clean(flux, ivar)
        nf, niv, _ = preprocess.normalize(f, iv, store.grid)
        known = np.isfinite(out["denoised"]) & np.isfinite(den_sig)  # sigma 0 (the profile's floor) counts
        w_model = np.where(known, 1.0 / np.maximum(np.where(known, den_sig, 1.0), args.sigma_floor) ** 2, 0.0)
        post_ivar = w_model + niv
        model = np.where(known, out["denoised"], 0.0)
        post = np.where(post_ivar > 0, (model * w_model + nf * niv) / np.maximum(post_ivar, 1e-30), 1.0)
        fits["posterior"] = fitter.fit(post.astype(np.float32), post_ivar.astype(np.float32))["labels"]
    t_fit = time.perf_counter() - t0

    edges = [0, 20, 40, 60]
    report = {"checkpoint": str(args.checkpoint), "store": str(args.store), "split": args.split,
              "n_visits": int(rows.size), "labels": catalogue, "predict_s": round(t_pred, 1),
              "fit_s": round(t_fit, 1), "per_input": {}}
    for kind, lab in fits.items():
        per = {}
        for k, name in enumerate(catalogue):
            r = lab[:, k] - ref[:, k]
            row = {"<60": {"n": int(np.isfinite(r).sum()), "sigma": M.robust_sigma(r), "bias": M.bias(r)},
                   "slope": M.slope(lab[:, k], ref[:, k])}
            for lo, hi in itertools.pairwise(edges):
                sel = (snr >= lo) & (snr < hi)
                row[f"{lo}-{hi}"] = {"n": int(np.isfinite(r[sel]).sum()), "sigma": M.robust_sigma(r[sel])}
            per[name] = row
        report["per_input"][kind] = per
    report["tsn"] = {}  # the network's own labels on the same visits, where it predicts the fit's label
    for k, name in enumerate(catalogue):
        if name in predictor.label_names:
            r = out["labels"][:, predictor.label_names.index(name)] - ref[:, k]
            report["tsn"][name] = {"<60": {"n": int(np.isfinite(r).sum()), "sigma": M.robust_sigma(r)}}
    per = report["per_input"]
    for kind in ("denoised", "posterior"):
        if kind in fits and "noisy" in fits:
            ratio, interval = {}, {}
            for k, name in enumerate(catalogue):
                a, b = per[kind][name]["<60"]["sigma"], per["noisy"][name]["<60"]["sigma"]
                ratio[name] = a / b if b else float("nan")
                # 16-84 % over the stars: with ~150 visits a ratio moves by 10-20 % with the stars drawn
                r = M.sigma_ratio(fits[kind][:, k] - ref[:, k], fits["noisy"][:, k] - ref[:, k], star)
                interval[name] = [r["lo"], r["hi"]]
            report[f"ratio_{kind}_over_noisy"] = ratio
            report[f"ratio_{kind}_over_noisy_16_84"] = interval
    json.dump(report, sys.stdout, indent=1, default=float)
    print()
    return report


if __name__ == "__main__":
    main()
