"""Labels refitted through the network's own label decoder: a chi-square fit of each visit with the
learned emulator, pulled towards the network's prediction, then mixed with it per label and S/N bin.

Why: a checkpoint trained with `model.label_decoder` carries an MLP from the standardised labels to the
normalised spectrum, learned from the high-S/N twins: a data-driven emulator in the survey's own label
scale (the idea of The Cannon, Ness et al. 2015, with an MLP). The network's labels come from a
discriminative readout, which with ~1000 training stars shrinks a label whose information sits in a
few weak lines towards the population's mean trend ([Mg/Fe] slope 0.87-0.89 at S/N >= 20 on the paper
table). A fit through the decoder reads those lines as a likelihood does, without that shrinkage; where
the decoder is the weaker emulator (Teff at high S/N), the network's own label stays better. So the
final label is a * network + (1 - a) * refit, with `a` chosen per label and visit-S/N bin on the val
split against the survey's own labels (the only reference real data has; independent survey-label
noise adds the same variance to every mix, so it does not move the choice). docs/recipes.md, "Labels
refitted through the label decoder", has the measurements.

The fit is Gauss-Newton with a small Levenberg damping, all visits of a batch at once, the Jacobian by
forward-mode autodiff (K columns), in float64:

    z <- z + (J^T W J + P + damp)^-1 (J^T W r - P (z - mu))

W the visit's normalised ivar (0 on bad pixels; pixels off by more than `clip` sigma after half the
iterations are dropped as unflagged outliers), r the visit minus the decoder's spectrum, mu and P the
network's standardised mean and 1/sigma^2 (the prior; None = flat). Each step is clipped to `max_step`
standard deviations of the label. A refit that lands more than MAX_PULL of the network's calibrated
sigmas from the network's label is dropped (`guard`): the mix keeps the network's label for that visit.
"""

from __future__ import annotations

import warnings

import numpy as np

from pairspec.metrics import DEFAULT_SNR_EDGES as SNR_EDGES
from pairspec.metrics import snr_bin_index
from pairspec.preprocess.common import INPUT_CLIP, WEIGHT_SNR_HALF

MIX_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)  # candidate weights of the network's label
# A refit further than this many of the network's calibrated sigmas from the network's label is taken as a
# failed fit (the decoder asked for a spectrum outside the labels it learned) and the network's label is kept.
# Measured (docs/recipes.md, "Labels refitted through the label decoder"): on the paper table one cool metal-rich
# giant's four test visits had [Mg/Fe] refits 8-10 sigma from the truth (6.2 of the network's sigmas from its
# label, which was within 1.4 sigma); they alone made the mix's z-std against truth 1.21 (0.96 with the guard).
# 0.3 % of the refits on the 1500-star curve's test visits pass the line, and no bin's robust sigma moves by more
# than 0.0003 dex or 0.1 K there.
MAX_PULL = 5.0
N_ITER = 5  # Gauss-Newton steps: a third less time than 8, labels within 0.0015 std (benchmarks/refit_steps.py)


def refit_standardised(decoder, resid_target, weight, z0, prior_mean=None, prior_sigma=None,
                       n_iter: int = N_ITER, clip: float = 5.0, damp: float = 1e-3, max_step: float = 1.0):
    """Refit standardised labels (B, K) so that decoder(z) matches `resid_target` (B, P: normalised flux - 1
    on the decoder's pixels) under per-pixel weights `weight` (B, P, inverse variance, 0 = unused).

    All arrays are torch tensors; the computation runs in float64 on their device, outside autograd.
    `prior_mean`/`prior_sigma` (B, K) add a Gaussian prior (None: flat). Returns (z, formal_sigma), both
    (B, K) float64, where formal_sigma is sqrt(diag((J^T W J + P)^-1)) at the solution.
    """
    import torch

    dt = torch.float64
    with torch.inference_mode(False), torch.no_grad():
        # clones: tensors made under inference_mode cannot enter forward-mode autodiff
        y0, w0 = resid_target.clone().to(dt), weight.clone().to(dt)
        y = torch.nan_to_num(y0)
        w = torch.where(torch.isfinite(y0) & torch.isfinite(w0) & (w0 > 0), w0, torch.zeros((), dtype=dt,
                                                                                          device=y.device))
        z = z0.clone().to(dt)
        if prior_mean is None:
            pm, pinv = torch.zeros_like(z), torch.zeros_like(z)
        else:
            pm, pinv = prior_mean.clone().to(dt), 1.0 / prior_sigma.clone().to(dt).clamp_min(1e-6) ** 2
        params = {k: v.detach().clone().to(dt) for k, v in decoder.named_parameters()}
        params.update({k: v.detach().clone().to(dt) for k, v in decoder.named_buffers()})

        def spectrum(zz):
            return torch.func.functional_call(decoder, params, (zz,))

        jac = torch.func.vmap(torch.func.jacfwd(spectrum))
        eye = torch.eye(z.shape[1], dtype=dt, device=z.device)
        for it in range(n_iter):
            r = y - spectrum(z)
            if clip and it == n_iter // 2:
                w = torch.where(r.abs() * w.sqrt() > clip, torch.zeros_like(w), w)
            with warnings.catch_warnings():
                # torch's jvp decompositions call torch.jit.script when first imported: its FutureWarning
                # is torch's own business, not the user's
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
                J = jac(z)  # (B, P, K)
            jtw = J.transpose(1, 2) * w[:, None, :]
            H = jtw @ J + torch.diag_embed(pinv) + damp * eye
            g = (jtw @ r[..., None])[..., 0] - pinv * (z - pm)
            z = z + torch.linalg.solve(H, g).clamp(-max_step, max_step)
        J = jac(z)
        H = (J.transpose(1, 2) * w[:, None, :]) @ J + torch.diag_embed(pinv) + damp * eye
        formal = torch.sqrt(torch.diagonal(torch.linalg.inv(H), dim1=1, dim2=2))
    return z, formal


