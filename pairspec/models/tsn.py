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
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from pairspec.models.presets import PRESETS

EMBEDS = ("conv", "local")
LABEL_LOSSES = ("nll", "beta_nll", "mse_var")
RECON_LOSSES = ("mse", "chi2")
LABEL_HEADS = ("token", "flat", "per_label")
# log-variance range in standardised units: sigma in [exp(-6), exp(3)] label std; keeps the NLL
# finite when a head saturates early in training.
LOG_VAR_MIN, LOG_VAR_MAX = -12.0, 6.0



def label_decoder_mlp(n_labels: int, width: int, n_out: int) -> nn.Sequential:
    """The label decoder (`model.label_decoder`): K standardised labels -> width -> width -> n_out pixels
    (flux - 1), GELU between. One constructor, so that a decoder trained elsewhere
    (benchmarks/posthoc_label_decoder.py) loads into the same layout."""
    return nn.Sequential(nn.Linear(n_labels, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                         nn.Linear(width, n_out))

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
        embed: str = "conv",
        label_head: str = "token",
        decoder_depth: int = 0,
        ridge_path: bool = False,
        linear_readout: int = 0,
        readout_detach: bool = False,
        readout_hidden: int = 0,
        label_decoder: int = 0,
        product_decoder: int = 0,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if embed not in EMBEDS or label_head not in LABEL_HEADS:
            raise ValueError(f"embed must be one of {EMBEDS} and label_head one of {LABEL_HEADS}, "
                             f"got {embed!r}, {label_head!r}")
        self.n_pix, self.n_labels, self.patch_size = int(n_pix), int(n_labels), int(patch_size)
        self.embed_dim, self.in_chans = int(embed_dim), int(in_chans)
        self.n_patches = math.ceil(self.n_pix / self.patch_size)
        self.padded = self.n_patches * self.patch_size  # padding carries zero weight
        self.embed, self.label_head_kind, self.decoder_depth = embed, label_head, int(decoder_depth)
        # "per_label": one label token per label, so each label can attend to its own lines (an [Mg/Fe]
        # token to the Mg lines) instead of all labels sharing one token's attention
        self.n_label_tokens = self.n_labels if label_head == "per_label" else 1

        if embed == "local":
            # one linear map per patch position: a line at 15753 A is not a line at 16000 A (spectra,
            # unlike images, are not translation invariant); same FLOPs as the shared convolution
            fan_in = in_chans * patch_size
            self.local_weight = nn.Parameter(torch.randn(self.n_patches, fan_in, embed_dim) / math.sqrt(fan_in))
            self.local_bias = nn.Parameter(torch.zeros(self.n_patches, embed_dim))
        else:
            self.patch_embed = nn.Conv1d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.label_token = nn.Parameter(torch.zeros(1, self.n_label_tokens, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.n_label_tokens + self.n_patches, embed_dim))
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth ramp
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=dpr[i])
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        # mean and log-variance: from the label token, or ("flat") a linear map of every token, which
        # contains a linear regression on the pixels as a special case; with "per_label" label k's mean and
        # log-variance are rows k and K + k of the same map applied to label token k
        head_in = embed_dim * (1 + self.n_patches) if label_head == "flat" else embed_dim
        self.label_head = nn.Linear(head_in, 2 * n_labels)
        # an optional linear readout of every patch token, added to the label means: each token is
        # projected to `linear_readout` numbers and one linear map of all of them gives each label. Linear
        # probes of a trained encoder (docs/recipes.md) found the [Mg/Fe] information in the patch
        # tokens, not in the label tokens that attention pooling fills; this path reads it directly. Its
        # output layer starts at zero, so an untrained model predicts what the label head does
        # `readout_detach`: the readout reads the tokens without passing its gradient to the encoder (a
        # probe trained along with the network), so the encoder's tokens serve the head and the
        # reconstruction as without it
        self.linear_readout, self.readout_detach = int(linear_readout), bool(readout_detach)
        # `readout_hidden` > 0: one hidden layer (GELU) between the projected tokens and the labels, so the
        # readout can combine the patches' numbers non-linearly (Teff's lines change with Teff non-linearly)
        self.readout_hidden = int(readout_hidden)
        if self.linear_readout < 0:
            raise ValueError(f"linear_readout must be >= 0, got {linear_readout}")
        if self.readout_hidden < 0:
            raise ValueError(f"readout_hidden must be >= 0, got {readout_hidden}")
        if self.readout_hidden and not self.linear_readout:
            raise ValueError("readout_hidden needs linear_readout > 0 (the rank of the token projection)")
        if self.linear_readout:
            self.readout_proj = nn.Linear(embed_dim, self.linear_readout)
            n_in = self.n_patches * self.linear_readout
            if self.readout_hidden:
                self.readout_mlp = nn.Sequential(nn.Linear(n_in, self.readout_hidden), nn.GELU())
                n_in = self.readout_hidden
            self.readout = nn.Linear(n_in, n_labels)
        # reconstruction: `decoder_depth` transformer blocks over the tokens (MAE-style), then one patch of
        # flux per token. Beside it (`label_decoder` > 0) a spectrum made from the labels alone: an MLP of
        # that width from the K standardised labels to every pixel, a data-driven emulator learned from the
        # high-S/N twins. Training feeds it the survey's labels (the predicted ones where a label is
        # missing), prediction the network's own means, so its spectrum is that of a star with the
        # predicted labels and a fit to it returns them (the token decoder's spectrum need not agree with
        # the labels: docs/recipes.md). It is then the denoised spectrum; the token reconstruction stays
        # as the objective that shapes the encoder.
        self.label_decoder_width = int(label_decoder)
        if self.label_decoder_width < 0:
            raise ValueError(f"label_decoder must be >= 0, got {label_decoder}")
        self.decoder = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
                                     for _ in range(self.decoder_depth))
        self.decoder_norm = nn.LayerNorm(embed_dim) if self.decoder_depth else nn.Identity()
        self.recon_head = nn.Linear(embed_dim, patch_size)
        if self.label_decoder_width:
            w = self.label_decoder_width
            self.label_decoder = label_decoder_mlp(n_labels, w, self.n_pix)
        # `product_decoder` > 0: a second decoder of this width that makes the
        # denoised product, trained after the epochs on the network's own star-level labels
        # (train.decoder_labels: network, pairspec.product_decoder); the label decoder above stays the one
        # the refit uses
        if product_decoder and not self.label_decoder_width:
            raise ValueError("product_decoder needs label_decoder > 0 (the refit and training keep that one)")
        if product_decoder:
            self.add_product_decoder(int(product_decoder))
        # an optional fixed linear path from the input flux to the label means (fitted in closed form on
        # the train twins before training, pairspec.models.ridge): the network then learns what a linear
        # map of the pixels misses, instead of first re-learning the linear map by gradient descent
        self.ridge_path = bool(ridge_path)
        if self.ridge_path:
            self.register_buffer("ridge_weight", torch.zeros(n_labels, self.n_pix))
            self.register_buffer("ridge_bias", torch.zeros(n_labels))
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
        if self.linear_readout:
            nn.init.zeros_(self.readout.weight)

    @torch.no_grad()
    def set_ridge(self, weight, bias) -> None:
        """Install the closed-form linear path (K, n_pix) + (K,) and zero the learned head's mean rows, so
        the untrained network predicts exactly the ridge regression."""
        self.ridge_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        self.ridge_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.label_head.weight[: self.n_labels].zero_()
        self.label_head.bias[: self.n_labels].zero_()

    # --- stages ------------------------------------------------------------------------------

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, L) -> tokens (B, T + n_patches, D); the first T = n_label_tokens are label tokens."""
        if x.shape[-1] != self.n_pix:
            raise ValueError(f"TwinSpecNet expects {self.n_pix} pixels, got {x.shape[-1]}")
        x = F.pad(x, (0, self.padded - self.n_pix))  # zero flux-1 and zero weight
        if self.embed == "local":
            b = x.shape[0]
            patches = x.reshape(b, self.in_chans, self.n_patches, self.patch_size).permute(0, 2, 1, 3)
            tokens = torch.einsum("bnf,nfd->bnd", patches.reshape(b, self.n_patches, -1), self.local_weight)
            tokens = tokens + self.local_bias
        else:
            tokens = self.patch_embed(x).transpose(1, 2)  # (B, n_patches, D)
        tokens = torch.cat([self.label_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_labels(self, tokens: torch.Tensor, flux: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Label token (or every token) -> (mean (B, K), log_var (B, K)) in standardised label units."""
        if self.label_head_kind == "per_label":
            k = self.n_labels
            out = self.label_head(tokens[:, :k]).float()  # (B, K tokens, 2K): keep token k's rows k, K + k
            mean, log_var = out[..., :k].diagonal(dim1=1, dim2=2), out[..., k:].diagonal(dim1=1, dim2=2)
        else:
            feats = tokens.flatten(1) if self.label_head_kind == "flat" else tokens[:, 0]
            mean, log_var = self.label_head(feats).float().chunk(2, dim=-1)
        if self.linear_readout:
            patch_tokens = tokens[:, self.n_label_tokens:]
            if self.readout_detach:
                patch_tokens = patch_tokens.detach()
            feats = self.readout_proj(patch_tokens).flatten(1)
            if self.readout_hidden:
                feats = self.readout_mlp(feats)
            mean = mean + self.readout(feats).float()
        if self.ridge_path:
            if flux is None:
                raise ValueError("a model with a ridge path needs the input flux in forward_labels")
            mean = mean + F.linear(flux.float(), self.ridge_weight, self.ridge_bias)
        return mean, log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)

    def forward_reconstruction(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> (B, L) normalised flux - 1 of the high-S/N twin (padding cut off)."""
        for block in self.decoder:
            tokens = block(tokens)
        # (B, n_patches, patch_size), the label tokens dropped
        patches = self.recon_head(self.decoder_norm(tokens)[:, self.n_label_tokens:]).float()
        return patches.flatten(1)[:, : self.n_pix]

    def forward_label_spectrum(self, mean: torch.Tensor, labels: torch.Tensor | None = None,
                               label_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The label decoder's spectrum (B, L) of the (standardised) labels: the given ones where
        label_mask is set (training: the survey's), the predicted means elsewhere (never a gradient into
        the means: the labels are learned from the label loss alone)."""
        lab = mean.detach().float()
        if labels is not None:
            lab = torch.where(label_mask.bool(), labels.float(), lab)
        return self.label_decoder(lab).float()

    def add_product_decoder(self, width: int | None = None) -> nn.Module:
        """Create the product decoder (the label decoder's layout, `width` wide: None = the label decoder's;
        fresh weights) and return it."""
        width = self.label_decoder_width if width is None else int(width)
        if width < 1:
            raise ValueError(f"product decoder width must be >= 1, got {width}")
        self.product_decoder = label_decoder_mlp(self.n_labels, width, self.n_pix)
        return self.product_decoder

    def denoise_spectrum(self, mean: torch.Tensor) -> torch.Tensor:
        """The denoised product (B, L) of standardised labels: the product decoder's spectrum where the
        model has one, else the label decoder's (needs model.label_decoder)."""
        decoder = getattr(self, "product_decoder", None)
        decoder = self.label_decoder if decoder is None else decoder
        return decoder(mean.float()).float()

    def denoised_of(self, out: dict) -> torch.Tensor:
        """The denoised spectrum (B, L) prediction gives for forward's output `out` with the network's own
        means: the (product) label decoder's when there is one, else the token reconstruction."""
        if self.label_decoder_width:
            return self.denoise_spectrum(out["mean"].detach())
        return out["recon"]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                label_mask: torch.Tensor | None = None) -> dict:
        """`labels`, `label_mask` (B, K): the survey's standardised labels, used by a label decoder in
        training only (None: the predicted labels, as in prediction)."""
        tokens = self.forward_encoder(x)
        mean, log_var = self.forward_labels(tokens, x[:, 0])
        out = {"mean": mean, "log_var": log_var, "recon": self.forward_reconstruction(tokens)}
        if self.label_decoder_width:
            out["recon_labels"] = self.forward_label_spectrum(mean, labels, label_mask)
        return out

    @staticmethod
    def forward_loss(out: dict, batch: dict, recon_weight: float = 1.0, label_weight: float = 1.0,
                     label_loss: str = "nll", beta: float = 0.5, recon_loss: str = "mse",
                     label_weights: torch.Tensor | None = None) -> dict:
        """Reconstruction loss + label loss over the non-missing labels (float32).

        Reconstruction ("mse"): per twin sum(w * (recon - (target - 1))^2) / sum(w), w the target's ivar;
        ("chi2"): per twin sum(w * r^2) / n(w > 0), the chi^2 per pixel against the target (1 at the
        target's own noise), which weighs the spectrum by its S/N^2 (~10^3) against the labels instead of
        letting the label NLL drown it. Both averaged over the batch (a twin with no good target pixel
        contributes 0, so the mean stays linear in twins and DDP gradients equal single-process ones).

        Labels, in standardised units, averaged over the label_mask entries: "nll" the Gaussian
        0.5 * (log_var + (y - mean)^2 / var); "beta_nll" the same times stop_grad(var)^beta (Seitzer et al.
        2022), so well-predicted labels do not take over the gradient; "mse_var" 0.5 (y - mean)^2 for the
        mean plus the NLL of the variance head on the detached residual, so the variance cannot absorb
        what the mean should learn. `label_weights` (K,) multiplies each label's term (train.label_weights:
        under one summed NLL the labels compete for the encoder, and a hard label such as [Mg/Fe] starves).
        """
        w = batch["target_w"].float()
        norm = (w > 0).sum(1).clamp_min(1).float() if recon_loss == "chi2" else w.sum(1).clamp_min(1e-8)
        recon = 0.0
        for key in ("recon", "recon_labels"):  # the token reconstruction and, if any, the label decoder's
            if key in out:
                resid2 = (out[key].float() - (batch["target"].float() - 1.0)) ** 2
                # where w == 0 the target may hold anything (even NaN); never let it into the sum
                per_twin = torch.where(w > 0, w * resid2, torch.zeros_like(resid2)).sum(1)
                recon = recon + (per_twin / norm).mean()

        mask = batch["label_mask"].bool()
        y = torch.where(mask, batch["labels"].float(), torch.zeros_like(out["mean"]))
        log_var, mean = out["log_var"].float(), out["mean"].float()
        inv_var = torch.exp(-log_var)
        if label_loss == "nll":
            per = 0.5 * (log_var + (y - mean) ** 2 * inv_var)
        elif label_loss == "beta_nll":
            per = 0.5 * (log_var + (y - mean) ** 2 * inv_var) * torch.exp(log_var.detach() * beta)
        elif label_loss == "mse_var":
            per = 0.5 * (y - mean) ** 2 + 0.5 * (log_var + (y - mean.detach()) ** 2 * inv_var)
        else:
            raise ValueError(f"unknown label_loss {label_loss!r}; choose from {LABEL_LOSSES}")
        if label_weights is not None:
            per = per * label_weights.to(per)
        labels = torch.where(mask, per, torch.zeros_like(per)).sum() / mask.sum().clamp_min(1)

        loss = recon_weight * recon + label_weight * labels
        return {"loss": loss, "recon_loss": recon.detach(), "label_loss": labels.detach()}


# --- size presets (timm-like registry) ----------------------------------------------------------

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
    T = n_patches + getattr(model, "n_label_tokens", 1)
    hidden = model.blocks[0].mlp.fc1.out_features if len(model.blocks) else 0
    per_block = 2 * T * D * 3 * D + 2 * 2 * T * T * D + 2 * T * D * D + 2 * 2 * T * D * hidden
    embed = 2 * n_patches * P * C * D
    label_in = D * T if getattr(model, "label_head_kind", "token") == "flat" else D
    heads = 2 * n_patches * D * P + 2 * label_in * 2 * model.n_labels
    blocks = len(model.blocks) + len(getattr(model, "decoder", ()))
    return int(embed + blocks * per_block + heads)
