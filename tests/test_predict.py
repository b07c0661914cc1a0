"""`predict`: streaming a store, FITS file lists, flags, denoised output, no half-written catalogue.

A fake predictor (a deterministic function of the input) and a fake store stand in for the real
ones, so these tests do not depend on a trained model.
"""

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from pairspec import catalog
from pairspec.grid import LogLinearGrid
from pairspec.predict import predict
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA
from pairspec.surveys.base import StarRecord, recompute_snr

NPIX = 32
GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=NPIX)
ERR = np.array([50.0, 0.1, 0.05, 0.03])  # sigma at S/N 10


class FakePredictor:
    """labels = affine functions of the mean good-pixel flux; sigma ~ 1/S/N. Fails after `fail_after` calls."""

    def __init__(self, fail_after=None, grid=GRID):
        self.schema = APOGEE_CORE_SCHEMA
        self.label_names = self.schema.names
        self.grid = grid
        self.label_lo = np.array([3500.0, 0.0, -2.5, -0.5])
        self.label_hi = np.array([7000.0, 5.5, 0.6, 0.6])
        self.fail_after = fail_after
        self.sizes = []

    def predict(self, flux, ivar, batch_size=256, denoise=False):
        if self.fail_after is not None and len(self.sizes) >= self.fail_after:
            raise RuntimeError("model crashed")
        self.sizes.append(len(flux))
        good = ivar > 0
        m = (flux * good).sum(1) / np.maximum(good.sum(1), 1)
        labels = np.stack([4000 + 1000 * m, 1 + m, m - 1.5, 0.1 * m], axis=1)
        snr = recompute_snr(flux, ivar)
        sigma = np.outer(10 / np.where(np.isfinite(snr), snr, 1e-3), ERR)
        out = {"labels": labels, "sigma": sigma, "snr": snr, "frac_bad": 1 - good.mean(1)}
        if denoise:
            out["denoised"] = np.full_like(flux, 1.0)
        return out