def inputs_to_target(x):
    """(resid_target, ivar) float64 (B, L) back from network inputs x (B, 2, L) (torch): the visit's normalised
    flux - 1 and its ivar, 0 where the pixel was bad or clipped (the inverse of
    preprocess.inputs_from_normalized, as train_steps.visits_from_inputs in numpy)."""
    import torch

    f0, w = x[:, 0].double(), x[:, 1].double()
    good = (w > 0) & (w < 1) & (f0 > INPUT_CLIP[0]) & (f0 < INPUT_CLIP[1])
    sn = torch.where(good, WEIGHT_SNR_HALF * w / torch.where(good, 1.0 - w, torch.ones_like(w)), torch.zeros_like(w))
    return f0, sn ** 2


def refit_from_inputs(decoder, x, mean, log_var, prior: bool = True, **options):
    """Refit of a batch straight from the network's inputs x (B, 2, L) and outputs (standardised `mean`,
    `log_var`, (B, K)): (z, formal_sigma), standardised, float64 torch tensors."""
    import torch

    y, ivar = inputs_to_target(x)
    mean = mean.double()
    sigma = torch.exp(0.5 * log_var.double())
    return refit_standardised(decoder, y, ivar, mean, prior_mean=mean if prior else None,
                              prior_sigma=sigma if prior else None, **options)


def guard(network, refit, sigma, max_pull: float | None = MAX_PULL):
    """The refit (N, K) with NaN where it is further than `max_pull` x `sigma` (the network's calibrated sigma)
    from the network's label: apply_mix keeps the network's label there. None: no guard (checkpoints written
    before the guard existed, whose mixing weights were chosen without it)."""
    refit = np.array(refit, dtype=np.float64)
    if max_pull is None:
        return refit
    with np.errstate(invalid="ignore"):
        far = np.abs(refit - np.asarray(network, dtype=np.float64)) > max_pull * np.asarray(sigma, dtype=np.float64)
    refit[far] = np.nan
    return refit


def _best_weights(network, refit, reference, b, n_bins, min_count):
    from pairspec.metrics import robust_sigma

    weights = []
    for k in range(network.shape[1]):
        row = []
        for j in range(n_bins):
            sel = (b == j) & np.isfinite(reference[:, k]) & np.isfinite(network[:, k]) & np.isfinite(refit[:, k])
            if sel.sum() < min_count:
                row.append(1.0)
                continue
            score = [robust_sigma(a * network[sel, k] + (1 - a) * refit[sel, k] - reference[sel, k]) for a in MIX_GRID]
            row.append(float(MIX_GRID[int(np.argmin(score))]))
        weights.append(row)
    return weights


def bootstrap_choices(network, refit, reference, snr, star, snr_edges=SNR_EDGES, min_count: int = 30,
                      n_boot: int = 30, seed: int = 0):
    """The per-label, per-S/N-bin weight choice (choose_mix's rule) on each of `n_boot` bootstrap resamples
    of the stars: (draws (n_boot, K, n_bins), drawn (n_boot, n_stars) whether each star was in a resample,
    rows_of (the visit rows of each star, in np.unique(star) order))."""
    network, refit, reference = (np.asarray(a, dtype=np.float64) for a in (network, refit, reference))
    b = snr_bin_index(snr, snr_edges)
    uniq, inverse = np.unique(np.asarray(star), return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(uniq.size)]
    rng = np.random.default_rng(seed)
    draws, drawn = [], []
    for _ in range(n_boot):
        pick = rng.integers(0, uniq.size, uniq.size)
        rows = np.concatenate([rows_of[i] for i in pick])
        draws.append(_best_weights(network[rows], refit[rows], reference[rows], b[rows], len(snr_edges) - 1,
                                   min_count))
        drawn.append(np.isin(np.arange(uniq.size), pick))
    return np.asarray(draws), np.asarray(drawn), rows_of


