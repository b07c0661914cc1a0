"""train.decoder_labels: network — the denoised product's own decoder, learned from the network's star labels."""

import numpy as np
import pytest
import torch
from test_refit import snr_store  # noqa: F401 - the fixture

from pairspec import product_decoder as P
from pairspec.models.tsn import label_decoder_mlp


def test_fit_decoder_learns_a_known_map():
    # targets made by a fixed linear map of three labels plus noise at S/N 100: the chi^2 per pixel must fall
    # from the untrained decoder's to within a few of the noise's own (1)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1024, 3)).astype(np.float32)
    A = rng.normal(scale=0.05, size=(3, 60)).astype(np.float32)
    noise = 0.01
    target = 1.0 + z @ A + rng.normal(scale=noise, size=(1024, 60)).astype(np.float32)
    weight = np.full(target.shape, 1 / noise ** 2, np.float32)
    weight[:, 7] = 0.0  # a bad pixel never enters the loss
    target[:, 7] = 1e6
    torch.manual_seed(0)
    dec = label_decoder_mlp(3, 32, 60)
    losses = P.fit_decoder(dec, z, target, weight, epochs=40, seed=1, batch_size=64)
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    assert losses[0] > 10 and losses[-1] < 3.0, losses[::10]
    with torch.no_grad():
        fresh = rng.normal(size=(200, 3)).astype(np.float32)
        err = dec(torch.from_numpy(fresh)).numpy() - fresh @ A
    assert np.sqrt(np.mean(np.delete(err, 7, axis=1) ** 2)) < 0.8 * noise  # closer than one noisy target (0.52 here)


def test_config_needs_a_label_decoder():
    from pairspec.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="model.label_decoder"):
        from_dict({"data": {"store": "s.zarr"}, "train": {"decoder_labels": "network"}})
    with pytest.raises(ConfigError, match="decoder_labels"):
        from_dict({"data": {"store": "s.zarr"}, "model": {"label_decoder": 8}, "train": {"decoder_labels": "truth"}})
    with pytest.raises(ConfigError, match="data.stream"):
        from_dict({"data": {"store": "s.zarr", "stream": True}, "model": {"label_decoder": 8},
                   "train": {"decoder_labels": "network"}})


@pytest.fixture
def trained(tmp_path, snr_store):  # noqa: F811 - the imported fixture
    from test_train import config

    from pairspec import train as T
    from pairspec.config import ModelSection

    shape = ModelSection(preset="tsn_tiny", depth=1, label_decoder=32)
    runs = {kind: T.train(config(tmp_path, kind, model=shape, epochs=2, recon_loss="chi2", decoder_labels=kind,
                                 decoder_epochs=3, decoder_width=16 if kind == "network" else None), progress=False)
            for kind in ("survey", "network")}
    return runs, T


