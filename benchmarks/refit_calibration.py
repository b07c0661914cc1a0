"""The refit mix's sigma calibration (pairspec.refit, pairspec.calibration), measured on finished checkpoints:
which raw sigma gives the calibration its shape, and how far a refit may land from the network's label.

    python benchmarks/refit_calibration.py CHECKPOINT STORE TRUTH [--val-visits 3000] [--test-visits 100000]

For val and test visits (fixed random subsets) it computes the network's labels and raw sigma and the refit
through the label decoder (network prior) with its formal sigma. Then, as training does: the network's own
calibration on val; the refit guarded at a pull (|refit - network| / the network's calibrated sigma) of 5,
4 or 3, or not at all; the mix chosen on val against the survey's labels (bagged, refit.choose_mix); and the
mix's calibration fitted on the out-of-bag mix with one of these raw sigma shapes:
  net     the network's sigma (what training uses)
  formal  the refit's formal sigma
  quad    sqrt((a sigma_net)^2 + ((1 - a) sigma_formal)^2), a the bin's weight of the network
  lin     a sigma_net + (1 - a) sigma_formal
Printed JSON, per variant and label: robust sigma per S/N bin against truth on the test visits, z-std and
68 % coverage against truth (total sigma) and from repeat pairs (visit part), and how many refits the guard
dropped.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _arrays(predictor, store, split, n, survey, lerr, truth, seed=0):
    import torch

    from pairspec import preprocess
    from pairspec.evaluate import sample_visits
    from pairspec.refit import refit_from_inputs

    visits = store.visit_table()
    rows = sample_visits(store, split, n, seed)
    flux, ivar, _ = store.visit_spectra(rows)
    N, K = rows.size, len(predictor.label_names)
    out = {k: np.full((N, K), np.nan) for k in ("net", "sig", "refit", "formal")}
    out["snr"] = np.full(N, np.nan)
    for a in range(0, N, 256):
        b = slice(a, a + 256)
        f, iv = preprocess.clean(flux[b], ivar[b])
        out["snr"][b], _ = preprocess.visit_snr(f, iv, predictor.model_pixels)
        x = torch.from_numpy(np.ascontiguousarray(preprocess.prepare_inputs(f, iv, predictor.grid), dtype=np.float32))
        with torch.no_grad():
            o = predictor.network(x)
        z, formal = refit_from_inputs(predictor.model.label_decoder, x, o["mean"].float(), o["log_var"].float())
        out["net"][b] = o["mean"].double().numpy() * predictor.label_std + predictor.label_mean
        out["sig"][b] = np.exp(0.5 * o["log_var"].double().numpy()) * predictor.label_std
        out["refit"][b] = z.numpy() * predictor.label_std + predictor.label_mean
        out["formal"][b] = formal.numpy() * predictor.label_std
    star = np.asarray(visits["star"])[rows]
    out.update(star=star, survey=survey[star], lerr=lerr[star], truth=truth[star])
    return out


def _shapes(S, a):
    sn, sf = S["sig"], S["formal"]
    return {"net": sn, "formal": sf, "quad": np.sqrt((a * sn) ** 2 + ((1 - a) * sf) ** 2), "lin": a * sn + (1 - a) * sf}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--val-visits", type=int, default=3000)
    ap.add_argument("--test-visits", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from pairspec import metrics as M
    from pairspec.calibration import fit_calibration, split_sigma
    from pairspec.evaluate import read_truth
    from pairspec.inference import LabelPredictor
    from pairspec.refit import apply_mix, choose_mix, guard
    from pairspec.store import open_store

    torch.set_num_threads(args.threads)
    store = open_store(args.store)
    predictor = LabelPredictor.from_checkpoint(args.checkpoint, refit=False)
    names = predictor.label_names
    order = [list(store.schema.names).index(n) for n in names]
    survey, lerr = store.labels()[:, order], np.asarray(store.label_err())[:, order]
    truth, _ = read_truth(args.truth, [str(s) for s in np.asarray(store.star_table()["id"])], names)
    V = _arrays(predictor, store, "val", args.val_visits, survey, lerr, truth)
    T = _arrays(predictor, store, "test", args.test_visits, survey, lerr, truth)

    ncal = fit_calibration(V["net"], V["sig"], V["survey"], snr=V["snr"], star=V["star"], label_names=names,
                           label_err=V["lerr"])
    for S in (V, T):
        S["net_sigma"] = split_sigma(S["sig"], S["snr"], ncal, S["net"])[0]
    pa, pb = M.repeat_pairs(T["star"])
    report = {"checkpoint": args.checkpoint, "store": args.store, "labels": names, "n_val": int(V["snr"].size),
              "n_test": int(T["snr"].size), "n_test_pairs": int(pa.size), "variants": {}}

    def score(lab, tot, vis):
        per = {}
        for k, n in enumerate(names):
            zt = M.zscore_stats(lab[:, k], tot[:, k], T["truth"][:, k])
            zp = M.pair_zscore_stats(lab[pa, k], vis[pa, k], lab[pb, k], vis[pb, k])
            per[n] = {"sigma": {b: v["sigma"] for b, v in M.binned_scatter(lab[:, k], T["truth"][:, k], T["snr"]).items()},
                      "truth": {"z_std": zt["z_std"], "cov68": zt["cov68"]},
                      "repeat_pairs": {"z_std": zp["z_std"], "cov68": zp["cov68"]}}
        return per

    tot, vis, _ = split_sigma(T["sig"], T["snr"], ncal, T["net"])
    report["variants"]["network"] = score(T["net"], tot, vis)
    for pull in (None, 5.0, 4.0, 3.0):
        vr, tr = (guard(S["net"], S["refit"], S["net_sigma"], pull) for S in (V, T))
        weights, oob = choose_mix(V["net"], vr, V["survey"], V["snr"], star=V["star"], return_oob=True)
        mix = apply_mix(T["net"], tr, T["snr"], weights)
        a_val = np.asarray(weights).T[M.snr_bin_index(V["snr"])]
        a_test = np.asarray(weights).T[M.snr_bin_index(T["snr"])]
        vs, ts = _shapes(V, a_val), _shapes(T, a_test)
        for shape in (vs if pull in (None, 5.0) else ["net"]):
            cal = fit_calibration(oob, vs[shape], V["survey"], snr=V["snr"], star=V["star"], label_names=names,
                                  label_err=V["lerr"])
            tot, vis, _ = split_sigma(ts[shape], T["snr"], cal, mix)
            report["variants"][f"mix pull<{pull} shape={shape}"] = {
                "dropped_test": np.isnan(tr).sum(0).astype(int).tolist(), "weights": weights, **score(mix, tot, vis)}
        print(f"pull {pull} done", file=sys.stderr, flush=True)
    json.dump(report, sys.stdout, indent=1, default=float)
    print()
    return report


if __name__ == "__main__":
    main()
