"""pairspec.refit: the Gauss-Newton fit through a label decoder, the mix chosen on val, and prediction."""

import numpy as np
import pytest
import torch

from pairspec import refit as R


def _decoder(n_labels=3, n_pix=200, seed=0):
    torch.manual_seed(seed)
    dec = torch.nn.Sequential(torch.nn.Linear(n_labels, 32), torch.nn.GELU(), torch.nn.Linear(32, n_pix))
    with torch.no_grad():
        dec[2].weight.mul_(0.3)
    return dec


def test_flat_refit_recovers_the_labels_within_the_noise():
    # visits made by the decoder itself from known labels, plus Gaussian noise at S/N 50: a fit started
    # 1 sigma off must land on the truth within its formal errors (the pull's std near 1)
    dec = _decoder()
    rng = np.random.default_rng(1)
    z_true = torch.from_numpy(rng.normal(size=(400, 3)))
    noise = 0.02
    with torch.no_grad():
        y = dec.double()(z_true) + torch.from_numpy(rng.normal(scale=noise, size=(400, 200)))
    w = torch.full_like(y, 1 / noise ** 2)
    z, formal = R.refit_standardised(dec, y, w, z_true + 1.0)
    pull = ((z - z_true) / formal).numpy()
    assert np.all(np.abs(pull.mean(0)) < 0.2)
    assert np.all(np.abs(pull.std(0) - 1) < 0.15)


def test_network_prior_pulls_and_outliers_are_clipped():
    dec = _decoder()
    z_true = torch.zeros(2, 3, dtype=torch.float64)
    with torch.no_grad():
        y = dec.double()(z_true)
    w = torch.full_like(y, 1e4)
    start = torch.full((2, 3), 0.5, dtype=torch.float64)
    # a prior far tighter than the data keeps the start; a loose one lets the data decide
    tight, _ = R.refit_standardised(dec, y, w, start, prior_mean=start, prior_sigma=torch.full_like(start, 1e-5))
    loose, _ = R.refit_standardised(dec, y, w, start, prior_mean=start, prior_sigma=torch.full_like(start, 1e3))
    assert torch.allclose(tight, start, atol=1e-3)
    assert torch.allclose(loose, z_true, atol=1e-3)
    # one unflagged spike of 50 sigma in a pixel: the clip drops it and the fit stays on the truth
    y_spike = y.clone()
    y_spike[:, 17] += 0.5
    clipped, _ = R.refit_standardised(dec, y_spike, w, start)
    unclipped, _ = R.refit_standardised(dec, y_spike, w, start, clip=0)
    assert (clipped - z_true).abs().max() < 1e-3 < (unclipped - z_true).abs().max()


def test_bad_pixels_and_nan_do_not_enter():
    dec = _decoder()
    z_true = torch.zeros(1, 3, dtype=torch.float64)
    with torch.no_grad():
        y = dec.double()(z_true)
    y[:, :50] = float("nan")
    w = torch.full_like(y, 1e4)
    w[:, 50:60] = 0.0
    y[:, 50:60] = 7.0  # garbage behind ivar 0
    z, formal = R.refit_standardised(dec, y, w, z_true + 0.3)
    assert torch.isfinite(formal).all()
    assert (z - z_true).abs().max() < 1e-3


def test_inputs_to_target_inverts_the_input_encoding():
    from pairspec import preprocess

    rng = np.random.default_rng(2)
    nf = (1 + rng.normal(scale=0.05, size=(3, 64))).astype(np.float32)
    niv = rng.uniform(25, 1e4, size=(3, 64)).astype(np.float32)
    niv[0, :5] = 0
    x = torch.from_numpy(preprocess.inputs_from_normalized(nf, niv))
    y, ivar = R.inputs_to_target(x)
    good = niv > 0
    np.testing.assert_allclose(y.numpy()[good], nf[good] - 1, atol=1e-6)
    # float32 weight channel: relative error of the recovered ivar stays below 1e-3 up to S/N 100
    np.testing.assert_allclose(ivar.numpy()[good], niv[good], rtol=1e-3)
    assert np.all(ivar.numpy()[~good] == 0)


