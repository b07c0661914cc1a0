"""The pieces of one training step, each a lever of its own: batch order, learning-rate schedule, the
optimizer, the loss, input augmentation, a moving average of the weights, and prediction on val twins.
pairspec.train strings them together (and re-exports the names tests and benchmarks use)."""

from __future__ import annotations

import math

import numpy as np
import torch

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
def denoise_error_profile(model, loader, device, amp, snr_edges=(0.0, 20.0, 40.0, 60.0, float("inf"))) -> dict:
    """How well the model knows each pixel of its denoised spectrum, per visit-S/N bin, from the val twins:
    sigma_p^2 = mean over twins of (recon - target)^2 - 1/target_ivar (the residual's variance less the
    leave-one-out target's own noise), floored at 0, then smoothed over 5 pixels. A bin without val twins
    takes the nearest bin's profile. {"snr_edges": [...], "sigma": [[n_pix] per bin]} (a plain dict)."""
    model.eval()
    nb = len(snr_edges) - 1
    total, count = None, np.zeros(nb)
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with amp():
            out = model(batch["x"])
        w = batch["target_w"].float()
        good = w > 0
        denoised = out.get("recon_labels", out["recon"])  # what prediction gives as the denoised spectrum
        r2 = (denoised.float() - (batch["target"].float() - 1.0)) ** 2
        excess = torch.where(good, r2 - 1.0 / torch.clamp_min(w, 1e-30), 0.0).cpu().numpy().astype(np.float64)
        n_good = good.cpu().numpy()
        snr = batch["snr"].cpu().numpy()
        b = np.clip(np.searchsorted(snr_edges, snr, side="right") - 1, 0, nb - 1)
        if total is None:
            total, pix_count = np.zeros((nb, excess.shape[1])), np.zeros((nb, excess.shape[1]))
        np.add.at(total, b, excess)
        np.add.at(pix_count, b, n_good)
        np.add.at(count, b, 1)
    model.train()
    if total is None:
        return {"snr_edges": list(snr_edges), "sigma": None}
    return {"snr_edges": [float(e) for e in snr_edges],
            "sigma": profile_sigma(total, pix_count, count).astype(np.float32).tolist()}


def profile_sigma(excess: np.ndarray, pix_count: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per-bin, per-pixel sigma of a denoised spectrum from the summed excess variance of its residuals
    (`excess`, bins x pixels: sum of (denoised - target)^2 - 1/target_ivar over unmasked pixels),
    `pix_count` (how many values each sum holds) and `count` (spectra per bin): the mean floored at 0,
    smoothed over 5 pixels; a bin without spectra takes the nearest bin's profile."""
    from scipy.ndimage import uniform_filter1d

    var = np.where(pix_count > 0, excess / np.maximum(pix_count, 1), np.nan)
    sigma = np.sqrt(np.clip(uniform_filter1d(np.nan_to_num(var), 5, axis=1), 0.0, None))
    have = np.flatnonzero(count > 0)
    for k in range(len(count)):
        if count[k] == 0 and have.size:
            sigma[k] = sigma[have[np.argmin(np.abs(have - k))]]
    return sigma
