"""Lean training loop for lever experiments: python trainer.py NAME key=value ..."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H

from pairspec.models.tsn import TwinSpecNet
from pairspec.preprocess.common import WEIGHT_SNR_HALF

DEFAULTS = dict(
    n_train=1200, epochs=10, batch=32, lr=2e-3, wd=0.05, warmup=0.05, min_lr=0.05, loss="nll", beta=0.5,
    recon=1.0, preset_dim=96, depth=3, heads=2, patch=32, aug=0.0, aug_target=0.0, seed=1, ema=0.0,
    threads=2, stem=0, head="token", mse_warm=0.0, val_twins=1500, max_minutes=1e9, drop_path=0.0,
    recon_w="ivar", eval_every=0, dec_depth=0, label_noise_w=0.0, embed="conv", linskip=0, recon_norm="mean",
    recon_skip=0, steps=0, label_w="",
)


def parse(argv):
    cfg = dict(DEFAULTS)
    for a in argv:
        k, v = a.split("=", 1)
        if k not in cfg:
            raise SystemExit(f"unknown key {k}")
        t = type(cfg[k])
        cfg[k] = v if t is str else t(float(v)) if t is int else t(v)
    return cfg


class Net(TwinSpecNet):
    """TwinSpecNet with experiment options (conv stem, pooled head, decoder blocks)."""

    def __init__(self, n_pix, n_labels, stem=0, head="token", dec_depth=0, embed="conv", **kw):
        # head=per_label: one label token per label (pairspec's model.label_head: per_label)
        super().__init__(n_pix, n_labels, label_head="per_label" if head == "per_label" else "token", **kw)
        self.embed_kind = embed
        if embed == "local":  # one linear map per patch position (spectra are not translation invariant)
            fan_in = self.in_chans * self.patch_size
            self.local_w = nn.Parameter(torch.randn(self.n_patches, fan_in, self.embed_dim) / math.sqrt(fan_in))
            self.local_b = nn.Parameter(torch.zeros(self.n_patches, self.embed_dim))
        self.stem_ch = stem
        if stem:
            self.stem = nn.Sequential(nn.Conv1d(2, stem, 7, padding=3), nn.GELU(), nn.Conv1d(stem, stem, 7, padding=3),
                                      nn.GELU())
            self.patch_embed = nn.Conv1d(stem + 2, self.embed_dim, kernel_size=self.patch_size,
                                         stride=self.patch_size)
        self.head_kind = head
        if head == "flat":
            self.flat_head = nn.Linear(self.embed_dim * (self.n_patches + 1), 2 * n_labels)
        if dec_depth:
            from timm.models.vision_transformer import Block
            self.dec = nn.ModuleList(Block(self.embed_dim, kw.get("num_heads", 2), 4.0, qkv_bias=True)
                                     for _ in range(dec_depth))
            self.dec_norm = nn.LayerNorm(self.embed_dim)
        else:
            self.dec = None

    def forward_encoder(self, x):
        x = F.pad(x, (0, self.padded - self.n_pix))
        if self.stem_ch:
            x = torch.cat([x, self.stem(x)], 1)
        if self.embed_kind == "local":
            B = x.shape[0]
            patches = x.reshape(B, x.shape[1], self.n_patches, self.patch_size).permute(0, 2, 1, 3).reshape(
                B, self.n_patches, -1)
            tokens = torch.einsum("bnf,nfd->bnd", patches, self.local_w) + self.local_b
        else:
            tokens = self.patch_embed(x).transpose(1, 2)
        tokens = torch.cat([self.label_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        for b in self.blocks:
            tokens = b(tokens)
        return self.norm(tokens)

    def forward(self, x):
        t = self.forward_encoder(x)
        lin = self.lin(x[:, 0]) if hasattr(self, "lin") else 0.0
        if self.head_kind == "flat":
            mean, lv = self.flat_head(t.flatten(1)).float().chunk(2, -1)
            lv = lv.clamp(-12, 6)
        else:
            mean, lv = self.forward_labels(t)
        mean = mean + lin
        td = t
        if self.dec is not None:
            for b in self.dec:
                td = b(td)
            td = self.dec_norm(td)
        rec = self.forward_reconstruction(td)
        if hasattr(self, "skip_w"):
            xp = F.pad(x, (0, self.padded - self.n_pix))
            B = x.shape[0]
            patches = xp.reshape(B, 2, self.n_patches, self.patch_size).permute(0, 2, 1, 3).reshape(B, self.n_patches, -1)
            rec = rec + torch.einsum("bnf,nfp->bnp", patches, self.skip_w).flatten(1)[:, :self.n_pix]
        return {"mean": mean, "log_var": lv, "recon": rec}


def ivar_from_weight(w):
    s = WEIGHT_SNR_HALF * w / np.clip(1 - w, 1e-6, None)
    return s * s


def augment(xb, tb, twb, rng, p_deg, p_tgt):
    """xb (B,2,L) inputs; degrade a fraction p_deg of inputs to lower S/N; replace a fraction p_tgt by the
    degraded target spectrum (noise drawn from its own ivar scaled down)."""
    xb = xb.copy()
    B = xb.shape[0]
    for i in range(B):
        u = rng.random()
        if u < p_tgt:
            iv = twb[i].astype(np.float64)
            good = iv > 0
            if good.sum() < 100:
                continue
            snr_now = np.median(np.sqrt(iv[good]))
            snr_new = rng.uniform(5, 60)
            if snr_new >= snr_now:
                continue
            new_iv = iv * (snr_new / snr_now) ** 2
            sig_add = np.sqrt(np.where(good, 1 / np.maximum(new_iv, 1e-30) - 1 / np.maximum(iv, 1e-30), 0))
            f = tb[i] - 1 + rng.standard_normal(iv.size) * sig_add
            xb[i, 0] = np.where(good, np.clip(f, -1.5, 1.0), 0)
            s = np.sqrt(new_iv)
            xb[i, 1] = np.where(good, s / (s + WEIGHT_SNR_HALF), 0)
        elif u < p_tgt + p_deg:
            w = xb[i, 1].astype(np.float64)
            good = w > 0
            iv = ivar_from_weight(w)
            snr_now = np.median(np.sqrt(iv[good])) if good.any() else 0
            if snr_now < 10:
                continue
            snr_new = rng.uniform(5, snr_now)
            f2 = (snr_now / snr_new) ** 2
            new_iv = iv / f2
            sig_add = np.sqrt(np.where(good, (f2 - 1) / np.maximum(iv, 1e-30), 0))
            xb[i, 0] = np.where(good, np.clip(xb[i, 0] + rng.standard_normal(w.size) * sig_add, -1.5, 1.0), 0)
            s = np.sqrt(new_iv)
            xb[i, 1] = np.where(good, s / (s + WEIGHT_SNR_HALF), 0)
    return xb


def label_loss(mean, lv, y, mask, kind, beta, step_frac, mse_warm, label_w=None):
    var = torch.exp(lv)
    if kind == "mse" or step_frac < mse_warm:
        nll = 0.5 * (y - mean) ** 2 + 0.5 * (lv + ((y - mean.detach()) ** 2) * torch.exp(-lv))
    elif kind == "nll":
        nll = 0.5 * (lv + (y - mean) ** 2 / var)
    elif kind == "beta":
        nll = 0.5 * (lv + (y - mean) ** 2 / var) * var.detach() ** beta
    elif kind == "detach":  # mean by MSE, variance on detached residuals
        nll = 0.5 * (y - mean) ** 2 + 0.5 * (lv + ((y - mean.detach()) ** 2) * torch.exp(-lv))
    else:
        raise ValueError(kind)
    if label_w is not None:  # per-label weights (one per label column, e.g. label_w=1,1,1,10)
        nll = nll * label_w
    return torch.where(mask, nll, torch.zeros_like(nll)).sum() / mask.sum().clamp_min(1)


def run(cfg, name):
    H.RESULTS.mkdir(parents=True, exist_ok=True)  # before training: a missing folder must not cost the run
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    tr = H.cached_twins("train")
    ids = H.star_ids()
    keep = H.star_subset(tr["star_index"], cfg["n_train"], ids)
    tr = {k: v[keep] for k, v in tr.items()}
    va = H.cached_twins("val")
    keep = H.star_subset(va["star_index"], 400, ids)
    va = {k: v[keep] for k, v in va.items()}
    te = H.cached_twins("test", mode="coadd", min_visits=1)
    truth = H.truth_labels()
    lab = tr["labels"].astype(np.float64)
    mu, sd = np.nanmean(lab, 0), np.nanstd(lab, 0)
    n_pix = tr["x"].shape[-1]
    lw = torch.tensor([float(v) for v in cfg["label_w"].split(",")]) if cfg["label_w"] else None
    model = Net(n_pix, 4, stem=cfg["stem"], head=cfg["head"], dec_depth=cfg["dec_depth"], embed=cfg["embed"],
                patch_size=cfg["patch"],
                embed_dim=cfg["preset_dim"], depth=cfg["depth"], num_heads=cfg["heads"], drop_path=cfg["drop_path"])
    if cfg["recon_skip"]:
        model.skip_w = nn.Parameter(torch.zeros(model.n_patches, 2 * model.patch_size, model.patch_size))
    if cfg["linskip"]:
        from pairspec.models.ridge import fit_ridge
        ylab0 = (lab - mu) / sd
        if cfg["linskip"] == 3:  # fit on the val stars: honest residuals on the train stars
            sub = slice(None, None, 4)
            W, b, _ = fit_ridge(va["x"][:, 0].astype(np.float32), (va["labels"] - mu) / sd,
                                tr["x"][sub, 0].astype(np.float32), ylab0[sub])
        else:
            W, b, _ = fit_ridge(tr["x"][:, 0].astype(np.float32), ylab0, va["x"][:, 0].astype(np.float32),
                                (va["labels"] - mu) / sd)
        model.lin = nn.Linear(n_pix, 4)
        with torch.no_grad():
            model.lin.weight.copy_(torch.from_numpy(W)); model.lin.bias.copy_(torch.from_numpy(b))
            if cfg["linskip"] == 1:
                model.label_head.weight[:4].zero_(); model.label_head.bias[:4].zero_()
        model.lin.requires_grad_(False)  # a fixed ridge path; the network learns the residual
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.endswith(("pos_embed", "label_token"))]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and not n.endswith(("pos_embed", "label_token")))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["wd"]}, {"params": other, "weight_decay": 0}],
                            lr=cfg["lr"], betas=(0.9, 0.95))
    N = len(tr["x"])
    spe = N // cfg["batch"]
    if cfg["steps"]:  # a fixed optimizer-step budget (learning curves at equal compute)
        cfg["epochs"] = -(-cfg["steps"] // spe)
    total = cfg["steps"] or spe * cfg["epochs"]
    warm = max(1, int(cfg["warmup"] * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else cfg["min_lr"] + (
        1 - cfg["min_lr"]) * 0.5 * (1 + math.cos(math.pi * min(1, (s - warm) / max(1, total - warm)))))
    ema = None
    if cfg["ema"] > 0:
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ylab = np.nan_to_num((lab - mu) / sd).astype(np.float32)
    ymask = np.isfinite(lab)
    t0 = time.time()
    step = 0
    log = []
    for ep in range(cfg["epochs"]):
        perm = rng.permutation(N)
        model.train()
        sums = np.zeros(3)
        n_b = 0
        for b in range(spe):
            if step >= total:
                break
            idx = np.sort(perm[b * cfg["batch"]:(b + 1) * cfg["batch"]])
            xb = tr["x"][idx].astype(np.float32)
            if cfg["aug"] > 0 or cfg["aug_target"] > 0:
                xb = augment(xb, tr["target"][idx].astype(np.float32), tr["target_w"][idx], rng, cfg["aug"],
                             cfg["aug_target"])
            x = torch.from_numpy(xb)
            out = model(x)
            y, m = torch.from_numpy(ylab[idx]), torch.from_numpy(ymask[idx])
            ll = label_loss(out["mean"], out["log_var"], y, m, cfg["loss"], cfg["beta"], step / total, cfg["mse_warm"],
                            lw)
            tw = torch.from_numpy(tr["target_w"][idx])
            tgt = torch.from_numpy(tr["target"][idx].astype(np.float32))
            if cfg["recon_w"] == "ivar":
                w = tw
            elif cfg["recon_w"] == "ones":
                w = (tw > 0).float()
            else:  # "sqrt": between the two
                w = torch.sqrt(tw)
            r2 = (out["recon"] - (tgt - 1)) ** 2
            norm = (w > 0).sum(1).clamp_min(1).float() if cfg["recon_norm"] == "chi2" else w.sum(1).clamp_min(1e-8)
            rl = (torch.where(w > 0, w * r2, 0).sum(1) / norm).mean()
            loss = ll + cfg["recon"] * rl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if ema is not None:
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.dtype.is_floating_point:
                            ema[k].mul_(cfg["ema"]).add_(v.detach(), alpha=1 - cfg["ema"])
                        else:
                            ema[k].copy_(v)
            sums += [float(loss.detach()), float(ll.detach()), float(rl.detach())]
            n_b += 1
        el = time.time() - t0
        rec = {"epoch": ep + 1, "loss": sums[0] / max(n_b, 1), "label": sums[1] / max(n_b, 1), "recon": sums[2] / max(n_b, 1), "t": round(el)}
        if cfg["eval_every"] and (ep + 1) % cfg["eval_every"] == 0:
            pv, _ = predict(model, va["x"], mu, sd)
            rec["val_sigma"] = [H.robust(pv[:, k] - va["labels"][:, k]) for k in range(4)]
        log.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
        if el > cfg["max_minutes"] * 60:
            break
    if ema is not None:
        model.load_state_dict(ema)
    torch.save(model.state_dict(), f"{H.RESULTS}/{name}.pt")
    pred, sig = predict(model, te["x"], mu, sd)
    # calibrate sigma on val
    pv, sv = predict(model, va["x"], mu, sd)
    z = (pv - va["labels"]) / sv
    scale = np.array([H.robust(z[:, k]) for k in range(4)])
    sig = sig * scale
    t_true = truth[te["star_index"]]
    s = H.score(pred, t_true, te["snr"], sig)
    res = {"name": name, "cfg": cfg, "score": s, "train_s": time.time() - t0, "n_twins": N, "log": log}
    # reconstruction quality vs truth spectra, if available
    res["recon_rms"] = recon_metrics(model, te)
    with open(f"{H.RESULTS}/{name}.json", "w") as f:
        json.dump(res, f)
    torch.save(model.state_dict(), f"{H.RESULTS}/{name}.pt")
    print(name, json.dumps({k: v for k, v in cfg.items() if v != DEFAULTS[k]}))
    print(H.fmt(s))
    print("recon", res["recon_rms"])
    return res


@torch.inference_mode()
def predict(model, x, mu, sd, bs=256):
    model.eval()
    means, lvs = [], []
    for a in range(0, len(x), bs):
        out = model(torch.from_numpy(x[a:a + bs].astype(np.float32)))
        means.append(out["mean"].numpy())
        lvs.append(out["log_var"].numpy())
    m, lv = np.concatenate(means), np.concatenate(lvs)
    return m * sd + mu, np.exp(0.5 * lv) * sd


@torch.inference_mode()
def recon_metrics(model, te, n=600):
    """RMS of input / denoised vs the truth spectrum per S/N bin (model pixels)."""
    import os

    from astropy.io import fits

    from pairspec.data import model_pixels
    from pairspec.store import open_store

    if not os.path.exists(H.TRUTH):
        return None
    store = open_store(H.STORE)
    pix = model_pixels(store.grid)
    with fits.open(H.TRUTH) as h:
        if "SPECTRA" not in h:
            return None
        cols = h[1].columns.names
        ids = np.char.strip(h[1].data["star_id" if "star_id" in cols else "APOGEE_ID"].astype(str))
        spec = h["SPECTRA"].data
    row = {s: i for i, s in enumerate(ids)}
    sid = store.star_table()["id"]
    rng = np.random.default_rng(0)
    sel = np.sort(rng.choice(len(te["x"]), size=min(n, len(te["x"])), replace=False))
    x = te["x"][sel].astype(np.float32)
    model.eval()
    rec = []
    for a in range(0, len(x), 128):
        rec.append(model(torch.from_numpy(x[a:a + 128]))["recon"].numpy())
    rec = np.concatenate(rec) + 1
    truth = spec[[row[sid[s]] for s in te["star_index"][sel]]][:, pix]
    good = x[:, 1] > 0
    inp = x[:, 0] + 1
    snr = te["snr"][sel]
    out = {}
    for b, lo, hi in zip(H.BINS, H.EDGES[:-1], H.EDGES[1:]):
        s = (snr >= lo) & (snr < hi)
        if not s.any():
            continue
        ri = np.sqrt(np.mean([np.mean((inp[i][good[i]] - truth[i][good[i]]) ** 2) for i in np.flatnonzero(s)]))
        rd = np.sqrt(np.mean([np.mean((rec[i][good[i]] - truth[i][good[i]]) ** 2) for i in np.flatnonzero(s)]))
        out[b] = [round(float(ri), 4), round(float(rd), 4)]
    return out


if __name__ == "__main__":
    name = sys.argv[1]
    run(parse(sys.argv[2:]), name)
