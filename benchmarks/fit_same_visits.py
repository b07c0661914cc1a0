"""TSN against the visit-level emulator fit on the SAME visits: every test visit of an S/N range, not a subset.

    python benchmarks/fit_same_visits.py CHECKPOINT STORE TRUTH --work DIR [--snr-min 0] [--snr-max 60]
                                         [--threads 1] [--report-only]

`pairspec evaluate --emulator-fit` fits a random subset of the split's stars (`--max-fit` visits, 600 on the
learning curve), so an S/N bin of the fit holds ~100 visits from a few dozen stars, and its robust sigma
moves by 20 % or more with the stars drawn. This script fits EVERY visit of the split's stars in the S/N
range (APOGEE: ~3 visits/s per thread). The fit depends on the visits alone, not on the checkpoint, so it
is kept in DIR/visits.npz (appended per chunk: an interrupted run resumes, and runs with other S/N ranges
add their visits) and serves every checkpoint trained on the same store and split (the learning curve's
sizes and seeds share one test split). Then it predicts the fitted visits with CHECKPOINT (`predict`'s
labels: the mix and the network's own) and prints JSON: per label and S/N bin (< 20, 20-40, 40-60, >= 60 and
< 60) the robust sigma and median bias against truth of TSN, the network alone and the fit, and TSN / fit with
its 16-84 % interval from resampling the stars (`pairspec.metrics.sigma_ratio`); the slopes at S/N >= 20; the
[Mg/Fe]-[Fe/H] plane of the S/N < 40 visits (disc separation and detrended slope, as `pairspec evaluate`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

KEYS = ("rows", "emulator_fit")


def _load(path: Path) -> dict:
    if not path.exists():
        return {}
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def _save(path: Path, parts: dict, names) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, names=np.asarray(names), **parts)
    tmp.replace(path)  # never a half-written file: a crash leaves the last complete chunk


def _fit_rows(store, rows, names, work: Path, chunk: int, progress: bool) -> None:
    from pairspec.evaluate import _reorder
    from pairspec.surveys import store_visit_fitter

    fitter = store_visit_fitter(store)
    if fitter is None:
        raise SystemExit(f"{store.path}: survey {store.survey!r} has no visit-level fit baseline")
    fit_names = list(getattr(fitter, "catalogue_names", fitter.label_names))
    path = work / "visits.npz"
    have = _load(path)
    todo = np.asarray(rows, dtype=np.int64)
    if "rows" in have:
        todo = todo[~np.isin(todo, have["rows"])]
    parts = {k: [have[k]] if k in have else [] for k in KEYS}
    t0 = time.perf_counter()
    for a in range(0, todo.size, chunk):
        r = todo[a:a + chunk]
        flux, ivar, pixmask = store.visit_spectra(r, pixmask=True)
        fit = fitter.fit(flux, ivar, pixmask=pixmask)  # the survey's bits: a strict fit mask, as evaluate
        parts["rows"].append(r)
        parts["emulator_fit"].append(_reorder(fit["labels"], fit_names, names))
        _save(path, {k: np.concatenate(v) for k, v in parts.items()}, names)
        if progress:
            print(f"{a + r.size}/{todo.size} visits fitted, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)


def _predict(store, rows, predictor, batch: int = 512) -> dict:
    """predict's labels of a LabelPredictor for visit rows: the mix ("tsn") and the network's own."""
    extra = {"return_refit": True} if predictor.has_refit else {}
    out = {"tsn": [], "tsn_network": []}
    for a in range(0, rows.size, batch):
        flux, ivar, _ = store.visit_spectra(rows[a:a + batch], pixmask=False)
        o = predictor.predict(flux, ivar, **extra)
        out["tsn"].append(o["labels"])
        out["tsn_network"].append(o.get("labels_network", o["labels"]))
    return {k: np.concatenate(v) for k, v in out.items()}, list(predictor.schema.names)


def summarise(store, truth_path, work: Path, predictor, checkpoint) -> dict:
    from pairspec import metrics as M
    from pairspec.evaluate import read_truth

    d = _load(work / "visits.npz")
    if not d:
        raise SystemExit(f"{work / 'visits.npz'}: nothing fitted yet")
    pred, names = _predict(store, d["rows"], predictor)
    fit_names = [str(n) for n in d["names"]]
    if fit_names != names:
        raise SystemExit(f"{work / 'visits.npz'}: fitted for labels {fit_names}, {checkpoint} predicts {names}")
    d.update(pred)
    stars, visits = store.star_table(), store.visit_table()
    truth, _ = read_truth(truth_path, [str(s) for s in np.asarray(stars["id"])], names)
    rows = d["rows"]
    star = np.asarray(visits["star"])[rows]
    snr = np.asarray(visits["snr"])[rows].astype(np.float64)
    ref = truth[star]
    bins = list(zip(M.snr_bin_labels(M.DEFAULT_SNR_EDGES), M.DEFAULT_SNR_EDGES[:-1], M.DEFAULT_SNR_EDGES[1:]))
    bins.append(("<60", 0.0, 60.0))
    out = {"n_visits": int(rows.size), "n_stars": int(np.unique(star).size), "labels": names, "bins": {}}
    for name, lo, hi in bins:
        sel = (snr >= lo) & (snr < hi)
        if not sel.any():
            continue
        cell = {"n": int(sel.sum()), "n_stars": int(np.unique(star[sel]).size)}
        for k, n in enumerate(names):
            res = {m: d[m][sel, k] - ref[sel, k] for m in ("tsn", "tsn_network", "emulator_fit")}
            cell[n] = {f"sigma_{m}": M.robust_sigma(r) for m, r in res.items()}
            cell[n].update({f"bias_{m}": M.bias(r) for m, r in res.items()})
            r = M.sigma_ratio(res["tsn"], res["emulator_fit"], star[sel])
            cell[n].update({"tsn_over_fit": r["ratio"], "lo": r["lo"], "hi": r["hi"]})
        out["bins"][name] = cell
    if {"fe_h", "mg_fe"} <= set(names):  # the [Mg/Fe]-[Fe/H] plane of the S/N < 40 visits, as evaluate's
        i, j, lo = names.index("fe_h"), names.index("mg_fe"), snr < 40
        out["chemical_plane_snr40"] = {
            m: {k: v for k, v in M.chemical_plane(d[m][lo, i], d[m][lo, j], ref[lo, i], ref[lo, j]).items()
                if k in ("n", "separation", "separation_truth", "detrended_slope")}
            for m in ("tsn", "tsn_network", "emulator_fit")}
        over_fit = M.separation_ratios(  # over the fit's, with the interval from resampling the stars
            {m: (d[m][lo, i], d[m][lo, j]) for m in ("tsn", "tsn_network")},
            d["emulator_fit"][lo, i], d["emulator_fit"][lo, j], star[lo])
        for m, r in over_fit.items():
            out["chemical_plane_snr40"][m]["separation_over_fit"] = r
    hi = snr >= 20  # shrinkage to the mean shows as a slope below 1
    out["slope_snr20"] = {m: {n: M.slope(d[m][hi, k], ref[hi, k]) for k, n in enumerate(names)}
                          for m in ("tsn", "tsn_network", "emulator_fit")}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--work", required=True, help="folder for visits.npz (resumable; runs with other S/N ranges add to it)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--snr-min", type=float, default=0.0)
    ap.add_argument("--snr-max", type=float, default=60.0)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true",
                    help="no fitting: compare CHECKPOINT with the visits DIR/visits.npz holds")
    args = ap.parse_args(argv)

    import torch

    from pairspec.evaluate import _select_stars
    from pairspec.inference import LabelPredictor
    from pairspec.store import open_store

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = open_store(args.store)
    predictor = LabelPredictor.from_checkpoint(args.checkpoint, device="cpu")
    t0 = time.perf_counter()
    if not args.report_only:
        stars, visits = store.star_table(), store.visit_table()
        sel = _select_stars(stars, args.split)
        first, nvis = np.asarray(stars["first_visit"]), np.asarray(stars["n_visits"])
        rows = np.concatenate([np.arange(first[s], first[s] + nvis[s]) for s in sel])
        snr = np.asarray(visits["snr"])[rows]
        rows = rows[(snr >= args.snr_min) & (snr < args.snr_max)]
        _fit_rows(store, rows, list(predictor.schema.names), work, args.chunk, progress=True)
    report = {"checkpoint": str(args.checkpoint), "store": str(args.store), "split": args.split,
              **summarise(store, args.truth, work, predictor, args.checkpoint), "wall_s": round(time.perf_counter() - t0, 1)}
    json.dump(report, sys.stdout, indent=1, default=float)
    print()
    return report


if __name__ == "__main__":
    main()
