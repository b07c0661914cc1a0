"""Do labels refitted through the label decoder beat the network's own? (pairspec.refit)

    python benchmarks/decoder_refit.py CHECKPOINT STORE TRUTH [--max-visits 2000] [--threads 2] [--decoder DEC.pt]

For a fixed random subset of the test split's visits (all S/N) it predicts the labels, then refits them
through the checkpoint's label decoder twice: with the network's prediction as the prior ("network") and
without a prior ("flat"). It also chooses, per label and S/N bin, the mix a * network + (1 - a) * refit
with the rule training applies (pairspec.refit.choose_mix: the smallest robust sigma against the SURVEY's
labels on visits of the val split, bagged over the val stars; what a user without truth can do), and
applies it to the test visits ("mixed", what `pairspec predict` returns for a checkpoint trained with
the refit). Prints JSON: per
estimator, label and S/N bin (< 20, 20-40, 40-60, >= 60, < 60) the robust sigma and bias against truth,
the Theil-Sen slope at S/N >= 20, the [Mg/Fe]-[Fe/H] plane's separation and detrended slope (S/N < 40,
as `pairspec evaluate` reports them), and the chosen mixing weights.
--decoder refits through another label decoder (e.g. one that learned from the network's own star-level
labels: posthoc_label_decoder.py --train-labels network --save-decoder), keeping the checkpoint's network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _rows(store, split, n, seed):
    from pairspec.evaluate import sample_visits

    return sample_visits(store, split, n, seed)


def _estimates(predictor, store, rows, batch_size=256):
    """The network's labels and both refits for visits `rows` of the store, plus their S/N and star index."""
    import torch

    from pairspec import preprocess
    from pairspec.refit import guard, refit_from_inputs

    flux, ivar, _ = store.visit_spectra(rows)
    out = predictor.predict(flux, ivar, refit=False, return_refit=True)
    flat = np.full_like(out["labels"], np.nan)
    for a in range(0, rows.size, batch_size):  # the flat-prior refit, from the same inputs and start
        f, iv = preprocess.clean(flux[a:a + batch_size], ivar[a:a + batch_size])
        x = torch.from_numpy(preprocess.prepare_inputs(f, iv, predictor.grid))
        with torch.no_grad():
            o = predictor.model(x)
        z, _ = refit_from_inputs(predictor.model.label_decoder, x, o["mean"], o["log_var"], prior=False)
        flat[a:a + batch_size] = z.numpy() * predictor.label_std + predictor.label_mean
    est = {"tsn": out["labels_network"], "refit_network": out["labels_refit"], "refit_flat": flat}
    # the refit the mix uses: without the failed fits (refit.guard, as training and predict drop them)
    est["_guarded"] = guard(out["labels_network"], out["labels_refit"], out["sigma_network"])
    return est, out["snr"], np.asarray(store.visit_table()["star"])[rows]


def _scatter(lab, ref, snr):
    """metrics.binned_scatter per S/N bin, and over S/N < 60."""
    from pairspec import metrics as M

    return M.binned_scatter(lab, ref, snr) | M.binned_scatter(lab, ref, snr, edges=(0.0, 60.0))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--max-visits", type=int, default=2000, help="test visits (a fixed random subset)")
    ap.add_argument("--val-visits", type=int, default=2000, help="val visits that choose the mixing weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-npz", default=None, help="also save the val and test estimates here (re-analysis)")
    ap.add_argument("--decoder", default=None,
                    help="refit through this label decoder (posthoc_label_decoder.py --save-decoder) in place of "
                         "the checkpoint's; the network and its calibration stay the checkpoint's")
    args = ap.parse_args(argv)

    import torch

    from pairspec import metrics as M
    from pairspec.evaluate import read_truth
    from pairspec.inference import LabelPredictor
    from pairspec.refit import apply_mix, choose_mix
    from pairspec.store import open_store

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    store = open_store(args.store)
    predictor = LabelPredictor.from_checkpoint(args.checkpoint, device="cpu")
    if args.decoder:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from decoder_response import load_decoder

        if not getattr(predictor.model, "label_decoder_width", 0):
            raise SystemExit(f"{args.checkpoint}: no label decoder (model.label_decoder) to replace")
        predictor.model.label_decoder = load_decoder(args.decoder, predictor.label_names, predictor.label_mean,
                                                     predictor.label_std, predictor.grid.npix,
                                                     predictor.model_pixels)
    names = predictor.label_names
    stars = store.star_table()
    # the survey's own labels, in the network's label order: the only reference a user has for the mix
    survey = store.labels()[:, [list(store.schema.names).index(n) for n in names]]

    val_rows = _rows(store, "val", args.val_visits, args.seed)
    val_est, val_snr, val_star = _estimates(predictor, store, val_rows)
    # the rule training applies (pairspec.refit.choose_mix, bagged over the val stars)
    weights = choose_mix(val_est["tsn"], val_est.pop("_guarded"), survey[val_star], val_snr, star=val_star)
    mix = {name: dict(zip(("<20", "20-40", "40-60", ">=60"), weights[k])) for k, name in enumerate(names)}

    val_sigma = {kind: {name: {b: v["sigma"] for b, v in M.binned_scatter(est[:, k], survey[val_star, k], val_snr).items()}
                        for k, name in enumerate(names)} for kind, est in val_est.items()}

    rows = _rows(store, "test", args.max_visits, args.seed)
    est, snr, star = _estimates(predictor, store, rows)
    mixed = apply_mix(est["tsn"], est.pop("_guarded"), snr, weights)
    est["mixed"] = mixed
    truth, _ = read_truth(args.truth, [str(s) for s in np.asarray(stars["id"])], names)
    ref = truth[star]

    if args.save_npz:
        np.savez(args.save_npz, names=names, val_snr=val_snr, val_star=val_star, val_ref=survey[val_star],
                 snr=snr, star=star, ref=ref, **{f"val_{k}": v for k, v in val_est.items()},
                 **{f"test_{k}": v for k, v in est.items()})
    report = {"checkpoint": str(args.checkpoint), "decoder": args.decoder, "store": str(args.store),
              "n_visits": int(rows.size),
              "n_val_visits": int(val_rows.size), "labels": names, "mix_weight_of_tsn": mix,
              "val_sigma_against_survey": val_sigma, "estimators": {}}
    for kind, lab in est.items():
        per = {}
        for k, name in enumerate(names):
            row = _scatter(lab[:, k], ref[:, k], snr)
            hi = snr >= 20
            row["slope_snr20"] = M.slope(lab[hi, k], ref[hi, k])
            per[name] = row
        if {"fe_h", "mg_fe"} <= set(names):  # the [Mg/Fe]-[Fe/H] plane of the S/N < 40 visits (pairspec evaluate's)
            i, j, lo40 = names.index("fe_h"), names.index("mg_fe"), snr < 40
            plane = M.chemical_plane(lab[lo40, i], lab[lo40, j], ref[lo40, i], ref[lo40, j])
            per["chemical_plane"] = {k: plane[k] for k in ("n", "separation", "separation_truth", "detrended_slope")}
        report["estimators"][kind] = per
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    json.dump(report, sys.stdout, indent=1, default=float)
    print()
    return report


if __name__ == "__main__":
    main()
