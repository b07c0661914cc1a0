"""The shipped Kurucz flux emulator: verification numbers of shared/data/payne/README.md, torch parity."""

import numpy as np
import pytest

from pairspec.surveys.apogee.emulator import KuruczEmulator
from pairspec.surveys.apogee.layout import aspcap7214_index

DWARF = [5800.0, 4.4, 0.0, 0.0]
GIANT = [4750.0, 2.5, 0.0, 0.0]


@pytest.fixture(scope="module")
def emu():
    return KuruczEmulator.load()


def test_arrays_and_attributes(emu):
    assert emu.label_names == ("teff", "logg", "fe_h", "alpha_fe")
    assert emu.wavelength.shape == (7214,) and emu.cont_pixels.sum() == 529 and emu.model_mask.sum() == 875
    np.testing.assert_array_equal(emu.apstar_index, aspcap7214_index())
    # the 7214 grid is the apStar grid at those pixels
    np.testing.assert_allclose(emu.wavelength, 10 ** (4.179 + 6e-6 * emu.apstar_index), rtol=1e-7)
    np.testing.assert_allclose(emu.x_min, [3529, 0.335, -0.988, -0.559], rtol=1e-3, atol=2e-3)
    assert KuruczEmulator.load().w0 is emu.w0  # cached, not re-read


def test_raw_flux_scale(emu):
    f = emu.flux([DWARF])
    assert f.shape == (1, 7214)
    assert 3e-6 < np.median(f) < 9e-6  # f_nu after /1e6 (payne README: typically 3-8e-6)


def test_normalized_matches_readme_table(emu):
    dwarf, giant = emu.normalized([DWARF, GIANT])
    assert abs(np.median(dwarf) - 0.996) < 0.002
    assert abs(dwarf.min() - 0.59) < 0.01
    assert abs(np.median(giant) - 0.978) < 0.003 and abs(giant.min() - 0.53) < 0.01
    # giant: more and deeper weak lines than the dwarf
    assert (giant < 0.8).mean() > 1.5 * (dwarf < 0.8).mean()
    assert np.mean(1 - giant) > np.mean(1 - dwarf) + 0.01
    # continuum pixels sit at ~1 after normalisation
    assert abs(np.median(dwarf[emu.cont_pixels]) - 1.0) < 0.003


def test_torch_agrees_and_is_differentiable(emu):
    import torch

    torch.set_num_threads(1)
    labels = np.array([DWARF, GIANT, [4100.0, 1.5, -0.6, 0.3]])
    ref = emu.normalized(labels)
    t = torch.tensor(labels, dtype=torch.float64, requires_grad=True)
    out = emu.torch_normalized(t)
    assert np.abs(out.detach().numpy() - ref).max() < 1e-5
    out32 = emu.torch_normalized(torch.tensor(labels, dtype=torch.float32))
    assert np.abs(out32.numpy() - ref).max() < 1e-4
    (out[:, emu.model_mask == 0] ** 2).sum().backward()
    assert torch.isfinite(t.grad).all() and (t.grad.abs() > 0).all()


def test_wrong_label_count_is_an_error(emu):
    with pytest.raises(ValueError, match="4 columns"):
        emu.flux([[5000.0, 3.0, 0.0]])
