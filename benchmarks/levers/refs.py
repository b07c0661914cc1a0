"""Reference baselines on the fixed test split: ridge (per training size) and the emulator fit (old/careful)."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H

torch.set_num_threads(1)
what = sys.argv[1]
te = H.cached_twins("test", mode="coadd", min_visits=1)
truth = H.truth_labels()
t_true = truth[te["star_index"]]
out = {}
if what == "ridge":
    from pairspec.models.ridge import fit_ridge
    tr_all = H.cached_twins("train")
    ids = H.star_ids()
    va = H.cached_twins("val")
    keep = H.star_subset(va["star_index"], 400, ids)
    va = {k: v[keep] for k, v in va.items()}
    for n in [int(a) for a in sys.argv[2:]]:
        keep = H.star_subset(tr_all["star_index"], n, ids)
        x = tr_all["x"][keep, 0].astype(np.float32)
        lab = tr_all["labels"][keep].astype(np.float64)
        mu, sd = np.nanmean(lab, 0), np.nanstd(lab, 0)
        t0 = time.time()
        W, b, alphas = fit_ridge(x, (lab - mu) / sd, va["x"][:, 0].astype(np.float32), (va["labels"] - mu) / sd)
        pred = (te["x"][:, 0].astype(np.float32) @ W.T + b) * sd + mu
        s = H.score(pred, t_true, te["snr"])
        out[f"ridge_{n}"] = {"score": s, "alphas": alphas, "t": time.time() - t0}
        print(f"ridge n={n} alphas={alphas} {time.time() - t0:.0f}s\n" + H.fmt(s), flush=True)
elif what == "fit":
    from pairspec.baselines import EmulatorFit
    from pairspec.store import open_store
    store = open_store(H.STORE)
    rng = np.random.default_rng(0)
    n = int(sys.argv[2])
    sel = np.sort(rng.choice(len(te["x"]), size=n, replace=False))
    rows = te["visit_index"][sel]
    flux, ivar, pixmask = store.visit_spectra(rows)
    for name, kw, pm in (("old", dict(passes=0, mask_bits=()), None), ("careful", {}, pixmask)):
        f = EmulatorFit(**kw)
        t0 = time.time()
        r = f.fit(flux, ivar, pixmask=pm)
        lab = r["labels"]
        s = H.score(lab, t_true[sel], te["snr"][sel], r["sigma"])
        out[f"fit_{name}"] = {"score": s, "t": time.time() - t0, "n": n}
        print(f"fit {name} {time.time() - t0:.0f}s\n" + H.fmt(s), flush=True)
H.RESULTS.mkdir(parents=True, exist_ok=True)
json.dump(out, open(f"{H.RESULTS}/refs_{what}.json", "w"))
