"""LabelPredictor: checkpoint round trip, batching, bad rows, denoising, calibration, specutils input."""

import numpy as np
import pytest
import torch

from pairspec import data, preprocess
from pairspec.checkpoint import load_checkpoint, read_meta, save_checkpoint
from pairspec.grid import LogLinearGrid
from pairspec.inference import LabelPredictor
from pairspec.models import create_model, preset_kwargs
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

torch.set_num_threads(1)
GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=300, blocks=((10, 140), (160, 290)))
SCHEMA = APOGEE_CORE_SCHEMA.subset(["teff", "logg"])


def make_checkpoint(path, calibration=None, seed=0):
    n_pix = data.model_pixels(GRID).size  # 260
    kwargs = preset_kwargs("tsn_tiny", n_pix, 2, depth=1)
    torch.manual_seed(seed)
    model = create_model("tsn_tiny", **kwargs)
    stats = data.LabelStats(mean=np.array([5000.0, 3.0], np.float32), std=np.array([500.0, 1.0], np.float32),
                            lo=np.array([3500.0, 0.5], np.float32), hi=np.array([7000.0, 5.0], np.float32))
    meta = dict(preset="tsn_tiny", model_kwargs=kwargs, config={}, schema=SCHEMA.to_dict(), grid=GRID.to_dict(),
                label_stats=stats.to_dict(), label_names=SCHEMA.names, label_lo=[3500.0, 0.5],
                label_hi=[7000.0, 5.0], n_model_pix=n_pix, calibration=calibration, pairspec_version="test",
                epoch=1, step=10, n_parameters=1)
    save_checkpoint(path, model.state_dict(), meta)
    return model, stats


def spectra(n, seed=1):
    rng = np.random.default_rng(seed)
    pix = np.arange(GRID.npix)
    cont = 1000 * (1 + 0.1 * np.sin(pix / 80.0))
    line = 1 - 0.3 * np.exp(-0.5 * ((pix - 70) / 3.0) ** 2) - 0.2 * np.exp(-0.5 * ((pix - 220) / 3.0) ** 2)
    snr = rng.uniform(10, 100, n)[:, None]
    flux = cont * line * (1 + rng.normal(size=(n, GRID.npix)) / snr)
    ivar = (snr / (cont * line)) ** 2 * np.ones((n, 1))
    return flux.astype(np.float32), ivar.astype(np.float32), snr[:, 0]


def test_round_trip_matches_the_model(tmp_path):
    model, stats = make_checkpoint(tmp_path / "m.pt")
    pred = LabelPredictor.from_checkpoint(tmp_path / "m.pt")
    assert pred.label_names == ["teff", "logg"] and pred.grid == GRID
    assert np.allclose(pred.label_lo, [3500, 0.5]) and pred.source.endswith("m.pt")
    flux, ivar, snr = spectra(7)
    out = pred.predict(flux, ivar, batch_size=3)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(preprocess.prepare_inputs(flux, ivar, GRID)))
    assert np.allclose(out["labels"], ref["mean"].numpy() * stats.std + stats.mean, rtol=1e-5)
    assert np.allclose(out["sigma"], np.exp(0.5 * ref["log_var"].numpy()) * stats.std, rtol=1e-5)
    again = LabelPredictor.from_checkpoint(tmp_path / "m.pt").predict(flux, ivar, batch_size=3)
    assert np.array_equal(out["labels"], again["labels"]) and np.array_equal(out["sigma"], again["sigma"])
    one_batch = pred.predict(flux, ivar, batch_size=256)  # batching changes only float rounding
    assert np.allclose(out["labels"], one_batch["labels"], rtol=1e-6)
    assert np.allclose(out["snr"], snr, rtol=0.15)  # median flux*sqrt(ivar) recovers the S/N
    assert np.all(out["frac_bad"] == 0)
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert meta["step"] == 10 and read_meta(tmp_path / "m.pt")["preset"] == "tsn_tiny"


