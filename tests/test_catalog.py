"""Catalogue building blocks: flag bits, the inverse-variance star combination, tables, formats."""

import numpy as np
import pytest
from astropy.table import Table

from pairspec import catalog
from pairspec.catalog import (
    EXTRAPOLATED,
    LARGE_SIGMA,
    LOW_SNR,
    MANY_BAD_PIXELS,
    NO_GOOD_VISITS,
    NOT_FINITE,
)

NAMES, UNITS = ["teff", "logg"], ["K", "dex"]
LO, HI = np.array([3500.0, 0.0]), np.array([7000.0, 5.0])


def test_flag_bits_are_distinct_and_documented():
    assert catalog.FLAG_BITS == {
        "EXTRAPOLATED": 0, "LOW_SNR": 1, "MANY_BAD_PIXELS": 2, "NOT_FINITE": 3, "LARGE_SIGMA": 4,
        "NO_GOOD_VISITS": 5, "NO_SIGNAL": 6,
    }
    assert (EXTRAPOLATED, LOW_SNR, MANY_BAD_PIXELS, NOT_FINITE, LARGE_SIGMA, NO_GOOD_VISITS) == (1, 2, 4, 8, 16, 32)
    assert catalog.NO_SIGNAL == 64 and catalog.NO_SIGNAL & catalog.EXCLUDED
    assert catalog.flag_names(LOW_SNR | LARGE_SIGMA) == ["LOW_SNR", "LARGE_SIGMA"]
    assert set(catalog.FLAG_DOC) == set(catalog.FLAG_BITS)


def test_flags_from_constructed_cases():
    labels = np.array([
        [5000, 2.5],  # clean
        [7100, 2.5],  # teff above the training range
        [5000, 2.5],  # low S/N
        [5000, 2.5],  # many bad pixels
        [np.nan, 2.5],  # non-finite label
        [5000, 2.5],  # huge sigma
        [5000, 2.5],  # zero sigma: cannot be a weight
        [5000, 2.5],  # NaN S/N counts as low
    ])
    sigma = np.tile([50.0, 0.1], (8, 1))
    sigma[5, 1] = 3.0
    sigma[6, 0] = 0.0
    snr = np.array([50, 50, 5, 50, 50, 50, 50, np.nan])
    frac_bad = np.array([0, 0, 0, 0.5, 0, 0, 0, 0])
    sigma_max = catalog.default_sigma_max(LO, HI)
    assert sigma_max == pytest.approx([3500 / np.sqrt(12), 5 / np.sqrt(12)])
    lab, sig, flags = catalog.flag_visits(labels, sigma, snr, frac_bad, LO, HI, sigma_max, 10.0, 0.3)
    assert flags.dtype == np.int32
    assert flags.tolist() == [0, EXTRAPOLATED, LOW_SNR, MANY_BAD_PIXELS, NOT_FINITE, LARGE_SIGMA, NOT_FINITE, LOW_SNR]
    assert np.isnan(lab[4]).all() and np.isnan(sig[4]).all()  # whole row of a broken prediction is NaN
    assert np.isnan(lab[6]).all()
    assert lab[1, 0] == 7100  # an extrapolated label is kept, only flagged
    assert np.isnan(labels[4, 0]) and labels[6, 0] == 5000  # input not modified


def test_combine_two_visits_inverse_variance():
    labels = np.array([[10.0, 1.0], [20.0, 3.0], [7.0, 7.0]])
    sigma = np.array([[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]])
    flags = np.array([0, LOW_SNR, 0], dtype=np.int32)
    out = catalog.combine_visits([0, 0, 1], 2, labels, sigma, flags)
    assert out["labels"][0, 0] == pytest.approx((10 * 1 + 20 * 0.25) / 1.25)  # = 12
    assert out["sigma"][0, 0] == pytest.approx(1 / np.sqrt(1 + 1 / 4))
    assert out["labels"][0, 1] == pytest.approx(2.0) and out["sigma"][0, 1] == pytest.approx(1 / np.sqrt(2))
    assert out["labels"][1].tolist() == [7.0, 7.0]
    assert out["n_visits"].tolist() == [2, 1] and out["n_used"].tolist() == [2, 1]
    assert out["flag"].tolist() == [LOW_SNR, 0]


