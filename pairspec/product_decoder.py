"""The denoised product's own decoder (`train.decoder_labels: network`): after the epochs, a second label
decoder learns each training star's spectrum from the network's own star-level labels, and makes the
spectrum `pairspec predict --denoised` returns. The label decoder trained with the network stays what the
refit (pairspec.refit) uses.

Why (docs/recipes.md, "The decoder's training labels"): the label decoder learns from the survey's labels,
whose own errors (23 K in Teff on the 5200-star study survey) dilute its response: a Teff step in its input
gives 0.94-0.95 of the emulator's step in the fit to its spectrum, [Mg/Fe] 0.82-0.85. Prediction feeds it the
network's labels, so a decoder that learned the network's label scale matches them: measured post hoc on two
5200-star checkpoints, the emulator fitted to the product scattered 34.3 / 31.6 K, 0.054, 0.026, 0.0205 dex
against 36.3 / 34.2 K, 0.056, 0.026, 0.022 with the survey-label decoder. Refitting through the new decoder
instead was a trade (the [Mg/Fe] slope fell from 0.99 to 0.96), hence a second decoder for the product only.
As this training stage (benchmarks/product_decoder_stage.py on the refit curve's checkpoints), the product
scattered 32.3 / 31.0 K at 5200 stars (35.5 / 35.0 with the decoder trained in TSN) and 30.9 K / 0.050 /
0.025 / 0.018 at 10400 stars (29.6 K / 0.051 / 0.024 / 0.018 with train.decoder_width: 512; a second seed
with 512: 31.1 K / 0.048 / 0.025 / 0.019), against 29.8 K / 0.054 / 0.027 / 0.023 for the fit to the noisy
visit. At ~580 training stars (the demo) the network's star
labels are too poor to learn from and the product got worse; at 1500 it already gained 7 K in Teff.

The labels it learns: `pairspec predict`'s own (the network's, mixed with the refit where the checkpoint has
one) of every training twin's input, combined per star by catalog.combine_visits with the calibration's
visit/star split, as a catalogue of the training stars would give them. The target is the twin's
leave-one-out coadd, the loss chi^2 per pixel against its noise, as the label decoder's in training.
In-memory twins only (with data.stream the recipe is refused: pairspec.config).
"""

from __future__ import annotations

import time

import numpy as np
import torch


@torch.inference_mode()
def star_labels_of_twins(model, meta: dict, x, snr, star_index, device, batch_size: int = 256,
                         progress=None) -> np.ndarray:
    """(M, K) physical labels: for each twin, its star's inverse-variance mean of the labels prediction
    returns for the inputs x (M, 2, L) of all of that star's twins. meta: the checkpoint's (label_stats,
    calibration, refit)."""
    from pairspec.calibration import split_sigma
    from pairspec.catalog import combine_visits
    from pairspec.data import LabelStats
    from pairspec.refit import labels_returned

    stats = LabelStats.from_dict(meta["label_stats"])
    mu, sd = np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)
    refit_meta = meta.get("refit")
    decoder = model.label_decoder if refit_meta else None
    n = len(snr)
    labels, sigma = np.empty((n, len(mu))), np.empty((n, len(mu)))
    model.eval()
    for a in range(0, n, batch_size):
        xb = torch.from_numpy(np.asarray(x[a:a + batch_size], dtype=np.float32)).to(device)
        out = model(xb)
        labels[a:a + batch_size], _, _ = labels_returned(decoder, xb, out["mean"], out["log_var"], mu, sd,
                                                         snr[a:a + batch_size], refit_meta, meta.get("calibration"))
        sigma[a:a + batch_size] = np.exp(0.5 * out["log_var"].float().cpu().numpy().astype(np.float64)) * sd
        if progress is not None:
            progress(min(a + batch_size, n), n)
    calibration = refit_meta.get("calibration") if refit_meta else meta.get("calibration")
    sigma, sigma_visit, _ = split_sigma(sigma, snr, calibration, labels)
    uniq, inv = np.unique(np.asarray(star_index), return_inverse=True)
    comb = combine_visits(inv, uniq.size, labels, sigma, np.zeros(n, np.int32), sigma_visit=sigma_visit)
    return comb["labels"][inv]


