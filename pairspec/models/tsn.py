"""TwinSpecNet: a Vision Transformer over 1-D spectral patches (Sun, Chiappini & Nepal 2026).

Input: one visit as (B, 2, L) -- channel 0 the normalised flux - 1 (0 at bad pixels), channel 1 a
weight in [0, 1] (0 at bad pixels). Output: per-label mean and log-variance (in standardised label
units, from a label token) and the reconstructed high-S/N normalised flux - 1 (from patch tokens).

Read top to bottom: __init__ -> forward_encoder -> forward_labels / forward_reconstruction ->
forward -> forward_loss, then the size presets.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

# log-variance range in standardised units: sigma in [exp(-6), exp(3)] label std; keeps the NLL
# finite when a head saturates early in training.
LOG_VAR_MIN, LOG_VAR_MAX = -12.0, 6.0


class TwinSpecNet(nn.Module):
    def __init__(
        self,
        n_pix: int,
        n_labels: int,
        patch_size: int = 16,
        embed_dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        in_chans: int = 2,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.n_pix, self.n_labels, self.patch_size = int(n_pix), int(n_labels), int(patch_size)
        self.embed_dim, self.in_chans = int(embed_dim), int(in_chans)
        self.n_patches = math.ceil(self.n_pix / self.patch_size)
        self.padded = self.n_patches * self.patch_size  # padding carries zero weight

        self.patch_embed = nn.Conv1d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.label_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.n_patches, embed_dim))
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth ramp
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=dpr[i])
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.label_head = nn.Linear(embed_dim, 2 * n_labels)  # mean and log-variance
        self.recon_head = nn.Linear(embed_dim, patch_size)  # one patch of flux per token
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.label_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # --- stages ------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, L) -> tokens (B, 1 + n_patches, D); token 0 is the label token."""
        if x.shape[-1] != self.n_pix:
            raise ValueError(f"TwinSpecNet expects {self.n_pix} pixels, got {x.shape[-1]}")
        x = F.pad(x, (0, self.padded - self.n_pix))  # zero flux-1 and zero weight
        tokens = self.patch_embed(x).transpose(1, 2)  # (B, n_patches, D)
        tokens = torch.cat([self.label_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_labels(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Label token -> (mean (B, K), log_var (B, K)) in standardised label units."""
        mean, log_var = self.label_head(tokens[:, 0]).float().chunk(2, dim=-1)
        return mean, log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)

    def forward_reconstruction(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens -> (B, L) normalised flux - 1 of the high-S/N twin (padding cut off)."""
        patches = self.recon_head(tokens[:, 1:]).float()  # (B, n_patches, patch_size)
        return patches.flatten(1)[:, : self.n_pix]

    def forward(self, x: torch.Tensor) -> dict:
        tokens = self.forward_encoder(x)
        mean, log_var = self.forward_labels(tokens)
        return {"mean": mean, "log_var": log_var, "recon": self.forward_reconstruction(tokens)}

    @staticmethod
    def forward_loss(out: dict, batch: dict, recon_weight: float = 1.0, label_weight: float = 1.0) -> dict:
        """Weighted reconstruction MSE + Gaussian NLL over non-missing labels (float32).

        Reconstruction: per twin sum(w * (recon - (target - 1))^2) / sum(w), averaged over the batch
        (a twin with no good target pixel contributes 0, so the mean stays linear in twins, which
        keeps DDP gradients equal to single-process ones). Labels: 0.5 * (log_var + (y - mean)^2 /
        var), averaged over the label_mask entries.
        """
        w = batch["target_w"].float()
        resid2 = (out["recon"].float() - (batch["target"].float() - 1.0)) ** 2
        # where w == 0 the target may hold anything (even NaN); never let it into the sum
        per_twin = torch.where(w > 0, w * resid2, torch.zeros_like(resid2)).sum(1)
        recon_loss = (per_twin / w.sum(1).clamp_min(1e-8)).mean()

        mask = batch["label_mask"].bool()
        y = torch.where(mask, batch["labels"].float(), torch.zeros_like(out["mean"]))
        log_var = out["log_var"].float()
        nll = 0.5 * (log_var + (y - out["mean"].float()) ** 2 * torch.exp(-log_var))
        label_loss = torch.where(mask, nll, torch.zeros_like(nll)).sum() / mask.sum().clamp_min(1)

        loss = recon_weight * recon_loss + label_weight * label_loss
        return {"loss": loss, "recon_loss": recon_loss.detach(), "label_loss": label_loss.detach()}


# --- size presets (timm-like registry) ----------------------------------------------------------

PRESETS: dict[str, dict] = {
    # CPU tests and the demo
    "tsn_tiny": dict(embed_dim=64, depth=2, num_heads=2, patch_size=32),
    # the CPU demo: ~2x tiny's cost, clearly better labels on ~500-star surveys (measured, docs/recipes.md)
    "tsn_mini": dict(embed_dim=96, depth=3, num_heads=2, patch_size=32),
    # a laptop / single small GPU
    "tsn_small": dict(embed_dim=192, depth=6, num_heads=3, patch_size=16),
    # full surveys on a GPU
    "tsn_base": dict(embed_dim=384, depth=12, num_heads=8, patch_size=16),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def preset_kwargs(preset: str, n_pix: int, n_labels: int, **overrides) -> dict:
    """The full TwinSpecNet keyword arguments of a preset (None overrides are ignored)."""
    if preset not in PRESETS:
        raise KeyError(f"unknown model preset {preset!r}; available: {', '.join(list_presets())}")
    kwargs = dict(PRESETS[preset], n_pix=int(n_pix), n_labels=int(n_labels))
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return kwargs


def create_model(preset: str, n_pix: int, n_labels: int, **overrides) -> TwinSpecNet:
    return TwinSpecNet(**preset_kwargs(preset, n_pix, n_labels, **overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: TwinSpecNet, n_pix: int | None = None) -> int:
    """Analytic forward FLOPs per spectrum (2 per multiply-add; norms and softmax ignored)."""
    L = model.n_pix if n_pix is None else int(n_pix)
    P, D, C = model.patch_size, model.embed_dim, model.in_chans
    n_patches = math.ceil(L / P)
    T = n_patches + 1
    hidden = model.blocks[0].mlp.fc1.out_features if len(model.blocks) else 0
    per_block = 2 * T * D * 3 * D + 2 * 2 * T * T * D + 2 * T * D * D + 2 * 2 * T * D * hidden
    embed = 2 * n_patches * P * C * D
    heads = 2 * n_patches * D * P + 2 * D * 2 * model.n_labels
    return int(embed + len(model.blocks) * per_block + heads)
