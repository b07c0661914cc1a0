"""Score a saved state dict: python evalonly.py NAME key=value ... (same keys as the training run)."""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H
import trainer as T

name = sys.argv[1]; cfg = T.parse(sys.argv[2:])
torch.set_num_threads(cfg["threads"])
tr = H.cached_twins("train"); ids = H.star_ids()
keep = H.star_subset(tr["star_index"], cfg["n_train"], ids); tr = {k: v[keep] for k, v in tr.items()}
va = H.cached_twins("val"); keep = H.star_subset(va["star_index"], 400, ids); va = {k: v[keep] for k, v in va.items()}
te = H.cached_twins("test", mode="coadd", min_visits=1); truth = H.truth_labels()
lab = tr["labels"].astype(np.float64); mu, sd = np.nanmean(lab, 0), np.nanstd(lab, 0)
model = T.Net(tr["x"].shape[-1], 4, stem=cfg["stem"], head=cfg["head"], dec_depth=cfg["dec_depth"], embed=cfg["embed"],
              patch_size=cfg["patch"], embed_dim=cfg["preset_dim"], depth=cfg["depth"], num_heads=cfg["heads"])
if cfg["linskip"]:
    model.lin = nn.Linear(tr["x"].shape[-1], 4)
if cfg["recon_skip"]:
    model.skip_w = nn.Parameter(torch.zeros(model.n_patches, 2 * model.patch_size, model.patch_size))
model.load_state_dict(torch.load(f"{H.RESULTS}/{name}.pt"))
pred, sig = T.predict(model, te["x"], mu, sd); pv, sv = T.predict(model, va["x"], mu, sd)
z = (pv - va["labels"]) / sv; sig = sig * np.array([H.robust(z[:, k]) for k in range(4)])
s = H.score(pred, truth[te["star_index"]], te["snr"], sig)
res = {"name": name, "cfg": cfg, "score": s, "n_twins": len(tr["x"]), "recon_rms": T.recon_metrics(model, te), "eval_only": True}
json.dump(res, open(f"{H.RESULTS}/{name}.json", "w"))
print(H.fmt(s)); print("recon", res["recon_rms"])
