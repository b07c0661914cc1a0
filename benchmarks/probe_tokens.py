"""Linear probes of a trained TSN encoder: which tokens hold each label's information.

    python benchmarks/probe_tokens.py RUN/best.pt STORE.zarr TRUTH.fits [--out probe.json]

For visits of the train split (at most --n-train), the encoder's final tokens are extracted; a ridge
regression (closed form, its strength chosen on val visits) from (a) the label tokens, (b) every patch
token flattened and (c) the network's input pixels to the TRUE labels is scored on test visits with
S/N < 60 (robust sigma), beside the network's own label head. A probe far better than the head means the
encoder holds the information and the head does not read it (docs/recipes.md, "Precision levers"). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _features(pred, store, stars, visits, truth, split, cap, rng):
    import torch

    from pairspec import preprocess
    from pairspec.evaluate import _select_stars

    sel = _select_stars(stars, split)
    first, nvis = np.asarray(stars["first_visit"]), np.asarray(stars["n_visits"])
    sel = sel[nvis[sel] >= 2]
    rows = np.concatenate([np.arange(first[s], first[s] + nvis[s]) for s in sel])
    if len(rows) > cap:
        rows = np.sort(rng.choice(rows, cap, replace=False))
    flux, ivar, _ = store.visit_spectra(rows, pixmask=False)
    net = pred.network.eval()
    out = {"label_tokens": [], "patch_tokens": [], "pixels": [], "head": []}
    with torch.inference_mode():
        for s in range(0, len(rows), 128):
            f, iv = preprocess.clean(flux[s:s + 128], ivar[s:s + 128])
            x = torch.from_numpy(np.ascontiguousarray(preprocess.prepare_inputs(f, iv, pred.grid), dtype=np.float32))
            tok = net.forward_encoder(x)
            mean, _ = net.forward_labels(tok, x[:, 0])
            k = net.n_label_tokens
            out["label_tokens"].append(tok[:, :k].flatten(1).numpy())
            out["patch_tokens"].append(tok[:, k:].flatten(1).numpy())
            out["pixels"].append(x.flatten(1).numpy())
            out["head"].append(mean.numpy() * pred.label_std + pred.label_mean)
    out = {k: np.concatenate(v).astype(np.float64) for k, v in out.items()}
    st = np.asarray(visits["star"])[rows]
    out["y"], out["snr"] = truth[st], np.asarray(visits["snr"])[rows]
    return out


def _ridge_probe(a, y, others, alphas):
    """Dual-form ridge from standardised features a (n, p) to y (n, K): predictions on `others` per alpha."""
    mu, sd = a.mean(0), a.std(0) + 1e-6
    a = (a - mu) / sd
    ym = y.mean(0)
    w, v = np.linalg.eigh(a @ a.T)
    vy = v.T @ (y - ym)
    return {al: [((b - mu) / sd) @ (a.T @ (v @ (vy / (w + al)[:, None]))) + ym for b in others] for al in alphas}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("truth")
    ap.add_argument("--n-train", type=int, default=3000, help="train visits the probes are fitted on")
    ap.add_argument("--n-val", type=int, default=800)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    from pairspec.evaluate import read_truth
    from pairspec.inference import LabelPredictor
    from pairspec.metrics import robust_std
    from pairspec.store import open_store

    store = open_store(args.store)
    pred = LabelPredictor.from_checkpoint(args.checkpoint)
    if getattr(pred.network, "forward_encoder", None) is None:
        raise SystemExit(f"{args.checkpoint}: not a TSN checkpoint (no encoder to probe)")
    names = list(pred.label_names)
    stars, visits = store.star_table(), store.visit_table()
    truth, _ = read_truth(args.truth, stars["id"], names)
    rng = np.random.default_rng(0)
    tr, va, te = (_features(pred, store, stars, visits, truth, s, n, rng)
                  for s, n in (("train", args.n_train), ("val", args.n_val), ("test", args.n_test)))
    low = te["snr"] < 60
    result = {"checkpoint": str(Path(args.checkpoint)), "labels": names, "n_train": len(tr["y"]),
              "n_test_lt60": int(low.sum()), "sigma_lt60": {}}
    result["sigma_lt60"]["head"] = {n: robust_std(te["head"][low, k] - te["y"][low, k]) for k, n in enumerate(names)}
    for feat in ("label_tokens", "patch_tokens", "pixels"):
        alphas = np.logspace(-2, 5, 15) * tr[feat].shape[1] / 100
        fits = _ridge_probe(tr[feat], tr["y"], [va[feat], te[feat]], alphas)
        row = {}
        for k, n in enumerate(names):
            ok = np.isfinite(va["y"][:, k])
            best = min(alphas, key=lambda a: robust_std(fits[a][0][ok, k] - va["y"][ok, k]))
            row[n] = robust_std(fits[best][1][low, k] - te["y"][low, k])
        result["sigma_lt60"][f"probe_{feat}"] = row
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
