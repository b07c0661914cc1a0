"""The training levers of train_steps and the options that reach the model: each changes what it says and
nothing else breaks (resume, checkpoints, prediction)."""

import json

import numpy as np
import pytest
import torch
from test_train import GRID, L, config, fake_twins

from pairspec import train as T
from pairspec.checkpoint import load_checkpoint, read_meta
from pairspec.config import ConfigError, ModelSection, apply_overrides
from pairspec.inference import LabelPredictor
from pairspec.models import create_model
from pairspec.preprocess import prepare_inputs
from pairspec.train_steps import WeightAverage, degrade_targets

torch.set_num_threads(1)


@pytest.fixture
def fake_store(monkeypatch):
    from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

    monkeypatch.setattr(T, "_load_data", lambda cfg: (fake_twins(96, 0), fake_twins(64, 1), APOGEE_CORE_SCHEMA, GRID))


def test_ridge_baseline_fits_and_predicts_like_a_model(tmp_path, fake_store):
    best = T.train(config(tmp_path, "ridge", model=ModelSection(preset="ridge")), progress=False)
    meta = read_meta(best)
    assert meta["model_class"] == "ridge" and len(meta["ridge_alpha"]) == 3
    assert meta["calibration"] is not None
    model, _ = load_checkpoint(best)
    val = fake_twins(64, 1)
    with torch.no_grad():
        out = model(torch.from_numpy(val.x))
    stats = meta["label_stats"]
    teff = out["mean"][:, 0].numpy() * stats["std"][0] + stats["mean"][0]
    # Teff is a line depth in these noisy twins (S/N 10-80): a linear map of the pixels recovers it to
    # ~2 % of its 2000 K range (42 K measured), against a label spread of ~580 K
    assert np.std(teff - val.labels[:, 0]) < 80.0 < 0.2 * np.std(val.labels[:, 0])
    pred = LabelPredictor.from_checkpoint(best)
    assert pred.label_names == ["teff", "logg", "fe_h"]


def test_loss_kinds_and_recon_chi2_train(tmp_path, fake_store):
    for kind in ("beta_nll", "mse_var"):
        best = T.train(config(tmp_path, kind, epochs=1, label_loss=kind, recon_loss="chi2"), progress=False)
        lines = [json.loads(s) for s in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()]
        assert np.isfinite(lines[-1]["val_loss"]) and best.exists()
    with pytest.raises(ConfigError, match="label_loss must be one of"):
        apply_overrides(config(tmp_path), ["train.label_loss=mse"])


def test_model_options_reach_the_checkpoint(tmp_path, fake_store):
    shape = ModelSection(preset="tsn_tiny", depth=1, embed="local", label_head="flat", decoder_depth=1)
    best = T.train(config(tmp_path, "shape", model=shape, epochs=1), progress=False)
    model, meta = load_checkpoint(best)
    assert meta["model_kwargs"]["embed"] == "local" and model.local_weight.shape[0] == model.n_patches
    assert len(model.decoder) == 1 and model.label_head.in_features == model.embed_dim * (1 + model.n_patches)


def test_per_label_tokens_train_and_reload(tmp_path, fake_store):
    shape = ModelSection(preset="tsn_tiny", depth=1, label_head="per_label")
    best = T.train(config(tmp_path, "per_label", model=shape, epochs=1), progress=False)
    model, meta = load_checkpoint(best)
    assert meta["model_kwargs"]["label_head"] == "per_label"
    assert model.label_token.shape[1] == model.n_labels == len(meta["label_names"])


