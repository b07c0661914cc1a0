"""The pieces of one training step, each a lever of its own: batch order, learning-rate schedule, the
optimizer, the loss, input augmentation, a moving average of the weights, and prediction on val twins.
pairspec.train strings them together (and re-exports the names tests and benchmarks use)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pairspec.metrics import snr_bin_index
from pairspec.preprocess import INPUT_CLIP, WEIGHT_SNR_HALF


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1):
    """This rank's index lists for one epoch (drop_last), from a permutation seeded by (seed, epoch)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    per_rank = batch_size // world
    return [perm[b * batch_size + rank * per_rank: b * batch_size + (rank + 1) * per_rank]
            for b in range(n // batch_size)]


def lr_factor(step: int, total: int, warmup_frac: float, min_lr_frac: float) -> float:
    """Linear warmup, then cosine decay to min_lr_frac of the peak."""
    warmup = max(1, int(round(warmup_frac * total)))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr_frac + (1.0 - min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model, lr: float, weight_decay: float):
    """AdamW; no decay on norms, biases, the positional embedding and the label token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or name.endswith(("pos_embed", "label_token", "bias"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def label_weight_vector(tcfg, names) -> torch.Tensor | None:
    """train.label_weights as a (K,) tensor in the order of `names` (1 for labels it does not name); None
    without it. ValueError naming a label the run does not train."""
    weights = tcfg.label_weights
    if not weights:
        return None
    unknown = [n for n in weights if n not in names]
    if unknown:
        raise ValueError(f"train.label_weights names {unknown}, which this run does not train; it trains {list(names)}")
    return torch.tensor([float(weights.get(n, 1.0)) for n in names], dtype=torch.float32)


def loss_parts(out, batch, tcfg, label_w=None) -> dict:
    """The recipe's loss (train.recon_weight, label_weight, label_loss, beta_nll, recon_loss; `label_w`
    the label_weight_vector of train.label_weights)."""
    from pairspec.models.tsn import TwinSpecNet

    return TwinSpecNet.forward_loss(out, batch, tcfg.recon_weight, tcfg.label_weight, label_loss=tcfg.label_loss,
                                    beta=tcfg.beta_nll, recon_loss=tcfg.recon_loss, label_weights=label_w)


def train_step(model, batch, optimizer, scheduler, tcfg, amp, label_w=None) -> dict | None:
    """One optimizer step; None (weights and optimizer untouched) when the loss or gradient is non-finite."""
    with amp():  # the survey's labels reach a label decoder (model.label_decoder); other models ignore them
        out = model(batch["x"], batch["labels"], batch["label_mask"])
    parts = loss_parts(out, batch, tcfg, label_w)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()  # always: under DDP every rank must join the gradient all-reduce
    clip = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if not (torch.isfinite(parts["loss"]) and torch.isfinite(norm)):  # NaN anywhere poisons every rank's norm
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    scheduler.step()
    return {k: float(v.detach()) for k, v in parts.items()}


def degrade_targets(batch: dict, fraction: float, generator: torch.Generator, snr_range=(5.0, 60.0)) -> dict:
    """Replace a `fraction` of the batch's inputs by their own high-S/N target degraded to a visit's S/N.

    The target (the leave-one-out coadd of the star's other visits, normalised, with its ivar) gets
    Gaussian noise so that its median per-pixel S/N becomes U(snr_range) (never raised): an extra
    low-S/N view of the star made with the survey's own error arrays, whose noise is independent of the
    original visit's. Labels stay. The reconstruction weight of those rows is set to 0: their input now
    carries the target's own noise, and learning to reproduce it is what the leave-one-out target exists
    to avoid. Rows whose target has fewer than 100 good pixels, or is already below the drawn S/N, are left
    as they are. Works on any device; deterministic for a given generator (resume gives the same batches).
    """
    if fraction <= 0:
        return batch
    x, target, w = batch["x"], batch["target"].float(), batch["target_w"].float()
    n = x.shape[0]
    pick = torch.rand(n, generator=generator) < fraction
    draw = snr_range[0] + (snr_range[1] - snr_range[0]) * torch.rand(n, generator=generator)
    noise = torch.randn(target.shape, generator=generator)
    pick, draw, noise = pick.to(x.device), draw.to(x.device), noise.to(x.device)
    good = w > 0
    n_good = good.sum(1)
    s = torch.sqrt(torch.clamp_min(w, 0.0))
    snr_now = torch.where(good, s, torch.nan).nanmedian(1).values
    use = pick & (n_good >= 100) & (snr_now > draw)
    if not bool(use.any()):
        return batch
    ratio = torch.where(use, draw / torch.clamp_min(snr_now, 1e-6), torch.ones_like(draw))[:, None]
    new_ivar = w * ratio**2
    add = torch.sqrt(torch.clamp_min(torch.where(good, 1.0 / torch.clamp_min(new_ivar, 1e-30)
                                                 - 1.0 / torch.clamp_min(w, 1e-30), 0.0), 0.0))
    flux = (target - 1.0 + noise * add).clamp(*INPUT_CLIP)
    sn = torch.sqrt(new_ivar)
    weight = sn / (sn + WEIGHT_SNR_HALF)
    degraded = torch.stack([torch.where(good, flux, 0.0), torch.where(good, weight, 0.0)], 1).to(x.dtype)
    out = dict(batch)
    out["x"] = torch.where(use[:, None, None], degraded, x)
    out["target_w"] = torch.where(use[:, None], torch.zeros_like(batch["target_w"]), batch["target_w"])
    if "snr" in out:
        out["snr"] = torch.where(use, draw.to(out["snr"].dtype), out["snr"])
    return out


class WeightAverage:
    """Exponential moving average of a model's floating-point weights (decay per optimizer step),
    bias-corrected as Adam's moments are: after n steps it is sum_i decay^(n-i) w_i / sum_i decay^(n-i)
    over the weights after each step, so the untrained initial weights carry no share of it. (Without
    the correction they keep decay^n of it: a 20-step run at decay 0.99 was 82 % its initialisation.)
    The per-step rule: avg_n = d_n avg_(n-1) + (1 - d_n) w_n, d_n = decay (1 - decay^(n-1)) / (1 - decay^n).

    Validation, best.pt and the calibration use the averaged weights; last.pt keeps both. The average is
    updated once per optimizer step, so n is the run's own step count (saved in last.pt): a resumed run
    continues the same average."""

    def __init__(self, model, decay: float):
        self.decay = float(decay)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def step_decay(self, n: int) -> float:
        """The decay d_n of the n-th update (n >= 1; d_1 = 0: the first average is the first step's weights)."""
        return self.decay * (1.0 - self.decay ** (n - 1)) / (1.0 - self.decay ** n)

    @torch.no_grad()
    def update(self, model, steps_before: int) -> None:
        """Fold in the weights after one more optimizer step; `steps_before`: the steps averaged so far."""
        d = self.step_decay(steps_before + 1)
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                self.state[k].copy_(v)

    def swap_into(self, model) -> dict:
        """Load the average into `model`; returns the raw weights so they can be put back."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        return raw


@torch.inference_mode()
def predict_twins(model, loader, device, amp, tcfg, label_w=None) -> dict:
    """Standardised mean/log_var of every twin in loader order, and the mean loss parts."""
    model.eval()
    means, log_vars, sums, n = [], [], {}, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with amp():
            out = model(batch["x"])
        b = batch["x"].shape[0]
        for k, v in loss_parts(out, batch, tcfg, label_w).items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        means.append(out["mean"].float().cpu())
        log_vars.append(out["log_var"].float().cpu())
        n += b
    model.train()
    if n == 0:
        return {"n": 0}
    return {"n": n, "mean": torch.cat(means).numpy(), "log_var": torch.cat(log_vars).numpy(),
            **{k: v / n for k, v in sums.items()}}


def physical(pred: dict, stats):
    """(labels, sigma) in physical units from predict_twins' standardised mean and log_var."""
    std, mu = np.asarray(stats.std, np.float64), np.asarray(stats.mean, np.float64)
    return pred["mean"] * std + mu, np.exp(0.5 * pred["log_var"]) * std


@torch.inference_mode()
def denoise_error_profile(model, loader, device, amp, snr_edges=(0.0, 20.0, 40.0, 60.0, float("inf")),
                          val=None, max_stars: int = 600) -> dict:
    """How well the model knows each pixel of its denoised spectrum, per visit-S/N bin, from the val twins.

    With `val` (the val TwinData) holding stars of >= 3 visits: the cross estimator of `cross_error_profile`
    on up to `max_stars` of them, which does not trust the survey's ivar. Otherwise (no such star) the
    residual against the leave-one-out target less that target's stated noise, sigma_p^2 = mean of
    (recon - target)^2 - 1/target_ivar: a difference of two numbers 5-20x larger than the answer, which a
    few per cent of error in the survey's ivar drives below zero (measured: the floor at 0 in 64-74 % of
    the pixels, where the error against the noiseless truth was 0.008; docs/recipes.md).
    {"snr_edges": [...], "sigma": [[n_pix] per bin], "estimator": "cross"|"excess"} (a plain dict)."""
    if val is not None:
        prof = _cross_profile_of_val(model, val, device, amp, snr_edges, max_stars)
        if prof is not None:
            return prof
    model.eval()
    nb = len(snr_edges) - 1
    total, count = None, np.zeros(nb)
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with amp():
            out = model(batch["x"])
        w = batch["target_w"].float()
        good = w > 0
        denoised = model.denoised_of(out)  # what prediction gives as the denoised spectrum
        r2 = (denoised.float() - (batch["target"].float() - 1.0)) ** 2
        excess = torch.where(good, r2 - 1.0 / torch.clamp_min(w, 1e-30), 0.0).cpu().numpy().astype(np.float64)
        n_good = good.cpu().numpy()
        snr = batch["snr"].cpu().numpy()
        b = snr_bin_index(snr, snr_edges)
        if total is None:
            total, pix_count = np.zeros((nb, excess.shape[1])), np.zeros((nb, excess.shape[1]))
        np.add.at(total, b, excess)
        np.add.at(pix_count, b, n_good)
        np.add.at(count, b, 1)
    model.train()
    if total is None:
        return {"snr_edges": list(snr_edges), "sigma": None, "estimator": "excess"}
    return {"snr_edges": [float(e) for e in snr_edges],
            "sigma": profile_sigma(total, pix_count, count).astype(np.float32).tolist(), "estimator": "excess"}


def _cross_profile_of_val(model, val, device, amp, snr_edges, max_stars: int, batch_size: int = 128):
    """cross_error_profile on the val twins of up to max_stars stars with >= 3 visits; None if there are none."""
    star = np.asarray(val.star_index)
    uniq, counts = np.unique(star, return_counts=True)
    keep = uniq[counts >= 3][:max_stars]
    if keep.size == 0:
        return None
    rows = np.flatnonzero(np.isin(star, keep))
    rows = rows[np.argsort(star[rows], kind="stable")]
    x = np.asarray(val.x[rows], dtype=np.float32)
    model.eval()
    den = np.empty((rows.size, x.shape[2]), dtype=np.float32)
    for a in range(0, rows.size, batch_size):  # no autograd: the caller runs under inference_mode
        with amp():
            out = model(torch.from_numpy(x[a:a + batch_size]).to(device))
        den[a:a + batch_size] = model.denoised_of(out).float().cpu().numpy() + 1.0
    model.train()
    flux, ivar = visits_from_inputs(x)
    sigma, count = cross_error_profile(den, flux, ivar, star[rows], np.asarray(val.snr)[rows], snr_edges)
    if not count.any():
        return None
    return {"snr_edges": [float(e) for e in snr_edges], "sigma": sigma.astype(np.float32).tolist(),
            "estimator": "cross"}


def visits_from_inputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(norm_flux, norm_ivar) float32 (N, L) back from network inputs x (N, 2, L): the inverse of
    preprocess.inputs_from_normalized (pairspec.refit.inputs_to_target, in numpy). Pixels that were bad,
    or clipped to INPUT_CLIP, get ivar 0."""
    from pairspec.refit import inputs_to_target

    resid, ivar = inputs_to_target(torch.from_numpy(np.asarray(x)))
    return (resid.numpy() + 1.0).astype(np.float32), ivar.numpy().astype(np.float32)


def half_coadds(flux: np.ndarray, ivar: np.ndarray, star: np.ndarray):
    """Two references of each visit's star that share no noise with it or with each other: for a visit
    of a star with >= 3 visits (rows of one star contiguous), its star's other visits go in turn to half
    A and half B, and each half is ivar-averaged. (a, wa, b, wb) (N, L) float32; w = 0 where a star has
    fewer than 3 visits or a half has no good pixel."""
    flux, ivar, star = np.asarray(flux, np.float64), np.asarray(ivar, np.float64), np.asarray(star)
    w = np.where((ivar > 0) & np.isfinite(flux) & np.isfinite(ivar), ivar, 0.0)
    wf = np.where(w > 0, w * flux, 0.0)
    a, wa, b, wb = (np.zeros(flux.shape, np.float32) for _ in range(4))
    starts = np.flatnonzero(np.r_[True, star[1:] != star[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], star.size]):
        if hi - lo < 3:
            continue
        for i in range(lo, hi):
            others = [j for j in range(lo, hi) if j != i]
            for half, (ref, refw) in zip((others[0::2], others[1::2]), ((a, wa), (b, wb))):
                sw = w[half].sum(0)
                ref[i] = np.where(sw > 0, wf[half].sum(0) / np.where(sw > 0, sw, 1.0), 0.0)
                refw[i] = sw
    return a, wa, b, wb


def cross_error_profile(den, flux, ivar, star, snr, snr_edges=(0.0, 20.0, 40.0, 60.0, float("inf")),
                        width: int = 31, floor_frac: float = 0.25):
    """Per visit-S/N bin and pixel, the denoised spectrum's error against the true spectrum s, from
    sigma_p^2 = mean over visits of (den - a)(den - b), with a and b the two half coadds of the star's
    other visits (half_coadds). a = s + e_a and b = s + e_b with noises independent of each other and of
    the visit the denoised spectrum came from, so the mean of the product is the mean of (den - s)^2 with
    no term of the survey's ivar: its errors cannot bias it. The product is noisy pixel by pixel, so the
    mean is smoothed over `width` pixels (31: on a 1500-star checkpoint the val and test profiles then
    correlate at 0.2-0.7 per bin, at 5 pixels 0.1-0.6, with the same medians) and floored at `floor_frac`
    of the bin's median, since a pixel at 0 would claim to be known exactly. (sigma (bins, L), visits
    per bin)."""
    a, wa, b, wb = half_coadds(flux, ivar, star)
    good = (wa > 0) & (wb > 0) & np.isfinite(den)
    prod = np.where(good, (np.asarray(den, np.float64) - a) * (np.asarray(den, np.float64) - b), 0.0)
    nb = len(snr_edges) - 1
    used = good.any(1)
    bins = snr_bin_index(snr, snr_edges)
    total, pix_count, count = np.zeros((nb, den.shape[1])), np.zeros((nb, den.shape[1])), np.zeros(nb)
    np.add.at(total, bins[used], prod[used])
    np.add.at(pix_count, bins[used], good[used])
    np.add.at(count, bins[used], 1)
    sigma = profile_sigma(total, pix_count, count, width=width)
    return np.maximum(sigma, floor_frac * np.median(sigma, axis=1, keepdims=True)), count


def profile_sigma(excess: np.ndarray, pix_count: np.ndarray, count: np.ndarray, width: int = 5) -> np.ndarray:
    """Per-bin, per-pixel sigma of a denoised spectrum from the summed excess variance of its residuals
    (`excess`, bins x pixels: sum of (denoised - target)^2 - 1/target_ivar over unmasked pixels),
    `pix_count` (how many values each sum holds) and `count` (spectra per bin): the mean smoothed over
    `width` pixels, floored at 0; a bin without spectra takes the nearest bin's profile."""
    from scipy.ndimage import uniform_filter1d

    var = np.where(pix_count > 0, excess / np.maximum(pix_count, 1), np.nan)
    sigma = np.sqrt(np.clip(uniform_filter1d(np.nan_to_num(var), width, axis=1), 0.0, None))
    have = np.flatnonzero(count > 0)
    for k in range(len(count)):
        if count[k] == 0 and have.size:
            sigma[k] = sigma[have[np.argmin(np.abs(have - k))]]
    return sigma


def refit_on_val(model, val: dict, pred, sigma, twins, device, batch_size: int = 256,
                 network_calibration: dict | None = None) -> dict:
    """The checkpoint's refit (pairspec.refit): the val twins' labels refitted through the label decoder
    (the network's prediction as the prior), the per-label/S/N-bin weight of the network's label in the
    mix chosen against the survey's val labels, and the sigma calibration of the mixed labels (the
    network's sigma as its shape). `val` is predict_twins' output on the val loader (twins.val's order).
    Refits further than refit.MAX_PULL of the network's calibrated sigma (`network_calibration`, the
    checkpoint's own) from its label are dropped before the choice, as predict drops them.
    A plain dict for the checkpoint's meta, with the val robust sigma of each estimator per bin."""
    from pairspec.calibration import split_sigma
    from pairspec.metrics import robust_sigma
    from pairspec.refit import (
        MAX_PULL,
        SNR_EDGES,
        apply_mix,
        choose_mix,
        guard,
        refit_from_inputs,
    )
    from pairspec.train import calibrate

    x = twins.val.x
    std, mu = np.asarray(twins.stats.std, np.float64), np.asarray(twins.stats.mean, np.float64)
    z = np.empty_like(np.asarray(val["mean"], dtype=np.float64))
    model.eval()
    for a in range(0, z.shape[0], batch_size):
        zb, _ = refit_from_inputs(model.label_decoder, torch.from_numpy(np.asarray(x[a:a + batch_size])).to(device),
                                  torch.from_numpy(val["mean"][a:a + batch_size]).to(device),
                                  torch.from_numpy(val["log_var"][a:a + batch_size]).to(device))
        z[a:a + batch_size] = zb.cpu().numpy()
    model.train()
    snr, labels = np.asarray(twins.val.snr), np.asarray(twins.val.labels, dtype=np.float64)
    refit = guard(pred, z * std + mu, split_sigma(sigma, snr, network_calibration, pred)[0], MAX_PULL)
    # the weights from all val stars; the calibration from each star's out-of-bag mix (choose_mix)
    weights, oob = choose_mix(pred, refit, labels, snr, star=np.asarray(twins.val.star_index), return_oob=True)
    mixed = apply_mix(pred, refit, snr, weights)
    b = snr_bin_index(snr, SNR_EDGES)
    val_sigma = {}
    for kind, est in (("network", pred), ("refit", refit), ("mixed", mixed)):
        val_sigma[kind] = [[robust_sigma(est[b == j, k] - labels[b == j, k]) for j in range(len(SNR_EDGES) - 1)]
                           for k in range(pred.shape[1])]
    return {"prior": "network", "snr_edges": [float(e) for e in SNR_EDGES], "max_pull": MAX_PULL,
            "n_guarded": np.isnan(refit).sum(0).astype(int).tolist(), "weight_of_network": weights,
            "calibration": calibrate(oob, sigma, twins), "val_sigma_against_survey": val_sigma,
            "n_val": int(z.shape[0])}