class FakeStore:
    """The PairStore read interface over in-memory arrays; counts visit_spectra reads."""

    def __init__(self, n_stars=7, seed=0):
        rng = np.random.default_rng(seed)
        self.grid, self.schema = GRID, APOGEE_CORE_SCHEMA
        n_vis = rng.integers(1, 6, n_stars)
        n_vis[3] = 0  # a star without visits
        star = np.repeat(np.arange(n_stars), n_vis)
        self.n_stars, self.n_visits = n_stars, len(star)
        level = rng.uniform(0.8, 1.6, n_stars)[star]
        snr = rng.uniform(5, 80, self.n_visits)
        self.flux = (level[:, None] * (1 + rng.normal(0, 1, (self.n_visits, NPIX)) / snr[:, None])).astype(np.float32)
        self.ivar = np.broadcast_to((snr[:, None] / level[:, None]) ** 2, self.flux.shape).astype(np.float32).copy()
        self.ivar[0, : NPIX // 2] = 0  # one visit with half its pixels bad
        self.visits = {"star": star, "visit_id": np.array([f"v{i:03d}" for i in range(self.n_visits)]),
                       "mjd": 59000.0 + np.arange(self.n_visits), "snr": snr.astype(np.float32),
                       "snr_survey": (snr * 1.1).astype(np.float32), "fiber": np.zeros(self.n_visits, np.int32)}
        self.stars = {"id": np.array([f"2M{i:04d}" for i in range(n_stars)]), "split": np.arange(n_stars) % 3,
                      "n_visits": n_vis}
        self._labels = np.tile(np.array([5000.0, 2.0, -0.1, 0.05], np.float32), (n_stars, 1))
        self._labels[1] = np.nan
        self.reads = []

    def star_table(self):
        return self.stars

    def visit_table(self):
        return self.visits

    def labels(self):
        return self._labels

    def label_err(self):
        return np.full_like(self._labels, 0.01)

    def visit_spectra(self, idx, pixmask=True):
        rows = np.arange(self.n_visits)[idx]
        self.reads.append(len(rows))
        return self.flux[idx], self.ivar[idx], np.zeros(self.flux[idx].shape, np.int64) if pixmask else None


def _read(path, hdu):
    return Table.read(path, hdu=hdu, unit_parse_strict="silent", mask_invalid=False)


def test_store_catalogue_columns_and_star_combination(tmp_path):
    store = FakeStore()
    res = predict(FakePredictor(), store, tmp_path / "cat.fits", batch_size=4, progress=False)
    assert (res.n_visits, res.n_stars) == (store.n_visits, store.n_stars)
    visits, stars = _read(res.visit_path, "VISITS"), _read(res.star_path, "STARS")
    assert visits.colnames == ["star_id", "visit_id", "mjd", "snr", "snr_survey", "teff", "e_teff", "logg", "e_logg",
                               "fe_h", "e_fe_h", "mg_fe", "e_mg_fe", "e_teff_visit", "e_logg_visit", "e_fe_h_visit",
                               "e_mg_fe_visit", "flag", "frac_bad"]
    assert str(visits["teff"].unit) == "K" and str(visits["e_fe_h"].unit) == "dex"
    assert list(visits["star_id"][:2]) == [store.stars["id"][store.visits["star"][i]] for i in range(2)]
    assert visits["frac_bad"][0] == pytest.approx(0.5)
    assert visits["flag"][0] & catalog.MANY_BAD_PIXELS
    low = np.asarray(visits["snr"]) < 10
    assert low.any() and np.all((np.asarray(visits["flag"])[low] & catalog.LOW_SNR) > 0)

    # Per-star means redone by hand from the visit table.
    for j, sid in enumerate(stars["star_id"]):
        rows = (visits["star_id"] == sid) & ((np.asarray(visits["flag"]) & catalog.EXCLUDED) == 0)
        assert stars["n_used"][j] == rows.sum()
        if rows.sum() == 0:
            assert np.isnan(stars["teff"][j]) and stars["flag"][j] & catalog.NO_GOOD_VISITS
            continue
        w = 1 / np.asarray(visits["e_teff"][rows], np.float64) ** 2
        assert stars["teff"][j] == pytest.approx((w * visits["teff"][rows]).sum() / w.sum(), rel=1e-6)
        assert stars["e_teff"][j] == pytest.approx(1 / np.sqrt(w.sum()), rel=1e-5)
    assert stars["n_visits"][3] == 0 and stars["flag"][3] == catalog.NO_GOOD_VISITS
    assert stars["teff_survey"][0] == 5000 and np.isnan(stars["teff_survey"][1])
    assert str(stars["e_logg_survey"].unit) == "dex"
    assert stars.meta["SURVEY"] == "apogee" and stars.meta["SFLAG23"] == "STAR_BAD"


def test_the_star_bits_are_named_by_the_stores_survey_not_the_models(tmp_path):
    """A DR17 checkpoint on an SDSS-V APOGEE store: survey_flags are the store's SDSS-V bits, so SURVEY and
    the SFLAGn names must be SDSS-V's (they were ASPCAPFLAG's: bit 0 read TEFF_WARN for FLAG_WARN)."""
    store = FakeStore()
    store.survey = "sdssv"
    res = predict(FakePredictor(), store, tmp_path / "cat.fits", progress=False)
    stars = _read(res.star_path, "STARS")
    assert stars.meta["SURVEY"] == "sdssv" and stars.meta["SFLAG0"] == "FLAG_WARN" and "SFLAG23" not in stars.meta


def test_a_one_part_calibration_does_not_average_star_errors_down(tmp_path):
    class OnePart(FakePredictor):
        def calibration_method(self):
            return "one-part"  # too few repeat pairs in the val split to split the errors

    store = FakeStore()
    res = predict(OnePart(), store, tmp_path / "cat.fits", batch_size=4, progress=False)
    visits, stars = _read(res.visit_path, "VISITS"), _read(res.star_path, "STARS")
    assert stars.meta["CALMETH"] == visits.meta["CALMETH"] == "one-part"
    several = 0
    for j, sid in enumerate(stars["star_id"]):
        rows = (visits["star_id"] == sid) & ((np.asarray(visits["flag"]) & catalog.EXCLUDED) == 0)
        if rows.sum() == 0:
            continue
        e = np.asarray(visits["e_teff"][rows], np.float64)
        assert stars["e_teff"][j] == pytest.approx((e ** -1).sum() / (e ** -2).sum(), rel=1e-5)
        assert stars["e_teff"][j] >= e.min() * (1 - 1e-6)  # never below the best visit's error
        several += rows.sum() > 1
    assert several >= 2
    assert _read(predict(FakePredictor(), FakeStore(), tmp_path / "b.fits", progress=False).star_path,
                 "STARS").meta["CALMETH"] == "visit+star"


def test_streaming_in_chunks_matches_one_chunk(tmp_path):
    small, big = FakeStore(n_stars=15), FakeStore(n_stars=15)
    a = predict(FakePredictor(), small, tmp_path / "a.ecsv", batch_size=1, progress=False)
    b = predict(FakePredictor(), big, tmp_path / "b.ecsv", batch_size=1000, progress=False)
    assert big.reads == [big.n_visits]
    assert len(small.reads) == -(-small.n_visits // 8) > 2  # chunks of batch_size * 8 rows
    assert max(small.reads) <= 8 and sum(small.reads) == small.n_visits
    for pa, pb in ((a.visit_path, b.visit_path), (a.star_path, b.star_path)):
        ta, tb = Table.read(pa), Table.read(pb)
        assert ta.colnames == tb.colnames
        for c in ta.colnames:
            np.testing.assert_array_equal(np.asarray(ta[c]), np.asarray(tb[c]))


def test_split_filter(tmp_path):
    store = FakeStore()
    res = predict(FakePredictor(), store, tmp_path / "t.parquet", split="test", batch_size=2, progress=False)
    stars, visits = Table.read(res.star_path), Table.read(res.visit_path)
    want = store.stars["id"][store.stars["split"] == 2]
    assert list(stars["star_id"]) == list(want)
    n_want = int(np.isin(store.visits["star"], np.flatnonzero(store.stars["split"] == 2)).sum())
    assert len(visits) == n_want == sum(store.reads) and set(visits["star_id"]) <= set(want)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        predict(FakePredictor(), store, tmp_path / "t.parquet", split="dev", progress=False)


def _fake_reader(path):
    """Reads the tiny FITS files of these tests: primary = flux (n_visit, npix), HDU 1 = ivar."""
    with fits.open(path) as hdul:
        flux = np.asarray(hdul[0].data, np.float32)
        ivar = np.asarray(hdul[1].data, np.float32)
        star = hdul[0].header["OBJID"]
    n = len(flux)
    nan = np.full(4, np.nan, np.float32)
    return StarRecord(
        star_id=star, source=str(path), labels=nan, label_err=nan, label_flags=np.zeros(4, np.int64), star_flags=0,
        coadd_flux=flux[0], coadd_ivar=ivar[0], coadd_pixmask=np.zeros(NPIX, np.int64), visit_flux=flux,
        visit_ivar=ivar, visit_pixmask=np.zeros(flux.shape, np.int64), visit_snr=recompute_snr(flux, ivar),
        visit_snr_survey=np.full(n, 20.0, np.float32), visit_mjd=59000.0 + np.arange(n),
        visit_id=[f"{Path(path).stem}-{i}" for i in range(n)], visit_fiber=np.full(n, -1, np.int32), snr=20.0,
    )


def _write_star(path, star, n_visits, level):
    flux = np.full((n_visits, NPIX), level, np.float32)
    hdu = fits.PrimaryHDU(flux)
    hdu.header["OBJID"] = star
    fits.HDUList([hdu, fits.ImageHDU(np.full_like(flux, 400.0))]).writeto(path)
    return str(path)


class FakeReader:
    """A survey file reader as the registry's adapters provide (can_read / read_file)."""

    name = "fake"

    @staticmethod
    def can_read(path):
        return str(path).endswith(".fits")

    @staticmethod
    def read_file(path):
        return _fake_reader(path)


def reading_predictor(**kw):
    pred = FakePredictor(**kw)
    pred.file_reader = FakeReader()
    return pred


def test_bad_fits_is_reported_and_the_rest_predicted(tmp_path):
    good1 = _write_star(tmp_path / "apStar-a.fits", "2M_A", 2, 1.0)
    good2 = _write_star(tmp_path / "apStar-b.fits", "2M_B", 3, 1.2)
    again = _write_star(tmp_path / "asStar-a.fits", "2M_A", 1, 1.0)  # same star, other telescope
    bad = tmp_path / "apStar-bad.fits"
    bad.write_bytes(b"this is not FITS at all" * 10)
    out = tmp_path / "out" / "cat.fits"
    with pytest.warns(UserWarning, match=r"(?s)1 file\(s\).*apStar-bad\.fits: No SIMPLE card"):
        res = predict(reading_predictor(), [good1, str(bad), good2, again], out, batch_size=1, progress=False)
    assert [p for p, _ in res.skipped] == [str(bad)]
    assert (res.n_visits, res.n_stars) == (6, 2)
    visits, stars = _read(out, "VISITS"), _read(out, "STARS")
    assert list(stars["star_id"]) == ["2M_A", "2M_B"] and list(stars["n_visits"]) == [3, 3]
    assert visits["teff"][0] == pytest.approx(5000.0) and visits["snr"][0] == pytest.approx(20.0)
    assert stars["teff"][1] == pytest.approx(5200.0)
    assert stars["e_teff"][1] == pytest.approx(50 * 10 / 24 / np.sqrt(3))  # 3 visits of S/N 1.2 * 20
    assert "teff_survey" not in stars.colnames
    with pytest.warns(UserWarning, match="1 input file\\(s\\) given more than once"):  # overlapping globs
        twice = predict(reading_predictor(), [good1, good2, good1], tmp_path / "twice.fits", progress=False)
    assert (twice.n_visits, twice.n_stars) == (5, 2)  # each visit once: a duplicate would shrink e_teff by sqrt(2)
    with pytest.raises(ValueError, match="split only applies"):
        predict(reading_predictor(), [good1], out, split="test", progress=False)
    with pytest.raises(ValueError, match="none of the 2 input file"):  # nothing readable is an error, not a catalogue
        predict(reading_predictor(), [str(bad), str(tmp_path / "missing.fits")], tmp_path / "x.fits", progress=False)
    assert not (tmp_path / "x.fits").exists()


def test_a_store_on_another_grid_names_the_surveys_and_what_differs(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_survey import FAKE_GRID, make_record

    from pairspec.grid import LogLinearGrid
    from pairspec.store import create_store

    store = create_store(str(tmp_path / "s.zarr"), "fake", "t1", FAKE_GRID, APOGEE_CORE_SCHEMA, {"source": "x"})
    store.append([make_record("2M00001", "u/1")])
    helio = LogLinearGrid.from_dict({**FAKE_GRID.to_dict(), "frame": "heliocentric"})
    with pytest.raises(ValueError, match=r"the store \(fake, 64 px\) is not on the wavelength grid of the model "
                                         r"\(apogee, 64 px\): frame 'rest' against 'heliocentric'"):
        predict(FakePredictor(grid=helio), str(tmp_path / "s.zarr"), tmp_path / "c.fits", progress=False)
    with pytest.raises(ValueError, match="npix 64 against 32"):
        predict(FakePredictor(), str(tmp_path / "s.zarr"), tmp_path / "c.fits", progress=False)


def test_a_file_of_another_product_is_named_for_what_it_is(tmp_path):
    from pairspec.surveys.apogee.adapter import ApogeeDR17Adapter

    visit = tmp_path / "apVisit-r13-5095-55844-128.fits"
    visit.write_bytes(b"x")
    other = tmp_path / "spectrum.fits"
    other.write_bytes(b"x")
    pred = FakePredictor()
    pred.file_reader = ApogeeDR17Adapter()
    with pytest.raises(ValueError, match="an APOGEE apVisit file .*predict reads apStar/asStar files"):
        predict(pred, [visit], tmp_path / "v.fits", progress=False)
    with pytest.raises(ValueError, match="not a spectrum file of the model's survey, apogee"):
        predict(pred, [other], tmp_path / "o.fits", progress=False)


def test_one_stars_file_in_two_folders_is_counted_once(tmp_path):
    """DR17 puts a star observed in two fields in both folders: a glob over the fields finds its apStar twice,
    under two paths. Its visits must enter the catalogue once (twice would shrink e_teff by sqrt(2))."""
    (tmp_path / "f1").mkdir()
    (tmp_path / "f2").mkdir()
    one = _write_star(tmp_path / "f1" / "apStar-a.fits", "2M_A", 3, 1.0)
    two = tmp_path / "f2" / "apStar-a.fits"
    shutil.copy(one, two)
    other = _write_star(tmp_path / "f2" / "apStar-b.fits", "2M_B", 2, 1.0)
    with pytest.warns(UserWarning, match="read already from .*f1.*apStar-a.fits"):
        res = predict(reading_predictor(), [one, str(two), other], tmp_path / "c.fits", progress=False)
    assert (res.n_visits, res.n_stars) == (5, 2)
    assert [p for p, _ in res.skipped] == [str(two)]
    stars = _read(res.star_path, "STARS")
    assert list(stars["n_visits"]) == [3, 2]


def test_the_python_api_expands_globs_as_the_cli_does(tmp_path):
    _write_star(tmp_path / "apStar-a.fits", "2M_A", 2, 1.0)
    _write_star(tmp_path / "apStar-b.fits", "2M_B", 3, 1.2)
    for inputs in (str(tmp_path / "apStar-*.fits"), [tmp_path / "apStar-?.fits"]):
        res = predict(reading_predictor(), inputs, tmp_path / "glob.fits", batch_size=1, progress=False)
        assert (res.n_visits, res.n_stars) == (5, 2)
    with pytest.raises(FileNotFoundError, match=r"asStar-\*\.fits: no file matches"):
        predict(reading_predictor(), str(tmp_path / "asStar-*.fits"), tmp_path / "none.fits", progress=False)
    assert not (tmp_path / "none.fits").exists()


def test_predictor_crash_leaves_old_catalogue_untouched(tmp_path):
    out = tmp_path / "cat.fits"
    out.write_text("old catalogue")
    with pytest.raises(RuntimeError, match="model crashed"):
        predict(FakePredictor(fail_after=1), FakeStore(), out, batch_size=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["cat.fits"]
    assert out.read_text() == "old catalogue"


def test_denoised_spectra_go_to_a_spectra_store(tmp_path, monkeypatch):
    made = {}

    class Writer:
        def __init__(self, path, grid, n_pix, attrs):
            made.update(path=path, n_pix=n_pix, attrs=attrs, ids=[], rows=0, closed=False)

        def append(self, ids, flux, extra, sigma=None):
            assert sigma is None  # the fake predictor has no error profile
            assert flux.shape == (len(ids), NPIX) and flux.dtype == np.float32
            made["ids"].extend(ids)
            made.setdefault("star_id", []).extend(extra["star_id"])
            made["rows"] += len(flux)

        def close(self):
            made["closed"] = True

    mod = types.ModuleType("pairspec.store")
    mod.create_spectra_store = Writer
    monkeypatch.setitem(sys.modules, "pairspec.store", mod)
    store = FakeStore()
    res = predict(FakePredictor(), store, tmp_path / "c.ecsv", batch_size=1,
                  denoised_path=str(tmp_path / "den.zarr"), progress=False)
    assert made["closed"] and made["rows"] == store.n_visits == res.n_visits
    assert made["ids"] == list(store.visits["visit_id"]) and made["n_pix"] == NPIX
    assert made["attrs"]["kind"] == "denoised"
    assert made["star_id"] == [store.stars["id"][s] for s in store.visits["star"]]


# ---------------------------------------------------------------- with the real store and adapter


def test_real_pair_store_and_spectra_store(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_survey import FAKE_GRID, make_record

    from pairspec.store import create_store, open_store

    store = create_store(str(tmp_path / "s.zarr"), "fake", "t1", FAKE_GRID, APOGEE_CORE_SCHEMA, {"source": "x"},
                         chunk=4)
    store.append([make_record(f"2M{i:05d}", f"u/{i:05d}") for i in range(9)])
    predictor = FakePredictor(grid=FAKE_GRID)
    res = predict(predictor, str(tmp_path / "s.zarr"), tmp_path / "cat.parquet", batch_size=1,
                  denoised_path=str(tmp_path / "den.zarr"), progress=False)
    s = open_store(str(tmp_path / "s.zarr"))
    stars, visits = Table.read(res.star_path), Table.read(res.visit_path)
    assert res.n_visits == s.n_visits == len(visits) and list(stars["star_id"]) == list(s.star_table()["id"])
    assert len(predictor.sizes) == -(-s.n_visits // 8)
    np.testing.assert_allclose(stars["teff_survey"], s.labels()[:, 0])
    np.testing.assert_array_equal(np.isnan(stars["mg_fe_survey"]), np.isnan(s.labels()[:, 3]))
    assert list(visits["visit_id"]) == list(s.visit_table()["visit_id"])

    import zarr

    den = zarr.open_group(str(tmp_path / "den.zarr"), mode="r")
    assert den.attrs["n"] == s.n_visits and den["flux"].shape == (s.n_visits, FAKE_GRID.npix)
    assert np.asarray(den["flux"][:]).min() == 1.0  # the fake denoiser's output
    assert [str(v) for v in den["star_id"][:]] == list(visits["star_id"])
    assert "sigma" not in den  # no error profile, no uncertainty array


def test_denoised_store_keeps_each_pixels_uncertainty(tmp_path):
    """A checkpoint with a validation error profile gives every denoised pixel its sigma; the spectra
    store keeps it beside the flux, row for row, and refuses rows without it once it has it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_survey import FAKE_GRID, make_record

    from pairspec.store import create_spectra_store, create_store

    class WithSigma(FakePredictor):
        def predict(self, flux, ivar, batch_size=256, denoise=False):
            out = super().predict(flux, ivar, batch_size, denoise)
            if denoise:  # a per-S/N-bin profile: here 0.01 / (S/N of the visit) in every pixel
                out["denoised_sigma"] = np.repeat((0.01 / out["snr"])[:, None], flux.shape[1], 1).astype(np.float32)
            return out

    store = create_store(str(tmp_path / "s.zarr"), "fake", "t1", FAKE_GRID, APOGEE_CORE_SCHEMA, {"source": "x"},
                         chunk=4)
    store.append([make_record(f"2M{i:05d}", f"u/{i:05d}") for i in range(5)])
    res = predict(WithSigma(grid=FAKE_GRID), str(tmp_path / "s.zarr"), tmp_path / "cat.parquet", batch_size=2,
                  denoised_path=str(tmp_path / "den.zarr"), progress=False)
    import zarr

    den = zarr.open_group(str(tmp_path / "den.zarr"), mode="r")
    visits = Table.read(res.visit_path)
    sig = np.asarray(den["sigma"][:])
    assert sig.shape == den["flux"].shape == (res.n_visits, FAKE_GRID.npix)
    np.testing.assert_allclose(sig[:, 0], 0.01 / np.asarray(den["snr"][:]), rtol=1e-5)
    assert list(den["id"][:]) == list(visits["visit_id"])

    # `pairspec info` and `validate` know the denoised store (they called it "not a pairspec store")
    from pairspec.info import describe
    from pairspec.validate import validate_path

    summary = describe(str(tmp_path / "den.zarr"))
    assert summary["kind"] == "spectra store" and summary["n_spectra"] == res.n_visits and summary["sigma"]
    assert "valid: yes" in summary["text"] and validate_path(str(tmp_path / "den.zarr")) == []
    zarr.open_group(str(tmp_path / "den.zarr"), mode="r+")["sigma"].resize((2, FAKE_GRID.npix))  # rows lost
    assert validate_path(str(tmp_path / "den.zarr")) == [f"sigma has 2 rows, {res.n_visits} committed"]

    w = create_spectra_store(str(tmp_path / "d2.zarr"), FAKE_GRID, FAKE_GRID.npix)
    one = np.ones((1, FAKE_GRID.npix), np.float32)
    w.append(["a"], one, sigma=one)
    with pytest.raises(ValueError, match="sigma given for some rows"):
        w.append(["b"], one)
    with pytest.raises(ValueError, match="sigma shape"):
        w.append(["b"], one, sigma=one[:, :3])
    w2 = create_spectra_store(str(tmp_path / "d3.zarr"), FAKE_GRID, FAKE_GRID.npix)
    w2.append(["a"], one)
    with pytest.raises(ValueError, match="sigma given for some rows"):
        w2.append(["b"], one, sigma=one)


from realdata import MULTI, REAL

REAL_APSTAR = REAL / MULTI


@pytest.mark.realdata
def test_real_apstar_files_with_a_broken_one(tmp_path):
    from pairspec.surveys.apogee.layout import APOGEE_GRID

    good = tmp_path / REAL_APSTAR.name
    shutil.copy(REAL_APSTAR, good)
    bad = tmp_path / "apStar-dr17-broken.fits"
    bad.write_bytes(REAL_APSTAR.read_bytes()[:20000])  # truncated download
    with pytest.warns(UserWarning, match="apStar-dr17-broken.fits"):
        res = predict(FakePredictor(grid=APOGEE_GRID), [str(bad), str(good)], tmp_path / "c.ecsv", progress=False)
    assert [p for p, _ in res.skipped] == [str(bad)]
    visits, stars = Table.read(res.visit_path), Table.read(res.star_path)
    assert list(stars["star_id"]) == ["2M17335483-2753043"] and res.n_visits == len(visits) >= 2
    assert np.all(visits["snr"] > 10) and np.all(np.isfinite(visits["teff"]))


def _real_store(tmp_path, n=6):
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_survey import FAKE_GRID, make_record

    from pairspec.store import create_store

    store = create_store(str(tmp_path / "s.zarr"), "fake", "t1", FAKE_GRID, APOGEE_CORE_SCHEMA, {"source": "x"},
                         chunk=4)
    store.append([make_record(f"2M{i:05d}", f"u/{i:05d}") for i in range(n)])
    return str(tmp_path / "s.zarr"), FakePredictor(grid=FAKE_GRID)


def test_denoised_path_never_overwrites_what_is_not_a_spectra_store(tmp_path):
    """--denoised pointed at the input store, a folder with files in it or a file is refused before anything
    is written (it used to replace them); an earlier denoised store is replaced."""
    from pairspec.store import open_store

    path, predictor = _real_store(tmp_path)
    n_visits = open_store(path).n_visits
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    a_file = tmp_path / "a.txt"
    a_file.write_text("precious")
    for target, what in [(path, "a pair store"), (folder, "not empty"), (a_file, "a file")]:
        with pytest.raises(ValueError, match=what):
            predict(predictor, path, tmp_path / "c.fits", denoised_path=str(target), progress=False)
    assert open_store(path).n_visits == n_visits  # the input store is whole
    assert (folder / "keep.txt").read_text() == "precious" and a_file.read_text() == "precious"
    assert not (tmp_path / "c.fits").exists()

    den = str(tmp_path / "den.zarr")
    predict(predictor, path, tmp_path / "c.fits", denoised_path=den, progress=False)
    predict(predictor, path, tmp_path / "c.fits", denoised_path=den, progress=False)  # a rerun replaces it

    import zarr

    assert zarr.open_group(den, mode="r").attrs["n"] == n_visits


def test_a_store_among_files_and_an_empty_split_are_errors(tmp_path):
    path, predictor = _real_store(tmp_path, n=1)
    fits_file = tmp_path / "x.fits"
    fits.PrimaryHDU().writeto(fits_file)
    with pytest.raises(ValueError, match="give one pair store, or spectrum files, not both"):
        predict(predictor, [path, str(fits_file)], tmp_path / "c.fits", progress=False)
    assert predict(predictor, [path], tmp_path / "one.fits", progress=False).n_visits > 0  # one store in a list
    from pairspec.store import open_store

    split = {0: "train", 1: "val", 2: "test"}
    used = int(open_store(path).star_table()["split"][0])
    empty = next(name for code, name in split.items() if code != used)
    den = tmp_path / "den.zarr"
    with pytest.raises(ValueError, match=f"no visits to predict in split '{empty}'"):
        predict(predictor, path, tmp_path / "c.fits", split=empty, denoised_path=str(den), progress=False)
    assert not (tmp_path / "c.fits").exists() and not den.exists()  # no empty catalogue, no empty spectra store