def test_linear_readout_starts_as_the_head_and_learns(tmp_path, fake_store):
    """The patch-token readout adds nothing before training (its output layer is zero), and a trained
    run carries it through the checkpoint to prediction."""
    plain = create_model("tsn_tiny", L, 3, depth=1, label_head="per_label")
    with_ro = create_model("tsn_tiny", L, 3, depth=1, label_head="per_label", linear_readout=4)
    missing = with_ro.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["readout.bias", "readout.weight", "readout_proj.bias", "readout_proj.weight"]
    x = torch.from_numpy(fake_twins(8, 2).x)
    with torch.no_grad():
        np.testing.assert_allclose(with_ro(x)["mean"].numpy(), plain(x)["mean"].numpy(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="linear_readout must be >= 0"):
        create_model("tsn_tiny", L, 3, linear_readout=-1)
    shape = ModelSection(preset="tsn_tiny", depth=1, label_head="per_label", linear_readout=4)
    best = T.train(config(tmp_path, "readout", model=shape, epochs=2), progress=False)
    model, meta = load_checkpoint(best)
    assert meta["model_kwargs"]["linear_readout"] == 4
    assert model.readout.in_features == 4 * model.n_patches and model.readout.weight.abs().max() > 0
    with torch.no_grad():
        out = LabelPredictor.from_checkpoint(best).network(torch.from_numpy(fake_twins(16, 1).x))
    assert torch.isfinite(out["mean"]).all() and torch.isfinite(out["log_var"]).all()


def test_ema_resumes_to_the_same_average(tmp_path, fake_store):
    T.train(config(tmp_path, "straight", ema=0.9), progress=False)
    T.train(config(tmp_path, "split", ema=0.9, max_steps=17), progress=False)
    T.train(config(tmp_path, "split", ema=0.9), progress=False)
    a, _ = load_checkpoint(tmp_path / "straight" / "best.pt")
    b, _ = load_checkpoint(tmp_path / "split" / "best.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-5), name
    raw, _ = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert not torch.allclose(raw.pos_embed, a.pos_embed, atol=1e-7)  # best.pt holds the average, not the raw weights


def test_weight_average_is_the_bias_corrected_mean_of_the_steps():
    model = torch.nn.Linear(3, 1)
    w0 = model.weight.detach().clone()
    decay, seen = 0.9, []
    avg = WeightAverage(model, decay)
    for step in range(6):
        with torch.no_grad():
            model.weight.add_(float(step + 1))
        seen.append(model.weight.detach().clone())
        avg.update(model, step)
        if step == 0:  # the first average is the first step's weights: the initialisation has no share
            assert torch.allclose(avg.state["weight"], seen[0])
    n = len(seen)
    w = torch.tensor([decay ** (n - 1 - i) for i in range(n)])
    expected = sum(wi * si for wi, si in zip(w, seen)) / w.sum()
    assert torch.allclose(avg.state["weight"], expected, atol=1e-5)
    assert not torch.allclose(avg.state["weight"], seen[-1]) and not torch.allclose(avg.state["weight"], w0)
    # late in a run the correction vanishes: the update is the plain decay
    before = avg.state["weight"].clone()
    avg.update(model, 10_000)
    assert torch.allclose(avg.state["weight"], decay * before + (1 - decay) * model.weight, atol=1e-6)


def test_degrade_targets_lowers_snr_and_drops_recon_weight():
    rng = np.random.default_rng(0)
    n = 64
    target = (1 - 0.3 * rng.random((n, L))).astype(np.float32)
    w = np.full((n, L), 150.0**2, np.float32)  # a S/N 150 target
    x = np.stack([target - 1, np.full_like(target, 0.9)], 1)
    batch = {"x": torch.from_numpy(x), "target": torch.from_numpy(target), "target_w": torch.from_numpy(w),
             "snr": torch.full((n,), 150.0)}
    out = degrade_targets(batch, 0.5, torch.Generator().manual_seed(1), snr_range=(10.0, 20.0))
    changed = ~torch.all(out["x"] == batch["x"], dim=(1, 2))
    assert 0.3 * n < changed.sum() < 0.7 * n
    noise = (out["x"][changed, 0] - (batch["target"][changed] - 1)).std(1)
    assert torch.all((noise > 1 / 22) & (noise < 1 / 9))  # the drawn S/N 10-20
    assert torch.all(out["target_w"][changed] == 0) and torch.all(out["target_w"][~changed] == w[0, 0])
    again = degrade_targets(batch, 0.5, torch.Generator().manual_seed(1), snr_range=(10.0, 20.0))
    assert torch.equal(again["x"], out["x"])  # deterministic for a generator: resume repeats it


def test_augmented_training_runs_and_resumes(tmp_path, fake_store):
    T.train(config(tmp_path, "straight", augment=0.5), progress=False)
    T.train(config(tmp_path, "split", augment=0.5, max_steps=17), progress=False)
    T.train(config(tmp_path, "split", augment=0.5), progress=False)
    a, _ = load_checkpoint(tmp_path / "straight" / "last.pt")
    b, _ = load_checkpoint(tmp_path / "split" / "last.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-5), name


def test_init_from_copies_matching_weights(tmp_path, fake_store, capsys):
    first = T.train(config(tmp_path, "first", epochs=1), progress=False)
    src, _ = load_checkpoint(first)
    tuned = T.train(config(tmp_path, "tuned", epochs=1, lr=1e-9, warmup_frac=0.0, init_from=str(first)),
                    progress=False)
    n_tensors = len(src.state_dict())
    assert f"train.init_from: {n_tensors} of {n_tensors} weight tensors (100% of the parameters)" in capsys.readouterr().out
    got, _ = load_checkpoint(tuned)
    assert torch.allclose(got.pos_embed, src.pos_embed, atol=1e-5)  # (a tiny lr barely moves them)
    other = create_model("tsn_tiny", L, 3, depth=1, embed_dim=48, num_heads=2)
    bad = tmp_path / "bad.pt"
    from pairspec.checkpoint import save_checkpoint

    save_checkpoint(bad, {k: torch.zeros(1) for k in other.state_dict()}, {"model_kwargs": {}})
    with pytest.raises(ValueError, match="no weight of this checkpoint fits"):
        T.train(config(tmp_path, "bad", epochs=1, init_from=str(bad)), progress=False)
    # a checkpoint of another model size: a few small tensors fit, the rest start fresh; said as a warning
    src_state = src.state_dict()
    few = {k: (src_state[k] if k in ("norm.weight", "norm.bias") else torch.zeros(1)) for k in src_state}
    save_checkpoint(tmp_path / "few.pt", few, {"model_kwargs": {"embed_dim": 384}, "preset": "tsn_base"})
    with pytest.warns(UserWarning, match=r"copied only 0% of the parameters: the checkpoint is another model \(tsn_base, 384"):
        T.train(config(tmp_path, "few", epochs=1, init_from=str(tmp_path / "few.pt")), progress=False)


def test_denoised_spectra_carry_a_per_pixel_sigma(tmp_path, monkeypatch):
    from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

    def precise(n, seed):  # targets of S/N 100: a one-epoch model misses them by far more than their noise
        tw = fake_twins(n, seed)
        tw.target_w = np.full_like(tw.target_w, 1e4)
        return tw

    monkeypatch.setattr(T, "_load_data", lambda cfg: (precise(96, 0), precise(64, 1), APOGEE_CORE_SCHEMA, GRID))
    best = T.train(config(tmp_path, "den", epochs=1), progress=False)
    prof = read_meta(best)["denoise_sigma"]
    table = np.asarray(prof["sigma"])
    assert table.shape == (4, L) and np.isfinite(table).all() and (table >= 0).all() and table.max() > 0
    pred = LabelPredictor.from_checkpoint(best)
    tw = fake_twins(5, 7)
    flux, ivar = tw.x[:, 0] + 1, np.full((5, L), 400.0, np.float32)
    out = pred.predict(flux, ivar, denoise=True)
    assert out["denoised_sigma"].shape == out["denoised"].shape == (5, L)
    b = np.clip(np.searchsorted(prof["snr_edges"], out["snr"], side="right") - 1, 0, 3)
    np.testing.assert_allclose(out["denoised_sigma"], table[b], rtol=1e-6)  # the row of each visit's S/N bin


def test_training_measures_the_denoised_sigma_with_the_cross_estimator_when_stars_have_3_visits(tmp_path, monkeypatch):
    from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

    def grouped(n, seed, per_star):  # val twins of stars with `per_star` visits each
        tw = fake_twins(n, seed)
        tw.star_index = np.arange(n) // per_star
        first = tw.star_index * per_star  # every visit of a star: the star's spectrum and labels, its own noise
        tw.target, tw.labels = tw.target[first], tw.labels[first]
        noise = np.random.default_rng(seed).normal(size=tw.target.shape) / tw.snr[:, None]
        tw.x[:, 0] = tw.target - 1 + noise
        tw.x[:, 1] = (tw.snr / (tw.snr + 10.0))[:, None]  # the weight channel of a visit at its S/N
        tw.target_w = np.full_like(tw.target_w, 1e4)  # targets of S/N 100 (the old estimator subtracts 1/w)
        return tw

    for per_star, estimator in ((4, "cross"), (2, "excess")):
        monkeypatch.setattr(T, "_load_data", lambda cfg, k=per_star: (fake_twins(96, 0), grouped(64, 1, k),
                                                                      APOGEE_CORE_SCHEMA, GRID))
        best = T.train(config(tmp_path, f"cross{per_star}", epochs=1), progress=False)
        prof = read_meta(best)["denoise_sigma"]
        table = np.asarray(prof["sigma"])
        assert prof["estimator"] == estimator
        assert table.shape == (4, L) and np.isfinite(table).all() and (table >= 0).all() and table.max() > 0


def test_profile_sigma_is_the_excess_rms_and_fills_empty_bins_from_the_nearest():
    from pairspec.train_steps import profile_sigma

    excess = np.zeros((4, 20))
    excess[0], excess[2] = 4 * 0.04 ** 2, 4 * 0.01 ** 2  # 4 values each of an excess variance 0.04^2, 0.01^2
    excess[2, 10] = -1.0  # less scatter than the target's own noise: a negative variance, floored at 0
    count_px = np.where(np.arange(4)[:, None] % 2 == 0, 4, 0) * np.ones((4, 20))
    sigma = profile_sigma(excess, count_px, np.array([4, 0, 4, 0]))
    np.testing.assert_allclose(sigma[0], 0.04, rtol=1e-6)
    np.testing.assert_allclose(sigma[2, :8], 0.01, rtol=1e-6)
    assert (sigma[2, 8:13] >= 0).all() and sigma[2, 10] < 0.01  # the 5-pixel smoothing spreads the dip
    np.testing.assert_array_equal(sigma[1], sigma[0])  # an empty bin takes the nearest (ties: the lower one)
    np.testing.assert_array_equal(sigma[3], sigma[2])


def test_cross_error_profile_is_not_fooled_by_a_wrong_ivar():
    """The denoised spectrum's per-pixel sigma: with visits whose stated ivar is 1.3x too pessimistic, the old
    estimator (residual^2 against the leave-one-out coadd less the coadd's stated noise) goes negative and
    floors at 0; the cross estimator with two independent half coadds recovers the true model error."""
    from pairspec.pairs import leave_one_out
    from pairspec.train_steps import cross_error_profile, half_coadds

    rng = np.random.default_rng(3)
    n_star, n_vis, n_pix, model_err, noise = 600, 5, 40, 0.005, 0.03
    truth = 1 - 0.3 * rng.random((n_star, n_pix))
    star = np.repeat(np.arange(n_star), n_vis)
    flux = truth[star] + noise * rng.normal(size=(star.size, n_pix))
    stated_ivar = np.full(flux.shape, 1 / (1.3 * noise**2))  # the survey says the noise is 14 % larger
    den = truth[star] + model_err * rng.normal(size=flux.shape)
    snr = np.full(star.size, 30.0)

    sigma, count = cross_error_profile(den, flux, stated_ivar, star, snr)
    assert count.tolist() == [0, star.size, 0, 0]
    np.testing.assert_allclose(np.median(sigma[1]), model_err, rtol=0.15)
    np.testing.assert_array_equal(sigma[0], sigma[1])  # empty bins take the nearest bin's profile
    assert (sigma > 0).all()  # floored at a quarter of the median: no pixel claims to be known exactly

    loo = np.concatenate([np.column_stack(leave_one_out(flux[star == s], stated_ivar[star == s]))
                          for s in range(n_star)])
    loo_f, loo_w = loo[:, :n_pix], loo[:, n_pix:]
    old = np.mean((den - loo_f) ** 2 - 1 / loo_w, axis=0)
    assert (old < 0).mean() > 0.9  # what the old estimator saw: a negative variance in nearly every pixel

    a, wa, b, wb = half_coadds(flux, stated_ivar, star)
    assert (wa > 0).all() and (wb > 0).all()
    first = flux[star == 0]  # visit 0 of star 0: halves are visits (1, 3) and (2, 4), never itself
    np.testing.assert_allclose(a[0], first[[1, 3]].mean(0), rtol=1e-5)
    np.testing.assert_allclose(b[0], first[[2, 4]].mean(0), rtol=1e-5)
    _, wa2, _, _ = half_coadds(flux[:2], stated_ivar[:2], np.zeros(2, int))  # a star of 2 visits: no halves
    assert (wa2 == 0).all()


def test_visits_from_inputs_inverts_the_network_input():
    from pairspec.preprocess import inputs_from_normalized
    from pairspec.train_steps import visits_from_inputs

    rng = np.random.default_rng(0)
    flux = 1 + 0.05 * rng.normal(size=(3, 50))
    ivar = rng.uniform(10, 1e4, size=(3, 50))
    ivar[0, :5] = 0  # bad pixels stay bad
    flux[1, 7] = 5.0  # a spike clipped in the input: no longer trusted
    f, iv = visits_from_inputs(inputs_from_normalized(flux, ivar))
    good = ivar > 0
    good[1, 7] = False
    np.testing.assert_allclose(f[good], flux[good], rtol=1e-6)
    np.testing.assert_allclose(iv[good], ivar[good], rtol=1e-3)
    assert (iv[~good] == 0).all()


def test_ridge_path_starts_at_the_ridge_solution(tmp_path, fake_store):
    ridge = T.train(config(tmp_path, "ridge", model=ModelSection(preset="ridge")), progress=False)
    shape = ModelSection(preset="tsn_tiny", depth=1, ridge_path=True)
    best = T.train(config(tmp_path, "path", model=shape, epochs=1, lr=1e-9, warmup_frac=0.0), progress=False)
    lin, _ = load_checkpoint(ridge)
    net, meta = load_checkpoint(best)
    x = torch.from_numpy(fake_twins(16, 5).x)
    with torch.no_grad():
        a, b = lin(x)["mean"], net(x)["mean"]
    # the untrained network adds (almost) nothing to the ridge path: its predictions are the ridge's
    assert torch.allclose(a, b, atol=1e-3) and meta["model_kwargs"]["ridge_path"] is True


def test_label_weights_scale_each_label_term():
    """train.label_weights multiplies each label's loss term: weight 0 takes a label out of the gradient,
    weights of 1 change nothing, other weights give the weighted sum."""
    from pairspec.models.tsn import TwinSpecNet

    g = torch.Generator().manual_seed(0)
    B, K, P = 16, 3, 40
    mean = torch.randn(B, K, generator=g, requires_grad=True)
    out = {"mean": mean, "log_var": torch.randn(B, K, generator=g) * 0.3, "recon": torch.zeros(B, P)}
    batch = {"labels": torch.randn(B, K, generator=g), "label_mask": torch.ones(B, K, dtype=torch.bool),
             "target": torch.ones(B, P), "target_w": torch.ones(B, P)}
    plain = TwinSpecNet.forward_loss(out, batch, recon_weight=0.0)["loss"]
    ones = TwinSpecNet.forward_loss(out, batch, recon_weight=0.0, label_weights=torch.ones(K))["loss"]
    assert torch.allclose(plain, ones, rtol=1e-6)
    w = torch.tensor([1.0, 0.0, 3.0])
    weighted = TwinSpecNet.forward_loss(out, batch, recon_weight=0.0, label_weights=w)["loss"]
    lv, y = out["log_var"], batch["labels"]
    per = 0.5 * (lv + (y - mean) ** 2 * torch.exp(-lv))
    assert torch.allclose(weighted, (per * w).sum() / (B * K), rtol=1e-5)
    weighted.backward()
    assert torch.all(mean.grad[:, 1] == 0) and torch.all(mean.grad[:, 0] != 0)


def test_label_weights_in_a_recipe(tmp_path, fake_store):
    from pairspec.train_steps import label_weight_vector

    cfg = apply_overrides(config(tmp_path, "w", epochs=1), ["train.label_weights={fe_h: 3}"])
    assert cfg.train.label_weights == {"fe_h": 3.0}
    assert label_weight_vector(cfg.train, ["teff", "logg", "fe_h"]).tolist() == [1.0, 1.0, 3.0]
    assert T.train(cfg, progress=False).exists()
    bad = apply_overrides(config(tmp_path, "bad", epochs=1), ["train.label_weights={mg_fe: 3}"])
    with pytest.raises(ValueError, match=r"label_weights names \['mg_fe'\], which this run does not train"):
        T.train(bad, progress=False)
    for value in ("{fe_h: -1}", "{}", "3", "{fe_h: yes}"):
        with pytest.raises(ConfigError, match="label_weights"):
            apply_overrides(config(tmp_path), [f"train.label_weights={value}"])


def test_detached_readout_sends_no_gradient_to_the_encoder():
    """readout_detach: the readout learns, but the encoder gets no gradient through it. With the label
    head zeroed the label means are the readout alone, so the encoder's gradient is the readout's."""
    x = torch.from_numpy(fake_twins(8, 2).x)
    grads = {}
    for detach in (False, True):
        model = create_model("tsn_tiny", L, 3, depth=1, label_head="per_label", linear_readout=4,
                             readout_detach=detach)
        torch.nn.init.normal_(model.readout.weight, std=0.1)
        torch.nn.init.zeros_(model.label_head.weight)
        model.forward_labels(model.forward_encoder(x), x[:, 0])[0].sum().backward()
        grads[detach] = (model.readout.weight.grad.abs().sum().item(),
                         sum(p.grad.abs().sum().item() for p in model.blocks.parameters() if p.grad is not None))
    assert grads[False][0] > 0 and grads[False][1] > 0
    assert grads[True][0] > 0 and grads[True][1] == 0


def test_readout_hidden_layer_starts_at_zero_and_trains(tmp_path, fake_store):
    """The readout's hidden layer (model.readout_hidden) adds nothing before training (the output layer is
    zero), needs the token projection, and reaches the checkpoint with weights that moved."""
    plain = create_model("tsn_tiny", L, 3, depth=1, label_head="per_label")
    with_mlp = create_model("tsn_tiny", L, 3, depth=1, label_head="per_label", linear_readout=4, readout_hidden=16)
    x = torch.from_numpy(fake_twins(8, 2).x)
    with_mlp.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        np.testing.assert_allclose(with_mlp(x)["mean"].numpy(), plain(x)["mean"].numpy(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="readout_hidden needs linear_readout"):
        create_model("tsn_tiny", L, 3, readout_hidden=16)
    with pytest.raises(ValueError, match="readout_hidden must be >= 0"):
        create_model("tsn_tiny", L, 3, linear_readout=4, readout_hidden=-1)
    shape = ModelSection(preset="tsn_tiny", depth=1, label_head="per_label", linear_readout=4, readout_hidden=16)
    cfg = config(tmp_path, "mlp", model=shape, epochs=2)
    best = T.train(cfg, progress=False)
    model, meta = load_checkpoint(best)
    torch.manual_seed(cfg.run.seed)  # the initial weights, as build_model draws them
    start = create_model("tsn_tiny", **{k: v for k, v in meta["model_kwargs"].items() if k != "preset"})
    assert meta["model_kwargs"]["readout_hidden"] == 16
    assert model.readout_mlp[0].out_features == 16 and model.readout.in_features == 16
    assert model.readout.weight.abs().max() > 0  # the output layer left zero
    assert not torch.allclose(model.readout_mlp[0].weight, start.readout_mlp[0].weight)  # the hidden layer learned


def test_label_decoder_makes_the_spectrum_from_the_labels(tmp_path, fake_store):
    """model.label_decoder: a second reconstruction made from the labels alone: in training the survey's
    labels where present (the predicted ones where missing), in prediction the network's own; it sends no
    gradient into the label means, both reconstructions enter the loss, and prediction's denoised
    spectrum is the label decoder's."""
    model = create_model("tsn_tiny", L, 3, depth=1, label_decoder=32)
    x = torch.from_numpy(fake_twins(6, 2).x)
    labels = torch.randn(6, 3)
    mask = torch.tensor([[True, True, False]] * 6)
    out = model(x, labels, mask)
    plain = model(x)
    torch.testing.assert_close(out["recon_labels"], model.label_decoder(torch.where(mask, labels, plain["mean"].detach())))
    torch.testing.assert_close(plain["recon_labels"], model.label_decoder(plain["mean"].detach()))
    model.zero_grad()
    plain["recon_labels"].pow(2).sum().backward()
    assert model.label_head.weight.grad is None or model.label_head.weight.grad.abs().max() == 0
    assert model.label_decoder[0].weight.grad.abs().max() > 0
    batch = {"target": torch.ones(6, L) + 0.1, "target_w": torch.ones(6, L), "labels": labels, "label_mask": mask}
    with_both = model.forward_loss(out, batch, recon_loss="chi2")["recon_loss"]
    token_only = model.forward_loss({k: v for k, v in out.items() if k != "recon_labels"}, batch,
                                    recon_loss="chi2")["recon_loss"]
    assert with_both > token_only
    shape = ModelSection(preset="tsn_tiny", depth=1, label_decoder=32)
    best = T.train(config(tmp_path, "labdec", model=shape, epochs=2, recon_loss="chi2"), progress=False)
    _, meta = load_checkpoint(best)
    assert meta["model_kwargs"]["label_decoder"] == 32
    pred = LabelPredictor.from_checkpoint(best)
    flux, ivar = np.ones((3, GRID.npix), np.float32), np.full((3, GRID.npix), 1e4, np.float32)
    flux[:, ::7] = 0.8
    got = pred.predict(flux, ivar, denoise=True)
    x = torch.from_numpy(prepare_inputs(flux, ivar, pred.grid))
    with torch.no_grad():
        expect = pred.network(x)["recon_labels"].numpy() + 1.0
    np.testing.assert_allclose(got["denoised"][:, pred.model_pixels], expect, rtol=0, atol=1e-5)
