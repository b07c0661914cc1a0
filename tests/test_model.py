"""TwinSpecNet stages, presets, FLOPs and the loss on a tiny synthetic problem."""

import numpy as np
import pytest
import torch

from pairspec.models import count_flops, count_parameters, create_model, list_presets
from pairspec.models.tsn import LOG_VAR_MAX, LOG_VAR_MIN, TwinSpecNet

torch.set_num_threads(1)


def synthetic_batch(n=32, L=250, K=2, seed=0):
    """Two absorption lines whose depths are the labels; the input is a noisy copy of the target."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, K, generator=g) * 2 - 1
    pix = torch.arange(L).float()
    lines = torch.stack([torch.exp(-0.5 * ((pix - c) / 6) ** 2) for c in (60, 180)])  # (K, L)
    target = 1 - 0.2 * (1.5 + y) @ lines
    noisy = target + 0.02 * torch.randn(n, L, generator=g)
    x = torch.stack([noisy - 1, torch.ones(n, L)], dim=1)
    return {"x": x, "target": target, "target_w": torch.ones(n, L), "labels": y,
            "label_mask": torch.ones(n, K, dtype=torch.bool)}


def test_stage_shapes_and_padding():
    model = TwinSpecNet(n_pix=250, n_labels=3, patch_size=32, embed_dim=32, depth=1, num_heads=2)
    assert model.n_patches == 8 and model.padded == 256  # 250 px padded to 8 patches of 32
    x = torch.randn(4, 2, 250)
    tokens = model.forward_encoder(x)
    assert tokens.shape == (4, 9, 32)  # label token + 8 patches
    mean, log_var = model.forward_labels(tokens)
    assert mean.shape == (4, 3) and log_var.shape == (4, 3)
    assert model.forward_reconstruction(tokens).shape == (4, 250)
    out = model(x)
    assert set(out) == {"mean", "log_var", "recon"}
    with pytest.raises(ValueError, match="250 pixels"):
        model(torch.randn(1, 2, 256))


def test_per_label_tokens_give_each_label_its_own_token():
    torch.manual_seed(0)
    model = TwinSpecNet(n_pix=250, n_labels=3, patch_size=32, embed_dim=32, depth=1, num_heads=2,
                        label_head="per_label")
    assert model.n_label_tokens == 3 and model.label_token.shape == (1, 3, 32)
    x = torch.randn(4, 2, 250)
    tokens = model.forward_encoder(x)
    assert tokens.shape == (4, 3 + 8, 32)
    assert model.forward_reconstruction(tokens).shape == (4, 250)
    mean, log_var = model.forward_labels(tokens)
    w, b = model.label_head.weight, model.label_head.bias
    for k in range(3):  # label k reads label token k alone: rows k (mean) and 3 + k (log-variance)
        torch.testing.assert_close(mean[:, k], tokens[:, k] @ w[k] + b[k])
        torch.testing.assert_close(log_var[:, k], (tokens[:, k] @ w[3 + k] + b[3 + k]).clamp(-12, 6))
    with torch.no_grad():  # changing token 2 leaves labels 0 and 1 alone
        shifted = tokens.clone()
        shifted[:, 2] += 1.0
        m2, _ = model.forward_labels(shifted)
    torch.testing.assert_close(m2[:, :2], mean[:, :2])
    assert not torch.allclose(m2[:, 2], mean[:, 2])
    # the reconstruction reads the patch tokens only
    torch.testing.assert_close(model.forward_reconstruction(shifted), model.forward_reconstruction(tokens))


def test_log_var_is_clamped():
    model = TwinSpecNet(n_pix=64, n_labels=2, patch_size=16, embed_dim=16, depth=1, num_heads=2)
    with torch.no_grad():
        model.label_head.bias[2:] = 1e4
    log_var = model(torch.zeros(2, 2, 64))["log_var"]
    assert torch.all(log_var == LOG_VAR_MAX)
    with torch.no_grad():
        model.label_head.bias[2:] = -1e4
    assert torch.all(model(torch.zeros(2, 2, 64))["log_var"] == LOG_VAR_MIN)


def test_presets_and_flops():
    assert {"tsn_tiny", "tsn_mini", "tsn_small", "tsn_base"} <= set(list_presets())
    tiny = create_model("tsn_tiny", n_pix=256, n_labels=4)
    assert (tiny.embed_dim, len(tiny.blocks), tiny.patch_size) == (64, 2, 32)
    small = create_model("tsn_small", n_pix=256, n_labels=4, depth=2)  # overrides win over the preset
    assert len(small.blocks) == 2 and small.embed_dim == 192
    with pytest.raises(KeyError, match="tsn_huge"):
        create_model("tsn_huge", 256, 4)
    six = create_model("tsn_tiny", n_pix=256, n_labels=4, embed_dim=96, num_heads=6)  # head dimension 16
    assert six.blocks[0].attn.num_heads == 6 and six.blocks[0].attn.head_dim == 16
    with pytest.raises(ValueError, match="embed_dim 64 is not divisible by num_heads 3"):
        create_model("tsn_tiny", n_pix=256, n_labels=4, num_heads=3)
    # FLOPs: about 2 x parameters x tokens for a ViT whose matmuls dominate
    f = count_flops(tiny, 256)
    n_blocks = sum(p.numel() for p in tiny.blocks.parameters())
    assert 2 * n_blocks * 9 * 0.8 < f < 2 * count_parameters(tiny) * 9 * 1.6
    assert count_flops(tiny, 512) > 1.9 * f  # roughly linear in the number of patches


def test_loss_masks_missing_labels_and_bad_pixels():
    b = synthetic_batch(4, 64, 2)
    model = TwinSpecNet(n_pix=64, n_labels=2, patch_size=16, embed_dim=16, depth=1, num_heads=2)
    out = model(b["x"])
    ref = TwinSpecNet.forward_loss(out, b)
    # a NaN target where the weight is 0, and a NaN label where the mask is False, change nothing
    b2 = dict(b, target=b["target"].clone(), labels=b["labels"].clone(), label_mask=b["label_mask"].clone())
    b2["target_w"] = b["target_w"].clone()
    b2["target_w"][:, :5] = 0
    b2["target"][:, :5] = float("nan")
    b2["labels"][0, 1] = float("nan")
    b2["label_mask"][0, 1] = False
    got = TwinSpecNet.forward_loss(out, b2, recon_weight=1.0, label_weight=1.0)
    assert torch.isfinite(got["loss"])
    # recon by hand on the remaining pixels
    r = (out["recon"] - (b["target"] - 1))[:, 5:] ** 2
    assert torch.allclose(got["recon_loss"], r.mean(1).mean(), rtol=1e-5)
    nll = 0.5 * (out["log_var"] + (b["labels"] - out["mean"]) ** 2 / out["log_var"].exp())
    keep = b2["label_mask"]
    assert torch.allclose(got["label_loss"], nll[keep].mean(), rtol=1e-5)
    assert not torch.allclose(got["label_loss"], ref["label_loss"])
    # weights scale the two parts
    only = TwinSpecNet.forward_loss(out, b2, recon_weight=0.0, label_weight=2.0)
    assert torch.allclose(only["loss"], 2 * got["label_loss"])


def test_loss_decreases_on_tiny_synthetic_problem():
    torch.manual_seed(0)
    batch = synthetic_batch(64, 250, 2)
    model = create_model("tsn_tiny", n_pix=250, n_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(150):
        parts = TwinSpecNet.forward_loss(model(batch["x"]), batch)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        first = first if first is not None else {k: float(v.detach()) for k, v in parts.items()}
    out = model(batch["x"])
    last = TwinSpecNet.forward_loss(out, batch)
    assert float(last["recon_loss"]) < 0.3 * first["recon_loss"]
    assert float(last["label_loss"]) < first["label_loss"] - 0.3
    # the labels are actually learned: predictions correlate with the truth
    for k in range(2):
        r = np.corrcoef(out["mean"][:, k].detach().numpy(), batch["labels"][:, k].numpy())[0, 1]
        assert r > 0.9