def test_choose_mix_picks_the_better_estimator_per_label_and_bin():
    rng = np.random.default_rng(3)
    n = 4000
    truth = rng.normal(size=(n, 2))
    snr = rng.uniform(5, 100, n)
    a = truth + rng.normal(scale=[0.1, 0.5], size=(n, 2))  # network: good in label 0, poor in label 1
    b = truth + rng.normal(scale=[0.5, 0.1], size=(n, 2))  # refit: the other way round
    survey = truth + rng.normal(scale=0.2, size=(n, 2))  # the reference's own noise does not move the choice
    w = R.choose_mix(a, b, survey, snr)
    # inverse-variance optimum: 0.25 / 0.26 = 0.96 of the better one
    assert all(0.85 <= x <= 1.0 for x in w[0]) and all(0.0 <= x <= 0.15 for x in w[1])
    mixed = R.apply_mix(a, b, snr, w)
    assert np.std(mixed[:, 1] - truth[:, 1]) < 0.11
    # equal, independent errors: close to half and half; too few visits in a bin: the network's label
    c = truth + rng.normal(scale=0.3, size=(n, 2))
    assert all(0.35 <= x <= 0.65 for x in R.choose_mix(a * 0 + c, truth + rng.normal(scale=0.3, size=(n, 2)), survey, snr)[0])
    assert R.choose_mix(a[:20], b[:20], survey[:20], snr[:20]) == [[1.0] * 4, [1.0] * 4]
    # bagged over stars (4 visits each): the same choice within the grid's step
    star = np.arange(n) // 4
    wb = R.choose_mix(a, b, survey, snr, star=star, n_boot=10)
    assert np.abs(np.asarray(wb) - np.asarray(w)).max() <= 0.1
    # out of bag: each star's mix from the resamples that left it out, close to the in-sample one here
    wo, oob = R.choose_mix(a, b, survey, snr, star=star, n_boot=10, return_oob=True)
    assert wo == wb and oob.shape == a.shape
    assert np.std(oob[:, 1] - truth[:, 1]) < 0.11
    assert np.all((oob >= np.minimum(a, b) - 1e-12) & (oob <= np.maximum(a, b) + 1e-12))  # a mix of the two
    with pytest.raises(ValueError, match="return_oob"):
        R.choose_mix(a, b, survey, snr, return_oob=True)
    # a NaN refit keeps the network's label
    b2 = b.copy()
    b2[0] = np.nan
    assert np.allclose(R.apply_mix(a, b2, snr, w)[0], a[0])


@pytest.fixture
def snr_store(monkeypatch):
    """The fake twins of test_train with a weight channel that says each visit's S/N (the refit reads the
    visit's ivar from it) and a val split large enough for three S/N bins of >= 30 visits."""
    from test_train import GRID, fake_twins

    from pairspec import train as T
    from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

    def with_weights(tw):
        tw.x[:, 1] = (tw.snr / (tw.snr + 10.0))[:, None]
        return tw

    monkeypatch.setattr(T, "_load_data", lambda cfg: (with_weights(fake_twins(96, 0)), with_weights(fake_twins(200, 1)),
                                                       APOGEE_CORE_SCHEMA, GRID))


def test_guard_drops_refits_far_outside_the_networks_sigma():
    net = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, np.nan]])
    sigma = np.array([[1.0, 0.1], [1.0, 0.1], [1.0, 0.1]])
    refit = np.array([[4.9, 1.0 - 0.51], [-5.1, 1.2], [0.3, 1.0]])
    kept = R.guard(net, refit, sigma, 5.0)
    assert kept[0, 0] == 4.9 and np.isnan(kept[0, 1]) and np.isnan(kept[1, 0]) and kept[1, 1] == 1.2
    assert kept[2, 0] == 0.3  # a NaN network label gives no pull (the mix keeps its NaN anyway)
    np.testing.assert_array_equal(R.guard(net, refit, sigma, None), refit)  # older checkpoints: no guard
    # the mix keeps the network's label where the refit was dropped
    mixed = R.apply_mix(net[:2], kept[:2], np.array([10.0, 10.0]), [[0.0] * 4, [0.5] * 4])
    np.testing.assert_allclose(mixed, [[4.9, 1.0], [0.0, 1.1]])