def fit_decoder(decoder, z, target, weight, epochs: int, seed: int, batch_size: int = 256, lr: float = 2e-3,
                device="cpu", progress=None) -> list[float]:
    """Train `decoder` (standardised labels z (M, K) -> flux - 1) on the twins' targets (M, L) with weights
    (ivar, 0 = bad): chi^2 per pixel, AdamW with a one-cycle schedule, a fixed batch order from `seed`.
    Returns the mean loss of each epoch."""
    n = len(z)
    steps_per_epoch = max(1, n // batch_size)
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    losses = []
    decoder.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            j = perm[i * batch_size:(i + 1) * batch_size].numpy()
            j.sort()  # contiguous reads from the (memory-mapped or in-memory) arrays
            w = torch.from_numpy(np.asarray(weight[j], dtype=np.float32)).to(device)
            t = torch.from_numpy(np.asarray(target[j], dtype=np.float32) - 1.0).to(device)
            r = decoder(z[j].to(device)) - t
            loss = ((w * r * r).sum(1) / (w > 0).sum(1).clamp_min(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        losses.append(total / steps_per_epoch)
        if progress is not None:
            progress(epoch + 1, epochs)
    decoder.eval()
    return losses


def train_product_decoder(model, meta: dict, train, device, epochs: int, seed: int, progress: bool = False,
                          width: int | None = None, labels: np.ndarray | None = None) -> dict:
    """Add and train the model's product decoder (TwinSpecNet.add_product_decoder, `width` wide: None = the
    label decoder's) on the train twins `train` (a TwinData). `labels`: star_labels_of_twins' result for
    these twins if already computed. Returns what the checkpoint's meta records about it (with "width")."""
    from pairspec.data import LabelStats
    from pairspec.progress import Progress

    t0 = time.perf_counter()
    stats = LabelStats.from_dict(meta["label_stats"])
    mu, sd = np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)
    with Progress(enabled=progress) as bar:
        task = bar.add_task("product decoder: labels of the train twins", total=len(train.snr))
        if labels is None:
            labels = star_labels_of_twins(model, meta, train.x, np.asarray(train.snr), np.asarray(train.star_index),
                                          device, progress=lambda i, n: bar.update(task, completed=i))
        lab = np.asarray(labels, dtype=np.float64)
        if lab.shape != (len(train.snr), len(mu)):
            raise ValueError(f"labels {lab.shape} for {len(train.snr)} twins of {len(mu)} labels")
        good = np.isfinite(lab).all(1)
        z = ((lab[good] - mu) / sd).astype(np.float32)
        rows = np.flatnonzero(good)
        if rows.size == 0:  # nothing to learn from: the label decoder stays the product
            return {"labels": "survey", "skipped": "no train twin has finite predicted labels"}
        task = bar.add_task("product decoder: training", total=epochs)
        torch.manual_seed(int(seed))  # the decoder's initialisation
        decoder = model.add_product_decoder(width).to(device)
        losses = fit_decoder(decoder, z, _Rows(train.target, rows), _Rows(train.target_w, rows), epochs, seed,
                             device=device, progress=lambda i, n: bar.update(task, completed=i))
    return {"labels": "network", "epochs": int(epochs), "width": int(decoder[0].out_features), "n_twins": int(rows.size),
            "n_stars": int(np.unique(np.asarray(train.star_index)[rows]).size),
            "final_loss": round(losses[-1], 5) if losses else None, "time_s": round(time.perf_counter() - t0, 1)}


class _Rows:
    """arr[rows[j]] for an index array j: the twins kept, without copying the (M, L) arrays."""

    def __init__(self, arr, rows):
        self.arr, self.rows = arr, rows

    def __getitem__(self, j):
        return self.arr[self.rows[j]]

    def __len__(self):
        return self.rows.size
