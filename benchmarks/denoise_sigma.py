"""How honest is the denoised spectrum's per-pixel sigma? The checkpoint's stored profile and the cross
estimator, beside the error against the noiseless truth, on one split of a synthetic survey.

    python benchmarks/denoise_sigma.py CHECKPOINT STORE TRUTH [--split test] [--stars 400] [--threads 2]

For up to --stars stars of the split with >= 3 visits, per visit-S/N bin (< 20, 20-40, 40-60, >= 60),
medians over the model pixels of:
- `actual_rms`: the denoised spectrum's RMS against the truth's normalised spectrum;
- `stored_sigma` (and the fraction of pixels where it is 0): the profile kept in the checkpoint;
- `cross_sigma` (and its zero fraction): `train_steps.cross_error_profile` on these visits: the error
  against what the star's normalised visits average to, measured without the survey's ivar;
- `visits_vs_truth`: sqrt of the mean of (half A - truth)(half B - truth), how far the pipeline's
  normalised visits themselves sit from the truth's normalisation (noise cancels in the product);
- `old_estimator`: the mean squared residual against the leave-one-out coadd, the coadd's stated noise
  variance, and their difference (what the excess estimator floors at zero when negative).
Prints JSON.

`--write-checkpoint OUT.pt` first measures the cross profile on the val split (up to 600 stars with >= 3
visits, as training does at its end) and writes a copy of the checkpoint with it, then reports on OUT.pt:
how a checkpoint trained before the cross estimator gets an honest profile.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

SNR_EDGES = (0.0, 20.0, 40.0, 60.0, float("inf"))  # the checkpoint profile's visit-S/N bins

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth", help="the simulator's truth file, with its SPECTRA HDU")
    ap.add_argument("--split", default="test")
    ap.add_argument("--stars", type=int, default=400, help="at most this many stars with >= 3 visits")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-checkpoint", default=None, metavar="OUT",
                    help="write a copy of CHECKPOINT with the cross profile of the val split, and report on it")
    args = ap.parse_args(argv)

    import torch

    from pairspec import preprocess
    from pairspec.evaluate import _loo_targets
    from pairspec.evaluate_spectra import read_truth_spectra
    from pairspec.inference import LabelPredictor
    from pairspec.store import open_store
    from pairspec.train_steps import half_coadds

    torch.set_num_threads(args.threads)
    store = open_store(args.store)
    if args.write_checkpoint:
        write_cross_checkpoint(args.checkpoint, store, args.write_checkpoint)
        args.checkpoint = args.write_checkpoint
    predictor = LabelPredictor.from_checkpoint(args.checkpoint)
    stored = (predictor.meta.get("denoise_sigma") or {}).get("sigma")
    if stored is None:
        raise SystemExit(f"{args.checkpoint}: no denoise_sigma profile in this checkpoint")
    sel, star, flux, ivar = three_visit_stars(store, args.split, args.stars)
    truth = read_truth_spectra(args.truth, np.asarray(store.star_table()["id"]), sel)
    if not truth:
        raise SystemExit(f"{args.truth}: no SPECTRA HDU (noiseless spectra) for these stars")
    pix = preprocess.model_pixels(store.grid)
    out, vf, vi, cross = denoised_and_cross(predictor, store.grid, flux, ivar, star)
    den, snr = out["denoised"][:, pix].astype(np.float64), out["snr"]
    a, wa, b, wb = half_coadds(vf, vi, star)
    tf, ti, _, _ = _loo_targets(flux, ivar, star, store.grid)
    loo_f, loo_w = preprocess.target_from_normalized(tf[:, pix], ti[:, pix])
    T = np.stack([truth[s] for s in star])[:, pix].astype(np.float64)
    stored = np.asarray(stored)

    edges = SNR_EDGES
    names = ["<20", "20-40", "40-60", ">=60"]
    report = {"checkpoint": str(args.checkpoint), "store": str(args.store), "split": args.split,
              "n_stars": int(sel.size), "n_visits": int(star.size),
              "stored_estimator": predictor.meta["denoise_sigma"].get("estimator", "excess"), "bins": {}}
    for k, name in enumerate(names):
        m = (snr >= edges[k]) & (snr < edges[k + 1])
        if not m.any():
            continue
        err2 = np.nanmean((den[m] - T[m]) ** 2, axis=0)
        both = (wa[m] > 0) & (wb[m] > 0)
        sys2 = np.nanmean(np.where(both, (a[m] - T[m]) * (b[m] - T[m]), np.nan), axis=0)
        good = loo_w[m] > 0
        r2 = np.nanmean(np.where(good, (den[m] - loo_f[m]) ** 2, np.nan), axis=0)
        stated = np.nanmean(np.where(good, 1.0 / np.where(good, loo_w[m], 1.0), np.nan), axis=0)
        report["bins"][name] = {
            "n_visits": int(m.sum()),
            "actual_rms": float(np.median(np.sqrt(err2))),
            "stored_sigma": float(np.median(stored[k])), "stored_zero_frac": float(np.mean(stored[k] == 0)),
            "cross_sigma": float(np.median(cross[k])), "cross_zero_frac": float(np.mean(cross[k] == 0)),
            "visits_vs_truth": float(np.sqrt(max(np.nanmedian(sys2), 0.0))),
            "old_estimator": {"mean_r2": float(np.nanmedian(r2)), "stated_noise_var": float(np.nanmedian(stated)),
                              "excess": float(np.nanmedian(r2 - stated)),
                              "negative_frac": float(np.mean((r2 - stated) < 0))},
        }
    json.dump(report, sys.stdout, indent=1)
    print()
    return report


def three_visit_stars(store, split: str, max_stars: int):
    """(star indices, each visit's star, flux, ivar) of the first `max_stars` stars of `split` with >= 3
    visits, their visits in order, star by star (what the cross estimator needs)."""
    from pairspec.evaluate import SPLIT_CODES

    stars = store.star_table()
    first, n_vis = np.asarray(stars["first_visit"]), np.asarray(stars["n_visits"])
    sel = np.flatnonzero((np.asarray(stars["split"]) == SPLIT_CODES[split]) & (n_vis >= 3))[:max_stars]
    if sel.size == 0:
        raise SystemExit(f"{store}: no {split}-split star has 3 visits")
    rows = np.concatenate([np.arange(first[s], first[s] + n_vis[s]) for s in sel])
    flux, ivar, _ = store.visit_spectra(rows, pixmask=False)
    return sel, np.repeat(sel, n_vis[sel]), flux, ivar


def denoised_and_cross(predictor, grid, flux, ivar, star):
    """The predictor's outputs with denoise=True, the normalised visits as the network saw them
    (flux, ivar on the model pixels) and the cross profile (bins x model pixels) of these visits."""
    from pairspec import preprocess
    from pairspec.train_steps import cross_error_profile, visits_from_inputs

    out = predictor.predict(flux, ivar, denoise=True)
    vf, vi = visits_from_inputs(preprocess.prepare_inputs(*preprocess.clean(flux, ivar), grid))
    den = out["denoised"][:, preprocess.model_pixels(grid)]
    sigma, _ = cross_error_profile(den, vf, vi, star, out["snr"], SNR_EDGES)
    return out, vf, vi, sigma


def write_cross_checkpoint(checkpoint, store, out_path, max_stars: int = 600) -> None:
    """A copy of `checkpoint` whose denoise_sigma is the cross profile of the store's val split."""
    from pairspec.checkpoint import load_checkpoint, save_checkpoint
    from pairspec.inference import LabelPredictor

    _, star, flux, ivar = three_visit_stars(store, "val", max_stars)
    _, _, _, sigma = denoised_and_cross(LabelPredictor.from_checkpoint(checkpoint), store.grid, flux, ivar, star)
    model, meta = load_checkpoint(checkpoint)
    meta["denoise_sigma"] = {"snr_edges": list(SNR_EDGES), "sigma": sigma.astype(np.float32).tolist(),
                             "estimator": "cross"}
    save_checkpoint(out_path, model.state_dict(), meta)


if __name__ == "__main__":
    main()