def test_training_adds_the_product_decoder_and_prediction_uses_it(trained):
    from test_train import GRID

    from pairspec.checkpoint import read_meta
    from pairspec.inference import LabelPredictor

    runs, _ = trained
    meta, meta_s = read_meta(runs["network"]), read_meta(runs["survey"])
    info = meta["product_decoder"]
    assert meta["model_kwargs"]["product_decoder"] == 16 and "product_decoder" not in meta_s["model_kwargs"]
    assert info["labels"] == "network" and info["epochs"] == 3 and info["width"] == 16 and info["n_twins"] == 96 and info["n_stars"] > 10
    assert np.isfinite(info["final_loss"])

    pred, pred_s = LabelPredictor.from_checkpoint(runs["network"]), LabelPredictor.from_checkpoint(runs["survey"])
    rng = np.random.default_rng(4)
    flux = (1 + rng.normal(scale=0.02, size=(30, GRID.npix))).astype(np.float32)
    flux[:, ::9] -= 0.2
    ivar = np.full(flux.shape, 2500.0, np.float32)
    got, got_s = pred.predict(flux, ivar, denoise=True), pred_s.predict(flux, ivar, denoise=True)
    # the stage runs after the epochs and touches neither the labels nor their calibration
    np.testing.assert_allclose(got["labels"], got_s["labels"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["sigma"], got_s["sigma"], rtol=0, atol=1e-6)
    # the denoised spectrum is the product decoder's spectrum of the labels returned, not the label decoder's
    z = torch.from_numpy((got["labels"] - pred.label_mean) / pred.label_std).float()
    with torch.no_grad():
        product = pred.model.product_decoder(z).numpy() + 1.0
        label_dec = pred.model.label_decoder(z).numpy() + 1.0
    pix = pred.model_pixels
    np.testing.assert_allclose(got["denoised"][:, pix], product, rtol=0, atol=1e-5)
    assert np.max(np.abs(product - label_dec)) > 1e-3
    assert meta["denoise_sigma"]["sigma"] and np.isfinite(got["denoised_sigma"][:, pix]).all()
    # pairspec info says which decoder makes the product
    from pairspec.info import describe_checkpoint

    assert "product decoder" in describe_checkpoint(str(runs["network"]))["text"]
    assert "the label decoder" in describe_checkpoint(str(runs["survey"]))["denoised"]


def test_the_denoised_spectrum_of_a_forward_pass_is_the_products():
    # what the per-pixel uncertainty profile (train_steps.denoise_error_profile) measures: the product
    # decoder's spectrum where there is one, else the label decoder's, else the token reconstruction
    from pairspec.models.tsn import TwinSpecNet

    torch.manual_seed(0)
    x = torch.randn(5, 2, 64)
    plain = TwinSpecNet(64, 3, patch_size=16, embed_dim=16, depth=1, num_heads=2).eval()
    with_dec = TwinSpecNet(64, 3, patch_size=16, embed_dim=16, depth=1, num_heads=2, label_decoder=8).eval()
    with_prod = TwinSpecNet(64, 3, patch_size=16, embed_dim=16, depth=1, num_heads=2, label_decoder=8,
                            product_decoder=8).eval()
    with torch.no_grad():
        out = plain(x)
        assert torch.equal(plain.denoised_of(out), out["recon"])
        out = with_dec(x)
        assert torch.equal(with_dec.denoised_of(out), with_dec.label_decoder(out["mean"]))
        out = with_prod(x)
        got = with_prod.denoised_of(out)
        assert torch.equal(got, with_prod.product_decoder(out["mean"]))
        assert not torch.allclose(got, with_prod.label_decoder(out["mean"]))
    with pytest.raises(ValueError, match="label_decoder"):
        TwinSpecNet(64, 3, patch_size=16, embed_dim=16, depth=1, num_heads=2, product_decoder=8)


def test_star_labels_are_each_stars_combination_of_its_twins(trained):
    from pairspec.calibration import split_sigma
    from pairspec.catalog import combine_visits
    from pairspec.checkpoint import load_checkpoint
    from pairspec.refit import labels_returned

    runs, T = trained
    model, meta = load_checkpoint(runs["survey"])
    twins, _, _, _ = T._load_data(None)
    lab = P.star_labels_of_twins(model, meta, twins.x, twins.snr, twins.star_index, "cpu", batch_size=40)
    star = np.asarray(twins.star_index)
    for s in np.unique(star):  # every twin of a star carries the same label
        assert np.ptp(lab[star == s], axis=0).max() == 0.0
    # and it is the inverse-variance mean, with the refit calibration's visit part, of the labels predict returns
    mu = np.asarray(meta["label_stats"]["mean"])
    sd = np.asarray(meta["label_stats"]["std"])
    with torch.inference_mode():
        x = torch.from_numpy(np.asarray(twins.x))
        out = model(x)
        per_twin, _, _ = labels_returned(model.label_decoder, x, out["mean"], out["log_var"], mu, sd,
                                         np.asarray(twins.snr), meta["refit"], meta["calibration"])
    sigma = np.exp(0.5 * out["log_var"].numpy().astype(np.float64)) * sd
    sig, sig_v, _ = split_sigma(sigma, twins.snr, meta["refit"]["calibration"], per_twin)
    uniq, inv = np.unique(star, return_inverse=True)
    expect = combine_visits(inv, uniq.size, per_twin, sig, np.zeros(star.size, np.int32), sigma_visit=sig_v)["labels"]
    np.testing.assert_allclose(lab, expect[inv], rtol=0, atol=1e-6 * np.abs(expect).max())


def test_the_stage_benchmark_adds_a_decoder_to_a_finished_checkpoint(trained, tmp_path):
    from benchscript import load

    from pairspec.checkpoint import load_checkpoint

    runs, _ = trained
    stage = load("product_decoder_stage")
    cache = tmp_path / "labels.npy"
    first = stage.main([str(runs["survey"]), str(tmp_path / "a.pt"), "--epochs", "2", "--width", "8",
                        "--labels-cache", str(cache)])
    assert cache.exists() and first["width"] == 8 and first["epochs"] == 2
    second = stage.main([str(runs["survey"]), str(tmp_path / "b.pt"), "--epochs", "2", "--width", "8",
                         "--labels-cache", str(cache)])  # the same labels from the cache: the same decoder
    a, _ = load_checkpoint(tmp_path / "a.pt")
    b, meta = load_checkpoint(tmp_path / "b.pt")
    assert second["final_loss"] == first["final_loss"] and meta["model_kwargs"]["product_decoder"] == 8
    for (name, p), q in zip(a.product_decoder.state_dict().items(), b.product_decoder.state_dict().values()):
        assert torch.equal(p, q), name
    orig, _ = load_checkpoint(runs["survey"])  # everything else is the checkpoint's own
    for name, p in orig.state_dict().items():
        assert torch.equal(p, b.state_dict()[name]), name


def test_training_a_finished_run_again_remakes_its_stages(trained):
    """The same command rerun on a finished run (resume): no epoch is trained, the post-training stages run
    again from best.pt, whose product decoder the model built from the recipe does not have."""
    from pairspec.checkpoint import load_checkpoint, read_train_state
    from pairspec.config import load_recipe

    runs, T = trained
    before = read_train_state(runs["network"])[0]
    cfg = load_recipe(runs["network"].parent / "config.yaml")
    assert T.train(cfg, progress=False) == runs["network"]
    model, meta = load_checkpoint(runs["network"])
    assert meta["model_kwargs"]["product_decoder"] == 16 and meta["product_decoder"]["width"] == 16
    after = model.state_dict()
    for k, v in after.items():  # the network's own weights are those of the first run
        if not k.startswith("product_decoder."):
            assert torch.equal(v.cpu(), before[k].cpu()), k
    assert any(k.startswith("product_decoder.") for k in after)