def test_combine_leaves_out_bad_visits_and_flags_stars_without_any():
    labels = np.array([[10.0], [np.nan], [30.0], [40.0]])
    sigma = np.array([[1.0], [np.nan], [1.0], [1.0]])
    flags = np.array([0, NOT_FINITE, MANY_BAD_PIXELS | LOW_SNR, NOT_FINITE], dtype=np.int32)
    out = catalog.combine_visits([0, 0, 1, 1], 3, labels, sigma, flags)
    assert out["labels"][0, 0] == 10.0 and out["sigma"][0, 0] == 1.0  # NaN visit left out
    assert out["flag"][0] == 0  # bits of a visit that was left out do not taint the star
    assert np.isnan(out["labels"][1, 0]) and np.isnan(out["sigma"][1, 0])
    assert out["flag"][1] == NO_GOOD_VISITS | MANY_BAD_PIXELS | LOW_SNR | NOT_FINITE
    assert np.isnan(out["labels"][2, 0]) and out["flag"][2] == NO_GOOD_VISITS  # a star with no visits
    assert out["n_visits"].tolist() == [2, 2, 0] and out["n_used"].tolist() == [1, 0, 0]


def _tables():
    labels = np.array([[5000.0, 2.5], [5100.0, 2.7], [4000.0, 1.0]])
    sigma = np.array([[50.0, 0.1], [100.0, 0.2], [30.0, 0.05]])
    flags = np.array([0, LOW_SNR, 0], dtype=np.int32)
    visits = catalog.visit_table(
        ["A", "A", "Bstar"], ["v1", "v2", "v3"], [59000.5, 59001.5, 59002.5], [50, 8, 80], [48, 9, np.nan],
        labels, sigma, flags, [0.0, 0.1, 0.0], NAMES, UNITS,
    )
    comb = catalog.combine_visits([0, 0, 1], 2, labels, sigma, flags)
    stars = catalog.star_table(["A", "Bstar"], comb, [50, 80], NAMES, UNITS,
                               np.array([[4990.0, 2.4], [np.nan, 1.1]]), np.array([[20.0, 0.05], [np.nan, 0.04]]))
    for t in (visits, stars):
        catalog.add_meta(t, {"SNRLOW": 10.0})
    return visits, stars


def test_table_columns_units_dtypes_exact():
    visits, stars = _tables()
    assert visits.colnames == ["star_id", "visit_id", "mjd", "snr", "snr_survey", "teff", "e_teff", "logg",
                               "e_logg", "flag", "frac_bad"]
    assert [str(visits[c].unit) if visits[c].unit else None for c in visits.colnames] == [
        None, None, "d", None, None, "K", "K", "dex", "dex", None, None]
    assert [visits[c].dtype.kind + str(visits[c].dtype.itemsize) for c in visits.colnames[2:]] == [
        "f8", "f4", "f4", "f4", "f4", "f4", "f4", "i4", "f4"]
    assert stars.colnames == ["star_id", "n_visits", "n_used", "snr_max", "teff", "e_teff", "logg", "e_logg",
                              "flag", "teff_survey", "e_teff_survey", "logg_survey", "e_logg_survey"]
    assert stars["n_visits"].dtype == np.int32 and stars["flag"].dtype == np.int32
    assert str(stars["e_logg_survey"].unit) == "dex"
    assert stars["teff"][0] == pytest.approx((5000 / 50**2 + 5100 / 100**2) / (1 / 50**2 + 1 / 100**2))
    assert stars["flag"].tolist() == [LOW_SNR, 0]
    assert visits.meta["FLAGBIT1"] == "LOW_SNR" and visits.meta["SNRLOW"] == 10.0


@pytest.mark.parametrize("ext", [".fits", ".parquet", ".ecsv"])
def test_formats_round_trip(tmp_path, ext):
    visits, stars = _tables()
    visit_path, star_path = catalog.write_catalogue(visits, stars, tmp_path / f"cat{ext}")
    if ext == ".fits":
        assert visit_path == star_path == tmp_path / "cat.fits"
        read = lambda p, hdu: Table.read(p, hdu=hdu, unit_parse_strict="silent")
        rv, rs = read(visit_path, "VISITS"), read(star_path, "STARS")
        from astropy.io import fits

        header = fits.getheader(visit_path, "VISITS")
        i = visits.colnames.index("e_teff") + 1
        assert header[f"TCOMM{i}"] == visits["e_teff"].description and header["FLAGBIT3"] == "NOT_FINITE"
    else:
        assert visit_path == tmp_path / f"cat.visits{ext}" and star_path == tmp_path / f"cat.stars{ext}"
        rv, rs = Table.read(visit_path), Table.read(star_path)
        assert rv["teff"].description == visits["teff"].description
        assert rv.meta["FLAGBIT0"] == "EXTRAPOLATED"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({visit_path.name, star_path.name})
    for orig, back in ((visits, rv), (stars, rs)):
        assert back.colnames == orig.colnames
        for c in orig.colnames:
            assert (str(back[c].unit) if back[c].unit else None) == (str(orig[c].unit) if orig[c].unit else None), c
            if orig[c].dtype.kind == "U":
                assert [str(v) for v in back[c]] == list(orig[c])
            else:
                assert back[c].dtype.kind == orig[c].dtype.kind and back[c].dtype.itemsize == orig[c].dtype.itemsize
                np.testing.assert_array_equal(np.asarray(back[c]), np.asarray(orig[c]))