def choose_mix(network, refit, reference, snr, star=None, snr_edges=SNR_EDGES, min_count: int = 30,
               n_boot: int = 30, seed: int = 0, return_oob: bool = False):
    """Per label (K) and S/N bin, the weight a of the network's label in a * network + (1 - a) * refit that
    gives the smallest robust sigma against `reference` (N, K; NaN = missing) over the visits of that bin
    (a from MIX_GRID). A bin with fewer than `min_count` usable visits keeps the network's label (a = 1).

    With `star` (N,), the choice is bagged: the median of the choices on `n_boot` bootstrap resamples of the
    stars (a star's visits share its errors, so a few stars decide a bin of a small val split: on the paper
    table's ~140 val stars the single choice moved by up to 0.35 between two refits of one checkpoint
    whose inputs differed only by float32 rounding and input clipping).

    return_oob (needs `star`): also return the mixed labels (N, K) of the same visits where each star's
    weights are the median over the resamples that left it out. A calibration fitted on those is not
    flattered by weights chosen on the very residuals it measures (on the demo's val split, calibrating
    the in-sample mix left z-std 1.2-1.35 against truth on the test stars)."""
    network, refit, reference = (np.asarray(a, dtype=np.float64) for a in (network, refit, reference))
    if star is None or n_boot <= 1:
        if return_oob:
            raise ValueError("return_oob needs the stars of the visits and n_boot > 1")
        return _best_weights(network, refit, reference, snr_bin_index(snr, snr_edges), len(snr_edges) - 1,
                             min_count)
    snr = np.asarray(snr, dtype=np.float64)
    draws, drawn, rows_of = bootstrap_choices(network, refit, reference, snr, star, snr_edges, min_count, n_boot,
                                              seed)
    weights = np.round(np.median(draws, axis=0), 3).tolist()
    if not return_oob:
        return weights
    oob = np.empty_like(network)
    for i, rows in enumerate(rows_of):
        out = ~drawn[:, i]
        w = np.median(draws[out], axis=0) if out.any() else np.asarray(weights)
        oob[rows] = apply_mix(network[rows], refit[rows], snr[rows], w, snr_edges)
    return weights, oob


def apply_mix(network, refit, snr, weights, snr_edges=SNR_EDGES):
    """a * network + (1 - a) * refit with each visit's bin's weight (choose_mix); a NaN refit keeps the
    network's label. Works on numpy arrays (N, K) in any units."""
    network, refit = np.asarray(network, dtype=np.float64), np.asarray(refit, dtype=np.float64)
    a = np.asarray(weights, dtype=np.float64).T[snr_bin_index(snr, snr_edges)]  # (N, K)
    mixed = a * network + (1 - a) * refit
    return np.where(np.isfinite(refit), mixed, network)


def labels_returned(decoder, x, mean, log_var, label_mean, label_std, snr, refit_meta, network_calibration,
                    always_refit: bool = False):
    """The labels `pairspec predict` returns for a batch of network inputs x (B, 2, L) with the network's
    standardised `mean`, `log_var` (B, K) (torch): (labels, network, refit), physical float64 (B, K) numpy.
    `refit_meta` is the checkpoint's meta["refit"] (None: no mix, the labels are the network's, and the refit
    is computed only with `always_refit`, else None); the refit is guarded with the network's calibrated
    sigma (`network_calibration`, the checkpoint's meta["calibration"]) and mixed with the network's label
    by the visit's S/N bin (`snr`, (B,)). `decoder`: the model's label decoder (None: no refit)."""
    from pairspec.calibration import split_sigma

    label_mean, label_std = np.asarray(label_mean, np.float64), np.asarray(label_std, np.float64)
    network = mean.float().cpu().numpy().astype(np.float64) * label_std + label_mean
    mix = (refit_meta or {}).get("weight_of_network")
    if decoder is None or (mix is None and not always_refit):
        return network, network, None
    z, _ = refit_from_inputs(decoder, x, mean.float(), log_var.float())
    refit = z.cpu().numpy() * label_std + label_mean
    if mix is None:
        return network, network, refit
    sigma = np.exp(0.5 * log_var.float().cpu().numpy().astype(np.float64)) * label_std
    kept = guard(network, refit, split_sigma(sigma, snr, network_calibration, network)[0], refit_meta.get("max_pull"))
    return apply_mix(network, kept, snr, mix, refit_meta.get("snr_edges", SNR_EDGES)), network, refit
