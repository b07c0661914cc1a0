"""continuum_torch: the torch port gives what continuum.normalize / data.prepare_inputs give, row by row,
on realistic spectra and every edge rule (masks, gaps, dead blocks, NaN/inf, few pixels, bad scale)."""

import numpy as np
import pytest
import torch

from pairspec import preprocess
from pairspec.grid import LogLinearGrid
from pairspec.preprocess import normalize
from pairspec.preprocess import torch_backend as ct
from pairspec.preprocess.numpy_backend import row_median as _row_median
from pairspec.surveys.apogee.layout import APOGEE_GRID, apogee_continuum_pixels

torch.set_num_threads(1)
SMALL = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=820, blocks=((10, 400), (420, 800)))
WHOLE = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=500)  # no blocks: the whole grid is one block
NAMES = ("norm_flux", "norm_ivar", "continuum")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_spectra(grid: LogLinearGrid, n: int = 20, seed: int = 0, dtype=np.float32):
    """Gaussian absorption lines (~20 % of pixels) x smooth continuum, S/N 5/10/30/100; rows 0-10 carry
    the edge cases (n >= 11)."""
    rng = np.random.default_rng(seed)
    npix = grid.npix
    x, t = np.arange(npix, dtype=np.float64), np.linspace(-1, 1, npix)
    flux, sigma, model = np.empty((n, npix)), np.empty((n, npix)), np.empty((n, npix))
    for i in range(n):
        k = int(0.2 * npix / 8)
        c, d, w = rng.uniform(0, npix, (k, 1)), rng.uniform(0.02, 0.4, (k, 1)), rng.uniform(1.5, 3.0, (k, 1))
        lines = np.clip(1.0 - (d * np.exp(-0.5 * ((x - c) / w) ** 2)).sum(0), 0.3, 1.0)
        cont = 1000 * rng.uniform(0.5, 2) * (1 + rng.uniform(-0.2, 0.2) * t + 0.05 * np.sin(2.5 * t + i))
        sigma[i] = cont / (5, 10, 30, 100)[i % 4]
        model[i] = lines * cont
        flux[i] = model[i] + rng.normal(size=npix) * sigma[i]
    ivar = 1 / sigma**2
    (a0, b0), (a1, b1) = (grid.blocks or ((0, npix),))[0], (grid.blocks or ((0, npix),))[-1]
    ivar[0, rng.random(npix) < 0.05] = 0.0  # scattered masked pixels
    flux[1, a0 + 50:a0 + 250], ivar[1, a0 + 50:a0 + 250] = 0.0, 0.0  # a masked gap
    ivar[2, a1:b1] = 0.0  # one block with no good pixel
    flux[3, a0 + 5:a0 + 9] = [np.nan, np.inf, -np.inf, np.nan]  # non-finite input
    ivar[3, a0 + 20:a0 + 24] = [np.nan, np.inf, -1.0, -np.inf]
    ivar[4, a1:b1] = 0.0
    ivar[4, a1 + 30:a1 + 35] = 1e-2  # only 5 good pixels: constant continuum
    flux[4, a1 + 30:a1 + 35] = 777.0
    ivar[5] = 0.0  # all-bad row
    flux[6, a0::97] += 50 * sigma[6, a0::97]  # unmasked cosmic rays
    flux[7], ivar[7] = model[7], 1.0  # noise-free model spectrum, ivar a placeholder
    ivar[8] *= 100.0  # ivar 10x too optimistic in sigma
    flux[9], ivar[9] = flux[9] * 1e-15, ivar[9] * 1e30  # another flux calibration
    flux[10, a0:b0] *= -1.0  # non-positive median in a block: scale 1
    return flux.astype(dtype), ivar.astype(dtype)


def assert_same(ref, got, rtol=1e-5):
    for name, a, b in zip(NAMES, ref, got):
        b = b.cpu().numpy()
        assert b.dtype == np.float32 and b.shape == a.shape, name
        assert np.isfinite(b).all(), name
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-6 * np.abs(a).max(), err_msg=name)
        assert np.array_equal(a == 0, b == 0), name  # bad pixels stay exactly ivar 0


