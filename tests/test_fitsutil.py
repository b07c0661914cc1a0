"""The raw-header FITS walker that catches cut downloads without parsing every card."""

import numpy as np
import pytest
from astropy.io import fits

from pairspec.surveys.base import AdapterError
from pairspec.surveys.fitsutil import (
    fits_layout,
    header_values,
    read_header,
    read_image,
)


def _write(path, n_images=3):
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(np.ones((3, 100 + k), ">f8")) for k in range(n_images)]
    hdus.append(fits.BinTableHDU.from_columns([fits.Column("snr", "E", array=np.arange(4.0))]))
    fits.HDUList(hdus).writeto(path)
    return len(hdus)


def test_counts_hdus_like_astropy(tmp_path):
    n = _write(tmp_path / "a.fits")
    hdus = fits_layout(str(tmp_path / "a.fits"))
    assert len(hdus) == n
    with fits.open(tmp_path / "a.fits") as hdul:
        assert len(hdul) == n
        for k in (1, 2, 3):
            assert hdus[k].image and hdus[k].shape == hdul[k].data.shape
            np.testing.assert_array_equal(read_image(str(tmp_path / "a.fits"), hdus[k]), hdul[k].data)
            assert read_header(str(tmp_path / "a.fits"), hdus[k])["NAXIS1"] == hdul[k].header["NAXIS1"]
        assert not hdus[-1].image  # a table is left to astropy
    # zero padding after the last HDU is tolerated, as astropy does
    with open(tmp_path / "a.fits", "ab") as f:
        f.write(b"\0" * 2880)
    assert len(fits_layout(str(tmp_path / "a.fits"))) == n


def test_scaled_images_are_left_to_astropy(tmp_path):
    hdu = fits.ImageHDU(np.arange(12, dtype=">i2").reshape(3, 4))
    hdu.header["BSCALE"], hdu.header["BZERO"] = 2.0, 10.0
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "s.fits")
    assert not fits_layout(str(tmp_path / "s.fits"))[1].image


@pytest.mark.parametrize("cut", [100, 2880 * 2 + 7, -2880, -1])
def test_cut_file_is_an_error(tmp_path, cut):
    _write(tmp_path / "a.fits")
    data = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "b.fits").write_bytes(data[:cut])
    with pytest.raises(AdapterError, match="truncated") as err:
        fits_layout(str(tmp_path / "b.fits"))
    assert err.value.path.endswith("b.fits")


def test_not_fits(tmp_path):
    (tmp_path / "x.fits").write_bytes(b"hello" * 1000)
    with pytest.raises(AdapterError, match="not a FITS file"):
        fits_layout(str(tmp_path / "x.fits"))


def test_header_values_match_astropy(tmp_path):
    header = fits.Header()
    header["NVISITS"] = 3
    header["SNR"] = 154.25
    header["SFILE1"] = "apVisit-dr17-5815-56396-212.fits"
    header["FIELD"] = "000+02  "
    header["OBJID"] = "it''s"
    header["FLAG"] = True
    header["BIG"] = 1.5e-12
    header["HISTORY"] = "APOGEE Reduction Pipeline Version: 0.17.22"
    fits.PrimaryHDU(header=header).writeto(tmp_path / "h.fits")
    values = header_values(str(tmp_path / "h.fits"), fits_layout(str(tmp_path / "h.fits"))[0])
    with fits.open(tmp_path / "h.fits") as hdul:
        for key in ("NVISITS", "SNR", "SFILE1", "FIELD", "OBJID", "FLAG", "BIG"):
            assert values[key] == hdul[0].header[key], key
            assert type(values[key]) is type(hdul[0].header[key]), key
    assert "HISTORY" not in values