def test_bad_rows_give_finite_output_and_denoised_layout(tmp_path):
    make_checkpoint(tmp_path / "m.pt")
    pred = LabelPredictor.from_checkpoint(tmp_path / "m.pt")
    flux, ivar, _ = spectra(4)
    ivar[0] = 0.0  # all-bad row with finite flux
    flux[1, :] = np.nan  # NaN flux is treated as bad pixels
    ivar[2, 10:75] = 0.0  # half of the first block bad
    out = pred.predict(flux, ivar, denoise=True)
    assert out["frac_bad"][0] == 1 and out["frac_bad"][1] == 1
    assert out["frac_bad"][2] == pytest.approx(65 / 260)
    assert np.isnan(out["snr"][0]) and np.isfinite(out["snr"][2])
    # rows without one usable pixel: nothing seen, nothing returned (the network's prior with ordinary
    # sigmas used to come back and looked like a measurement); the others are finite
    for key in ("labels", "sigma", "sigma_visit", "sigma_star"):
        assert np.all(np.isnan(out[key][:2])) and np.all(np.isfinite(out[key][2:])), key
    den = out["denoised"]
    assert den.shape == (4, 300) and den.dtype == np.float32
    usable = GRID.usable()
    assert np.all(np.isnan(den[:, ~usable])) and np.all(np.isnan(den[:2])) and np.all(np.isfinite(den[2:, usable]))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        pred.predict(flux, ivar, batch_size=-1)  # it used to return all-NaN rows with no error
    assert "denoised" not in pred.predict(flux, ivar)


def test_calibration_scales_sigma_by_snr_bin(tmp_path):
    flux, ivar, _snr = spectra(6)
    make_checkpoint(tmp_path / "raw.pt")
    cal = {"method": "mad", "label_names": ["teff", "logg"], "scale": [2.0, 3.0],
           "snr_edges": [0, 20, 40, 60, float("inf")],
           "scale_by_snr": [[5.0, 5.0], [2.0, 3.0], [2.0, 3.0], [1.5, 1.5]], "count_by_snr": None}
    make_checkpoint(tmp_path / "cal.pt", calibration=cal)
    raw = LabelPredictor.from_checkpoint(tmp_path / "raw.pt").predict(flux, ivar)
    got = LabelPredictor.from_checkpoint(tmp_path / "cal.pt").predict(flux, ivar)
    ratio = got["sigma"] / raw["sigma"]
    s = got["snr"]
    expect = np.where((s < 20)[:, None], 5.0, np.where((s >= 60)[:, None], 1.5, [2.0, 3.0]))
    assert np.allclose(ratio, expect, rtol=1e-6)
    assert np.array_equal(got["labels"], raw["labels"])


def test_predict_spectrum_matches_arrays(tmp_path):
    import astropy.units as u
    from astropy.nddata import StdDevUncertainty
    from specutils import Spectrum

    make_checkpoint(tmp_path / "m.pt")
    pred = LabelPredictor.from_checkpoint(tmp_path / "m.pt")
    flux, ivar, _ = spectra(1)
    spec = Spectrum(flux=flux[0] * u.adu, spectral_axis=GRID.wavelength() * u.AA,
                    uncertainty=StdDevUncertainty(1 / np.sqrt(ivar[0])))
    a = pred.predict_spectrum(spec)
    b = pred.predict(flux, ivar)
    assert np.allclose(a["labels"], b["labels"], rtol=1e-5)
    other = Spectrum(flux=flux[0, :200] * u.adu, spectral_axis=GRID.wavelength()[:200] * u.AA,
                     uncertainty=StdDevUncertainty(np.ones(200)))
    with pytest.raises(ValueError, match="resample"):
        pred.predict_spectrum(other)


def test_missing_or_corrupt_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        LabelPredictor.from_checkpoint(tmp_path / "absent.pt")
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="broken.pt"):
        load_checkpoint(bad)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a pairspec"):
        read_meta(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="must both be"):
        make_checkpoint(tmp_path / "m.pt")
        LabelPredictor.from_checkpoint(tmp_path / "m.pt").predict(np.ones((2, 10)), np.ones((2, 10)))


def test_compiled_network_matches_eager_and_compiles_once(tmp_path):
    """compile=True pads the last batch to batch_size, so 7 rows in batches of 3 (3, 3, 1 -> 3) reuse one
    graph; labels, sigmas and denoised spectra agree with the eager predictor to float rounding."""
    import torch._dynamo

    make_checkpoint(tmp_path / "m.pt")
    flux, ivar, _ = spectra(7)
    eager = LabelPredictor.from_checkpoint(tmp_path / "m.pt").predict(flux, ivar, batch_size=3, denoise=True)
    torch._dynamo.reset()
    pred = LabelPredictor.from_checkpoint(tmp_path / "m.pt", compile=True)
    assert pred.compiled and pred.network is not pred.model
    from torch._dynamo.utils import counters

    counters.clear()
    out = pred.predict(flux, ivar, batch_size=3, denoise=True)
    assert counters["stats"]["unique_graphs"] == 1  # the padded last batch did not recompile
    for key in ("labels", "sigma", "denoised"):
        assert out[key].shape == eager[key].shape
        assert np.allclose(out[key], eager[key], rtol=1e-4, atol=1e-5, equal_nan=True), key
    assert np.array_equal(out["snr"], eager["snr"]) and np.array_equal(out["frac_bad"], eager["frac_bad"])