def test_training_stores_the_mix_and_prediction_applies_it(tmp_path, snr_store, monkeypatch):
    from test_train import GRID, config

    from pairspec import train as T
    from pairspec.checkpoint import read_meta
    from pairspec.config import ModelSection
    from pairspec.inference import LabelPredictor

    shape = ModelSection(preset="tsn_tiny", depth=1, label_decoder=32)
    best = T.train(config(tmp_path, "mix", model=shape, epochs=2, recon_loss="chi2"), progress=False)
    meta = read_meta(best)
    mix = meta["refit"]["weight_of_network"]
    assert np.asarray(mix).shape == (3, 4) and all(0.0 <= a <= 1.0 for row in mix for a in row)
    assert meta["refit"]["calibration"]["scale"] and meta["refit"]["n_val"] == 200
    assert set(meta["refit"]["val_sigma_against_survey"]) == {"network", "refit", "mixed"}

    pred = LabelPredictor.from_checkpoint(best)
    assert pred.has_refit
    rng = np.random.default_rng(4)
    flux = (1 + rng.normal(scale=0.02, size=(40, GRID.npix))).astype(np.float32)
    flux[:, ::9] -= 0.2
    ivar = np.full(flux.shape, 2500.0, np.float32)
    got = pred.predict(flux, ivar, denoise=True, return_refit=True)
    assert got["refit"]
    assert meta["refit"]["max_pull"] == R.MAX_PULL and len(meta["refit"]["n_guarded"]) == 3
    kept = R.guard(got["labels_network"], got["labels_refit"], got["sigma_network"], R.MAX_PULL)
    expect = R.apply_mix(got["labels_network"], kept, got["snr"], mix)
    np.testing.assert_allclose(got["labels"], expect, rtol=0, atol=1e-9)
    # the denoised spectrum is the decoder's spectrum of the labels returned
    z = torch.from_numpy((got["labels"] - pred.label_mean) / pred.label_std).float()
    with torch.no_grad():
        spec = pred.model.label_decoder(z).numpy() + 1.0
    np.testing.assert_allclose(got["denoised"][:, pred.model_pixels], spec, rtol=0, atol=1e-5)
    plain = pred.predict(flux, ivar)
    off = pred.predict(flux, ivar, refit=False)
    assert not off["refit"]
    np.testing.assert_allclose(off["labels"], got["labels_network"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(plain["labels"], got["labels"], rtol=0, atol=1e-9)

    # a refit that failed (here: forced 100 sigma off for a label the mix had moved) leaves that label to
    # the network, and nothing else changes
    moved = np.argwhere(got["labels"] != got["labels_network"])
    assert moved.size, "the mix moved no label: nothing to break"
    i, k = (int(v) for v in moved[0])
    assert mix[k][int(R.snr_bin_index(got["snr"][i:i + 1])[0])] < 1  # its bin's weight of the network
    real = R.refit_from_inputs

    def broken(*args, **kwargs):
        z, formal = real(*args, **kwargs)
        z[i, k] += 100.0
        return z, formal

    with monkeypatch.context() as m:
        m.setattr(R, "refit_from_inputs", broken)  # where predict's labels_returned calls it
        bad = pred.predict(flux, ivar, return_refit=True)
    assert bad["labels"][i, k] == got["labels_network"][i, k]
    others = np.ones(got["labels"].shape, dtype=bool)
    others[i, k] = False
    np.testing.assert_allclose(bad["labels"][others], got["labels"][others], rtol=0, atol=1e-9)

    # train.refit: false keeps the network's labels in prediction
    best_off = T.train(config(tmp_path, "nomix", model=shape, epochs=1, recon_loss="chi2", refit=False), progress=False)
    assert "refit" not in read_meta(best_off)
    assert not LabelPredictor.from_checkpoint(best_off).has_refit


def test_return_refit_needs_a_label_decoder(tmp_path, snr_store):
    from test_train import GRID, config

    from pairspec import train as T
    from pairspec.inference import LabelPredictor

    best = T.train(config(tmp_path, "plain", epochs=1), progress=False)
    pred = LabelPredictor.from_checkpoint(best)
    assert not pred.has_refit
    flux, ivar = np.ones((2, GRID.npix), np.float32), np.full((2, GRID.npix), 1e4, np.float32)
    assert not pred.predict(flux, ivar)["refit"]
    with pytest.raises(ValueError, match="no label decoder"):
        pred.predict(flux, ivar, return_refit=True)


def test_predict_writes_the_mix_or_with_refit_false_the_networks_labels(tmp_path, snr_store, monkeypatch):
    import test_predict
    from astropy.table import Table
    from test_train import GRID, config

    from pairspec import train as T
    from pairspec.config import ModelSection
    from pairspec.inference import LabelPredictor
    from pairspec.predict import predict

    monkeypatch.setattr(test_predict, "NPIX", GRID.npix)
    monkeypatch.setattr(test_predict, "GRID", GRID)
    store = test_predict.FakeStore(n_stars=6, seed=1)
    best = T.train(config(tmp_path, "cat", model=ModelSection(preset="tsn_tiny", depth=1, label_decoder=32), epochs=1,
                          recon_loss="chi2"), progress=False)
    pred = LabelPredictor.from_checkpoint(best)
    expect = {True: pred.predict(store.flux, store.ivar)["labels"],
              False: pred.predict(store.flux, store.ivar, refit=False)["labels"]}
    assert np.nanmax(np.abs(expect[True] - expect[False])) > 0  # the mix moves these labels
    for refit in (True, False):
        res = predict(str(best), store, tmp_path / f"cat{refit}.fits", progress=False, refit=refit)
        visits = Table.read(res.visit_path, hdu="VISITS")
        assert visits.meta["REFIT"] is refit
        good = np.isfinite(visits["teff"])
        np.testing.assert_allclose(np.asarray(visits["teff"])[good], expect[refit][good, 0], rtol=1e-6)


def test_evaluate_reports_the_networks_own_labels_beside_the_mix(tmp_path):
    import test_evaluate as TE

    from pairspec import evaluate as E

    truth, _ = TE._build(tmp_path)

    class RefitPredictor(TE.FakePredictor):
        """The mix (truth + noise) and, as the network's own labels, the same with three times the noise."""
        has_refit, refit = True, True

        def predict(self, flux, ivar, batch_size=256, denoise=False, return_refit=False):
            out = super().predict(flux, ivar, batch_size, denoise)
            if return_refit:
                idx = np.rint(flux[:, 0]).astype(int)
                out["labels_network"] = self.truth[idx] + 3 * TE.NOISE * self.rng.normal(size=(len(idx), 4))
                out["labels_refit"] = out["labels"]
                out["sigma_network"] = out["sigma_visit_network"] = np.tile(3 * TE.NOISE, (len(idx), 1))
            return out

    m = E.evaluate(RefitPredictor(truth), str(tmp_path / "store.zarr"), split="all", truth=str(tmp_path / "truth.fits"),
                   out_dir=str(tmp_path / "report"), progress=False, plots=False)
    mix, net = m["scatter"]["tsn"]["truth"]["teff"]["all"]["sigma"], m["scatter"]["tsn_network"]["truth"]["teff"]["all"]["sigma"]
    assert net == pytest.approx(3 * mix, rel=0.3)
    assert m["calibration"]["tsn_network"]["truth"]["teff"]["z_std"] == pytest.approx(1.0, abs=0.25)
    assert "tsn_network" not in m["timings"] and m["timings"]["tsn"]["spectra_per_s"] > 0
