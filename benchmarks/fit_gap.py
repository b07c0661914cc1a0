"""Overfitting or underfitting? A checkpoint's scatter against the truth on the visits of the stars it was
TRAINED on, beside the same number of unseen stars of the test split, per visit-S/N bin.

    python benchmarks/fit_gap.py RUN/best.pt STORE TRUTH [--stars 600] [--out gap.json]

Train stars are the run's own (its config's split, mode and data.max_stars, the same hash ranking as
training), a random subset of `--stars` of them; test stars likewise from the test split. If the train
visits scatter as much as the test visits, the network has not fitted the stars it saw (underfitting:
capacity, optimisation or the loss); if much less, it memorised them (more data or regularisation). Prints
JSON: {split: {label: {bin: sigma}}}, robust sigma against truth, physical units.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from pairspec.data import select_stars
from pairspec.evaluate import read_truth
from pairspec.inference import LabelPredictor
from pairspec.metrics import binned_scatter
from pairspec.store import open_store


def visits_of(store, stars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(visit rows, their star index) of the given stars."""
    table = store.star_table()
    first, nvis = np.asarray(table["first_visit"]), np.asarray(table["n_visits"])
    rows = np.concatenate([np.arange(first[s], first[s] + nvis[s]) for s in stars])
    return rows, np.repeat(stars, nvis[stars])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--stars", type=int, default=600, help="stars per split (random subset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    predictor = LabelPredictor.from_checkpoint(args.checkpoint)
    data = predictor.meta["config"]["data"]
    store = open_store(args.store)
    ids = np.asarray(store.star_table()["id"])
    rng = np.random.default_rng(args.seed)
    out = {}
    for split, cap in (("train", data.get("max_stars")), ("test", None)):
        stars = select_stars(store, split, data.get("mode", "loo"), data.get("min_visits", 2), cap)
        stars = np.sort(rng.choice(stars, size=min(args.stars, stars.size), replace=False))
        rows, star = visits_of(store, stars)
        flux, ivar, _ = store.visit_spectra(rows, pixmask=False)
        pred = predictor.predict(flux, ivar)
        truth, _ = read_truth(args.truth, ids[star], predictor.label_names)
        snr = np.asarray(store.visit_table()["snr"], np.float64)[rows]
        out[split] = {"n_stars": int(stars.size), "n_visits": int(rows.size)}
        for j, name in enumerate(predictor.label_names):
            sc = binned_scatter(pred["labels"][:, j], truth[:, j], snr)
            out[split][name] = {b: round(v["sigma"], 5) for b, v in sc.items()}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