@pytest.fixture(params=[True, False], ids=["numpy-sort", "torch-sort"])
def sort_branch(request, monkeypatch):
    """Run with the numpy sort (CPU default) and with torch.sort (the CUDA branch) on CPU."""
    monkeypatch.setattr(ct, "NUMPY_SORT_ON_CPU", request.param)


@pytest.mark.parametrize("cont", [False, True], ids=["all-pixels", "cannon-pixels"])
def test_apogee_grid_matches_numpy(cont, sort_branch):
    flux, ivar = make_spectra(APOGEE_GRID)
    cp = apogee_continuum_pixels() if cont else None
    ref = normalize(flux, ivar, APOGEE_GRID, cont_pixels=cp)
    got = ct.normalize(torch.from_numpy(flux), torch.from_numpy(ivar), APOGEE_GRID, cont_pixels=cp)
    assert_same(ref, got)
    assert (got[2][2, 6344:8335] == 1).all() and (got[1][5] == 0).all()  # dead block / row
    assert torch.allclose(got[2][4, 6344:8335], torch.tensor(777.0))  # few-pixel constant
    assert (got[0][:, :246] == 1).all() and (got[1][:, 8335:] == 0).all()  # outside the chips


@pytest.mark.parametrize("grid", [SMALL, WHOLE], ids=["two-blocks", "no-blocks"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_grids_and_options_match_numpy(grid, dtype, sort_branch):
    flux, ivar = make_spectra(grid, n=16, seed=1, dtype=dtype)
    tf, ti = torch.from_numpy(flux), torch.from_numpy(ivar)
    cp = np.random.default_rng(2).random(grid.npix) < 0.5
    for kwargs in ({}, {"cont_pixels": cp}, {"degree": 2, "n_iter": 3}, {"n_iter": 0},
                   {"lower": 1.5, "upper": 2.5, "degree": 4}):
        assert_same(normalize(flux, ivar, grid, **kwargs), ct.normalize(tf, ti, grid, **kwargs))


def test_one_row_alone_equals_the_batch():
    # The early stop is global over the batch; a row's answer must not depend on its neighbours.
    flux, ivar = make_spectra(SMALL, n=12, seed=3)
    batch = ct.normalize(torch.from_numpy(flux), torch.from_numpy(ivar), SMALL)
    for i in (0, 3, 7):
        alone = ct.normalize(torch.from_numpy(flux[i:i + 1]), torch.from_numpy(ivar[i:i + 1]), SMALL)
        for a, b in zip(batch, alone):
            assert torch.allclose(a[i:i + 1], b, rtol=1e-6, atol=1e-6)


def test_row_median_matches_numpy(sort_branch):
    rng = np.random.default_rng(5)
    values = np.round(rng.normal(size=(9, 40)), 1)  # ties
    values[0, 3] = np.inf
    mask = rng.random((9, 40)) < 0.5
    mask[1] = False  # empty row -> default
    mask[2] = True
    mask[3, :] = False
    mask[3, 7] = True  # one value
    got = ct.row_median(torch.from_numpy(values), torch.from_numpy(mask), 0.25).numpy()
    # two implementations (torch gather vs numpy): equal to float64 rounding, not asserted bit for bit
    np.testing.assert_allclose(got, _row_median(values, mask, 0.25), rtol=1e-15, atol=0)


def test_network_inputs_match_data_module():
    flux, ivar = make_spectra(SMALL, n=12, seed=4)
    nf, ni, _ = normalize(flux, ivar, SMALL)
    nf[0, :5] = [np.nan, np.inf, -np.inf, 5.0, -3.0]  # garbage the input builder must absorb
    ni[0, 5:9] = [np.nan, np.inf, -1.0, 1e38]
    # float32 maths on both sides; torch's vectorised sqrt may differ from numpy's by 1 ulp (1.2e-7)
    weight = ct.pixel_weight(torch.from_numpy(ni)).numpy()
    np.testing.assert_allclose(weight, preprocess.pixel_weight(ni), rtol=1e-6, atol=0)
    got = ct.inputs_from_normalized(torch.from_numpy(nf), torch.from_numpy(ni)).numpy()
    ref = preprocess.inputs_from_normalized(nf, ni)
    assert got.dtype == np.float32 and np.array_equal(got == 0, ref == 0)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    x = ct.prepare_inputs(torch.from_numpy(flux), torch.from_numpy(ivar), SMALL).numpy()
    ref = preprocess.prepare_inputs(flux, ivar, SMALL)
    assert x.dtype == np.float32 and x.shape == ref.shape
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="must both be"):
        ct.normalize(torch.ones(2, 10), torch.ones(2, 10), SMALL)
    with pytest.raises(ValueError, match="cont_pixels"):
        ct.normalize(torch.ones(2, 820), torch.ones(2, 820), SMALL, cont_pixels=np.ones(5, bool))


def test_predictor_torch_path_equals_numpy_path(tmp_path):
    from test_inference import make_checkpoint, spectra

    from pairspec.inference import LabelPredictor

    make_checkpoint(tmp_path / "m.pt")
    flux, ivar, _ = spectra(7)
    ivar[0] = 0.0  # all-bad row
    flux[1, :50] = np.nan
    ivar[2, 10:75] = 0.0
    pred = LabelPredictor.from_checkpoint(tmp_path / "m.pt")
    assert not pred.torch_inputs  # CPU default: numpy, the faster one there
    ref = pred.predict(flux, ivar, batch_size=3, denoise=True)
    pred.torch_inputs = True
    got = pred.predict(flux, ivar, batch_size=3, denoise=True)
    # S/N and frac_bad come from one numpy function whatever builds the inputs (S/N picks the
    # calibration bin, so the paths must agree exactly): the same code on the same rows.
    np.testing.assert_array_equal(got["frac_bad"], ref["frac_bad"])
    np.testing.assert_array_equal(got["snr"], ref["snr"])
    for key in ("labels", "sigma", "denoised"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("cont", [False, True], ids=["all-pixels", "cannon-pixels"])
def test_cuda_matches_numpy(cont):
    flux, ivar = make_spectra(APOGEE_GRID)
    cp = apogee_continuum_pixels() if cont else None
    got = ct.normalize(torch.from_numpy(flux).cuda(), torch.from_numpy(ivar).cuda(), APOGEE_GRID,
                             cont_pixels=cp)
    assert all(t.device.type == "cuda" for t in got)
    assert_same(normalize(flux, ivar, APOGEE_GRID, cont_pixels=cp), got)


@pytest.mark.gpu
@CUDA
def test_cuda_predictor_builds_inputs_on_device(tmp_path):
    from test_inference import make_checkpoint, spectra

    from pairspec.inference import LabelPredictor

    make_checkpoint(tmp_path / "m.pt")
    flux, ivar, _ = spectra(5)
    flux[1, :50] = np.nan
    pred = LabelPredictor.from_checkpoint(tmp_path / "m.pt", device="cuda")
    assert pred.torch_inputs
    clean = _clean_like_predict(flux, ivar)
    ref_x = preprocess.prepare_inputs(*clean, pred.grid)
    x = pred._inputs_torch(*clean)
    assert x.device.type == "cuda"
    np.testing.assert_allclose(x.cpu().numpy(), ref_x, rtol=1e-5, atol=1e-6)
    cpu = LabelPredictor.from_checkpoint(tmp_path / "m.pt").predict(flux, ivar)
    got = pred.predict(flux, ivar)
    np.testing.assert_array_equal(got["snr"], cpu["snr"])  # one numpy S/N for both paths


def _clean_like_predict(flux, ivar):
    from pairspec.inference import _clean

    return _clean(np.asarray(flux, np.float32), np.asarray(ivar, np.float32))
