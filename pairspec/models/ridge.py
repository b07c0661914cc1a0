"""The linear baseline: ridge regression of the labels on the normalised visit pixels.

It sees what TSN sees (channel 0 of the network input: continuum-normalised flux - 1, 0 at bad pixels)
and is fitted in closed form on the same train twins, with one ridge strength per label chosen on the
validation twins. It answers "how much of TSN's precision would a linear map of the pixels give?", so a
network that does not beat it by more than its seed spread has not learned the spectrum.

As a module it has TwinSpecNet's interface (mean, log_var, recon), so checkpoints, LabelPredictor,
`pairspec predict` and `pairspec evaluate --compare` treat it like any model: log_var is 0 (sigma =
one label std) and the post-hoc calibration on the validation split turns that into a sigma per S/N bin;
recon is the input flux itself (a linear regression does not denoise).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Ridge strengths tried, relative to the mean eigenvalue of the pixel covariance.
ALPHAS = tuple(10.0 ** np.arange(-5.0, 1.01, 0.5))
RIDGE_BLOCK = 2048  # twins per block of the primal form's covariance sum


class RidgeLabelModel(nn.Module):
    """labels = W (flux - 1) + b in standardised label units, on the model pixels."""

    def __init__(self, n_pix: int, n_labels: int, in_chans: int = 2, **_ignored):
        super().__init__()
        self.n_pix, self.n_labels, self.in_chans = int(n_pix), int(n_labels), int(in_chans)
        self.linear = nn.Linear(self.n_pix, self.n_labels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> dict:
        if x.shape[-1] != self.n_pix:
            raise ValueError(f"RidgeLabelModel expects {self.n_pix} pixels, got {x.shape[-1]}")
        flux = x[:, 0].float()
        mean = self.linear(flux)
        return {"mean": mean, "log_var": torch.zeros_like(mean), "recon": flux}


def fit_ridge(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              alphas=ALPHAS) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Closed-form ridge per label: (W (K, L), b (K,), alpha chosen per label).

    x, x_val (N, L) float pixels; y, y_val (N, K) standardised labels, NaN = missing (those rows are left
    out of that label's validation score; training uses the rows where every label is present, so one
    eigendecomposition of the pixel covariance serves every label and every ridge strength).
    """
    y = np.asarray(y, dtype=np.float64)
    full = np.isfinite(y).all(1)
    if full.sum() < 2:
        raise ValueError(f"ridge: {int(full.sum())} training twins with every label; need at least 2")
    rows = np.flatnonzero(full)
    yf = y[rows]
    y_mean = yf.mean(0)
    n_pix = x.shape[1]
    # one eigendecomposition serves every alpha: of the pixel covariance (L x L) when there are more twins
    # than pixels, else of the twin Gram matrix (N x N, the dual form): the same solutions, cheaper
    primal = rows.size >= n_pix
    if primal:
        # accumulated over blocks of twins in float64: never a float64 copy of every twin (40k twins of
        # 7514 px would be 2.4 GB per copy, and the direct formula took three)
        x_mean = np.zeros(n_pix)
        for r in np.array_split(rows, max(1, rows.size // RIDGE_BLOCK)):
            x_mean += np.asarray(x[r], dtype=np.float64).sum(0)
        x_mean /= rows.size
        cov, xty = np.zeros((n_pix, n_pix)), np.zeros((n_pix, y.shape[1]))
        for r in np.array_split(np.arange(rows.size), max(1, rows.size // RIDGE_BLOCK)):
            block = np.asarray(x[rows[r]], dtype=np.float64) - x_mean
            cov += block.T @ block
            xty += block.T @ (yf[r] - y_mean)
        evals, evecs = np.linalg.eigh(cov)
        del cov
        proj = evecs.T @ xty  # (L, K)
    else:
        xc = np.asarray(x[rows], dtype=np.float64)
        x_mean = xc.mean(0)
        xc -= x_mean
        evals, evecs = np.linalg.eigh(xc @ xc.T)
        proj = evecs.T @ (yf - y_mean)  # (N, K)
    evals = np.clip(evals, 0.0, None)
    scale = max(float(evals.sum()) / n_pix, 1e-12)  # mean eigenvalue of the pixel covariance
    xv = np.asarray(x_val, dtype=np.float64) - x_mean
    yv = np.asarray(y_val, dtype=np.float64)
    K = y.shape[1]
    W, chosen = np.zeros((K, x.shape[1])), []
    for k in range(K):
        ok = np.isfinite(yv[:, k])
        best = (np.inf, None, None)
        for a in alphas:
            coef = evecs @ (proj[:, k] / (evals + a * scale))
            w = coef if primal else xc.T @ coef
            if ok.any():
                err = float(np.mean((xv[ok] @ w + y_mean[k] - yv[ok, k]) ** 2))
            else:  # no validation labels: the mildest regularisation that is still stable
                err = 0.0 if a == alphas[len(alphas) // 2] else np.inf
            if err < best[0]:
                best = (err, a, w)
        W[k] = best[2]
        chosen.append(float(best[1]))
    b = y_mean - W @ x_mean
    return W.astype(np.float32), b.astype(np.float32), chosen
