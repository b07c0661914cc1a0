"""The sigma calibration (pairspec.calibration) refitted on a trained checkpoint's validation visits and
scored on its test visits: z-scores against truth, against the survey labels (with their label_err) and
from repeat pairs, per label. Prints JSON; --out writes it too.

    pairspec simulate apogee sv --stars 1500 --seed 20260426 --store-only
    pairspec train RECIPE --set data.store=sv/apogee.zarr          # e.g. the paper table's CPU choices
    python benchmarks/calibration_split.py RUN/best.pt sv/apogee.zarr sv/truth.fits --out results.json

The network's raw sigma is taken (the checkpoint's own calibration is ignored), so the same trained
model can be scored under the calibration code of any checkout.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from pairspec.calibration import fit_calibration, split_sigma
from pairspec.evaluate import _reorder, _select_stars, read_truth
from pairspec.inference import LabelPredictor
from pairspec.metrics import pair_zscore_stats, repeat_pairs, zscore_stats
from pairspec.store import open_store


def split_predictions(predictor, store, split: str, truth, survey, label_err) -> dict:
    """Raw predictions of every visit of the split's stars with >= 2 visits (the twins the calibration sees)."""
    stars, visits = store.star_table(), store.visit_table()
    first, nvis = np.asarray(stars["first_visit"]), np.asarray(stars["n_visits"])
    sel = _select_stars(stars, split)
    sel = sel[nvis[sel] >= 2]
    rows = np.concatenate([np.arange(first[s], first[s] + nvis[s]) for s in sel])
    flux, ivar, _ = store.visit_spectra(rows, pixmask=False)
    out = predictor.predict(flux, ivar)
    star = np.asarray(visits["star"])[rows]
    return {"pred": out["labels"], "sigma": out["sigma"], "snr": np.asarray(visits["snr"], np.float64)[rows],
            "star": star, "survey": survey[star], "label_err": label_err[star], "truth": truth[star]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    store = open_store(args.store)
    predictor = LabelPredictor.from_checkpoint(args.checkpoint)
    predictor.calibration = None  # the network's own sigma
    names = list(predictor.schema.names)
    truth, _ = read_truth(args.truth, store.star_table()["id"], names)
    survey = _reorder(store.labels(), store.schema.names, names)
    label_err = _reorder(store.label_err(), store.schema.names, names)
    val, test = (split_predictions(predictor, store, s, truth, survey, label_err) for s in ("val", "test"))
    cal = fit_calibration(val["pred"], val["sigma"], val["survey"], snr=val["snr"], star=val["star"],
                          label_names=names, label_err=val["label_err"])
    total, visit, _ = split_sigma(test["sigma"], test["snr"], cal)
    a, b = repeat_pairs(test["star"])
    p, lerr = test["pred"], np.nan_to_num(test["label_err"], nan=0.0)
    res = {"checkpoint": args.checkpoint, "store": args.store, "n_val": int(len(val["pred"])),
           "n_test": int(len(p)), "n_test_pairs": int(a.size), "calibration": cal, "labels": {}}
    for k, n in enumerate(names):
        res["labels"][n] = {
            "truth": zscore_stats(p[:, k], total[:, k], test["truth"][:, k]),
            "survey": zscore_stats(p[:, k], np.sqrt(total[:, k] ** 2 + lerr[:, k] ** 2), test["survey"][:, k]),
            "repeat_pairs": pair_zscore_stats(p[a, k], visit[a, k], p[b, k], visit[b, k])}
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return res


if __name__ == "__main__":
    main()