def test_unknown_format_and_failed_write_leave_nothing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="cat.csv.*unknown catalogue format"):
        catalog.catalogue_paths(tmp_path / "cat.csv")
    visits, stars = _tables()
    (tmp_path / "cat.visits.parquet").write_text("old catalogue")
    calls = []

    def failing_write(self, path, **kw):  # the second file fails half-way through
        calls.append(path)
        with open(path, "w") as f:
            f.write("partial")
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(Table, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        catalog.write_catalogue(visits, stars, tmp_path / "cat.parquet")
    assert len(calls) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["cat.visits.parquet"]
    assert (tmp_path / "cat.visits.parquet").read_text() == "old catalogue"


def test_combine_with_the_split_keeps_the_star_part_from_averaging_down():
    """Visit errors average down over a star's visits, the common star term does not: with many stars of
    8 visits each, the combined error must match the scatter of the combined labels around the truth."""
    rng = np.random.default_rng(3)
    n_star, n_vis, sv, ss = 4000, 8, 0.1, 0.05
    star = np.repeat(np.arange(n_star), n_vis)
    offset = rng.normal(0, ss, n_star)[star]  # one error shared by a star's visits
    labels = (offset + rng.normal(0, sv, star.size))[:, None]
    sigma_visit = np.full((star.size, 1), sv)
    sigma = np.full((star.size, 1), np.hypot(sv, ss))
    flags = np.zeros(star.size, np.int32)
    split = catalog.combine_visits(star, n_star, labels, sigma, flags, sigma_visit)
    naive = catalog.combine_visits(star, n_star, labels, sigma, flags)
    want = np.hypot(sv / np.sqrt(n_vis), ss)
    assert np.allclose(split["sigma"], want, rtol=1e-12)
    z = split["labels"][:, 0] / split["sigma"][:, 0]
    assert 0.95 < z.std() < 1.05
    assert (naive["labels"][:, 0] / naive["sigma"][:, 0]).std() > 1.3  # the old rule: errors too small


def test_combine_without_a_known_split_never_averages_an_error_down():
    """A one-part calibration cannot tell the common part from the visit part: the star error is then the
    weighted mean of its visits' errors, which covers even an error wholly common to the visits."""
    rng = np.random.default_rng(4)
    n_star, n_vis, sv, ss = 4000, 6, 0.05, 0.1
    star = np.repeat(np.arange(n_star), n_vis)
    labels = (rng.normal(0, ss, n_star)[star] + rng.normal(0, sv, star.size))[:, None]
    sigma = np.full((star.size, 1), np.hypot(sv, ss))
    sigma[::2] *= 2.0  # unequal visits: the bound is sum(w sigma) / sum(w), w = 1 / sigma^2
    flags = np.zeros(star.size, np.int32)
    out = catalog.combine_visits(star, n_star, labels, sigma, flags, sigma, split_known=False)
    s = sigma[:n_vis, 0]
    assert np.allclose(out["sigma"][:, 0], np.sum(s ** -1) / np.sum(s ** -2), rtol=1e-12)
    z = out["labels"][:, 0] / out["sigma"][:, 0]
    assert z.std() < 1.05  # covered (conservative where part of the error is the visit's own)
    naive = catalog.combine_visits(star, n_star, labels, sigma, flags, sigma)
    assert (naive["labels"][:, 0] / naive["sigma"][:, 0]).std() > 1.5  # what the one-part fallback did


def test_a_visit_without_starlight_is_flagged_and_left_out_of_the_star():
    labels = np.array([[5000.0, 3.0], [4500.0, 2.0], [4800.0, 2.5]])
    sigma = np.array([[50.0, 0.1], [30.0, 0.05], [60.0, 0.1]])  # the sky exposure claims the smallest error
    labels, sigma, flags = catalog.flag_visits(labels, sigma, np.array([25.0, 0.4, -0.2]), np.zeros(3), LO, HI,
                                               np.array([1000.0, 1.0]))
    assert not flags[0] & catalog.NO_SIGNAL and flags[1] & catalog.NO_SIGNAL and flags[2] & catalog.NO_SIGNAL
    out = catalog.combine_visits([0, 0, 0], 1, labels, sigma, flags)
    assert out["n_used"][0] == 1 and out["labels"][0, 0] == 5000.0
