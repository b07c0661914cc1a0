"""The LAMOST adapter on files this test writes (pairspec.surveys.lamost.writers): both layouts, the
rest-frame shift, grouping, catalogues and label transfer, and every kind of bad input."""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pairspec.surveys import get_adapter
from pairspec.surveys.base import AdapterError
from pairspec.surveys.lamost import LamostAdapter
from pairspec.surveys.lamost.files import read_lrs, read_mrs
from pairspec.surveys.lamost.group import group_files
from pairspec.surveys.lamost.layout import BADVALUE, C_KMS
from pairspec.surveys.lamost.render import render_lrs_epoch, render_mrs_night
from pairspec.surveys.lamost.writers import write_lrs, write_mrs

LINES = (5000.0, 5100.0, 5200.0, 5300.0, 6400.0, 6564.6, 6700.0, 4500.0, 7500.0)  # rest, vacuum, Angstrom


def model() -> tuple[np.ndarray, np.ndarray]:
    """A flat normalised spectrum with Gaussian lines (depth 0.6, sigma 0.6 A) at LINES."""
    ll = np.arange(3.55, 3.97, 2e-6)
    w = 10 ** ll
    flux = np.ones_like(w)
    for c in LINES:
        flux *= 1 - 0.6 * np.exp(-0.5 * ((w - c) / 0.6) ** 2)
    return ll, flux


MODEL = model()


def mrs_file(path, obsid=700000001, desig="J100000.00+300000.0", ra=150.0, dec=30.0, lmjd=58500, n_exp=2,
             layout="rows", rv=0.0, seed=0, mutate=None, snr=40.0) -> Path:
    rng = np.random.default_rng(seed)
    night = {"lmjm": [lmjd * 1440 + 21 * k for k in range(n_exp)], "snr": [snr] * n_exp, "exptime": 1200,
             "no_light": False, "rv": rv}
    exposures, coadds = render_mrs_night(MODEL, night, 5000.0, rng)
    if mutate:
        mutate(exposures, coadds)
    primary = {"OBSID": obsid, "DESIG": "LAMOST " + desig, "RA": ra, "DEC": dec, "LMJD": lmjd, "PLANID": "TEST01",
               "SPID": 2, "FIBERID": 7, "HELIO": True, "VACUUM": True, "DATA_V": "LAMOST DR7", "FIBERMAS": 0}
    return write_mrs(path, primary, exposures, coadds, layout)


def lrs_file(path, layout="image", obsid=300000001, desig="J100000.00+300000.0", ra=150.0, dec=30.0, z=0.0,
             seed=0, extra=None) -> Path:
    rng = np.random.default_rng(seed)
    r = render_lrs_epoch(MODEL, {"rv": z * C_KMS, "snr": 50.0}, 5000.0, rng, layout)
    primary = {"DESIG": "LAMOST " + desig, "RA": ra, "DEC": dec, "LMJD": 57000, "PLANID": "LTEST", "SPID": 3,
               "FIBERID": 9, "Z": z, "CLASS": "STAR", "HELIO": True, "VACUUM": True, "SNRG": r["snr"]["SNRG"],
               "DATE-OBS": "2014-12-09T18:00:00", **(extra or {})}
    if layout != "image_dr1":
        primary["OBSID"] = obsid
    return write_lrs(path, primary, r["wavelength"], r["flux"], r["ivar"], r["andmask"], r["ormask"], layout)


def catalogue(path, rows: list[dict]) -> Path:
    keys = list(rows[0])
    path.write_text(",".join(keys) + "\n" + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in rows))
    return path


def helio(**kw) -> LamostAdapter:
    return LamostAdapter(frame="heliocentric", **{"catalog": None, **kw})


def test_dr7_rows_and_dr9_arrays_layouts_give_the_same_record(tmp_path):
    a = mrs_file(tmp_path / "a" / "med-58500-TEST01_sp02-007.fits", layout="rows")
    b = mrs_file(tmp_path / "b" / "med-58500-TEST01_sp02-007.fits", layout="arrays")
    fa, fb = read_mrs(str(a)), read_mrs(str(b))
    assert (fa.layout, fb.layout) == ("rows", "arrays") and sorted(fa.exposures) == sorted(fb.exposures)
    lmjm = min(fa.exposures)
    assert np.array_equal(fa.exposures[lmjm]["R"].flux, fb.exposures[lmjm]["R"].flux)
    # LOGLAM (float32 log10) and WAVELENGTH (float32 Angstrom) round differently: < 0.03 of a pixel
    assert np.abs(fa.exposures[lmjm]["R"].loglam - fb.exposures[lmjm]["R"].loglam).max() < 3e-7
    ra, rb = (helio().read(helio().discover(str(p)).units[0]) for p in (a, b))
    assert ra.visit_id == rb.visit_id and np.array_equal(ra.visit_ivar > 0, rb.visit_ivar > 0)
    rel = np.abs(ra.visit_flux - rb.visit_flux) / np.maximum(np.abs(ra.visit_flux), 1.0)
    assert np.median(rel[ra.visit_ivar > 0]) < 1e-4 and rel.max() < 0.05


def test_rest_frame_shift_puts_lines_at_their_rest_wavelength(tmp_path):
    rv = 150.0
    path = mrs_file(tmp_path / "med-58500-TEST01_sp02-007.fits", rv=rv, snr=200.0)
    catalogue(tmp_path / "test_MRS.csv", [{"obsid": 700000001, "rv": rv, "teff": 5000}])
    rest = LamostAdapter()  # finds test_MRS.csv beside the files (catalog="auto")
    with pytest.warns(UserWarning, match="logg"):
        rec = rest.read(rest.discover(str(tmp_path)).units[0])
    hrec = helio().read(helio().discover(str(path)).units[0])
    x = rest.grid.crval1 + rest.grid.cdelt1 * np.arange(rest.grid.npix)
    for line in (5100.0, 6564.6):
        k = int(np.argmin(np.abs(x - math.log10(line))))
        win = np.arange(k - 40, k + 41)
        assert abs(win[np.argmin(rec.coadd_flux[win])] - k) <= 1  # 1 px = 6.9 km/s
        shift = math.log10(1 + rv / C_KMS) / rest.grid.cdelt1  # 21.7 px
        hk = int(round(k + shift))
        hwin = np.arange(hk - 40, hk + 41)
        assert abs(hwin[np.argmin(hrec.coadd_flux[hwin])] - (k + shift)) <= 1.5
    assert rec.labels[0] == 5000 and rec.meta["rv_kms"] == [rv]


def test_duplicate_spectra_and_catalogue_rows_without_a_file(tmp_path):
    src = tmp_path / "src"
    one = mrs_file(src / "58500" / "med-58500-TEST01_sp02-007.fits")
    copy = src / "copy" / one.name
    copy.parent.mkdir()
    shutil.copy(one, copy)
    mrs_file(src / "58600" / "med-58600-TEST02_sp02-007.fits", obsid=700000002, lmjd=58600, seed=1)
    cat = catalogue(tmp_path / "cat.csv", [{"obsid": o, "rv": 0.0} for o in (700000001, 700000002, 799999999)])
    with pytest.warns(UserWarning):
        disc = LamostAdapter(catalog=str(cat)).discover(str(src))
    assert len(disc.units) == 1 and len(disc.units[0].row["files"]) == 2  # two nights of one star
    problems = {s.path: s.problem for s in disc.skipped}
    assert "duplicate: OBSID 700000001" in problems[str(copy)] and str(one) in problems[str(copy)]
    assert "OBSID 799999999" in problems[str(cat)] and "no spectrum file" in problems[str(cat)]


def test_broken_files_are_reported_and_the_rest_ingested(tmp_path):
    from pairspec.ingest import ingest
    from pairspec.store import open_store

    src = tmp_path / "src"
    a1 = mrs_file(src / "med-58500-A_sp01-001.fits", obsid=1, desig="J010000.00+100000.0", ra=15.0, dec=10.0)
    mrs_file(src / "med-58510-A_sp01-001.fits", obsid=2, desig="J010000.00+100000.0", ra=15.0, dec=10.0,
                  lmjd=58510, seed=2)
    garbage = mrs_file(src / "med-58500-B_sp01-002.fits", obsid=3, desig="J020000.00+100000.0", ra=30.0, dec=10.0)
    gz = src / "med-58500-C_sp01-003.fits.gz"
    plain = mrs_file(tmp_path / "c.fits", obsid=4, desig="J030000.00+100000.0", ra=45.0, dec=10.0)
    data = gzip.compress(plain.read_bytes())
    gz.write_bytes(data[: int(len(data) * 0.6)])  # header intact, data cut off
    mrs_file(src / "med-58500-D_sp01-004.fits", obsid=5, desig="J040000.00+100000.0", ra=60.0, dec=10.0)
    a1.write_bytes(a1.read_bytes()[:50000])  # cut inside the data
    garbage.write_bytes(b"not a spectrum at all\n" * 100)
    disc = helio().discover(str(src))
    problems = {s.path: s.problem for s in disc.skipped}
    assert "truncated" in problems[str(a1)] and "not a FITS file" in problems[str(garbage)]
    unit_c = next(u for u in disc.units if u.path == str(gz))
    with pytest.raises(AdapterError) as err:
        helio().read(unit_c)
    assert err.value.path == str(gz) and "cannot read FITS" in err.value.problem
    report = ingest("lamost", str(src), str(tmp_path / "s.zarr"), workers=1, progress=False,
                    adapter_options={"frame": "heliocentric"})
    named = {s.path for s in report.skipped}
    assert {str(a1), str(garbage), str(gz)} <= named
    store = open_store(str(tmp_path / "s.zarr"))
    assert store.validate() == []
    assert sorted(store.star_table()["id"]) == ["J010000.00+100000.0", "J040000.00+100000.0"]  # A from a2 only
    assert store.n_visits == 4  # two exposures each


def test_bad_files_drop_keeps_the_rest_of_the_star(tmp_path):
    good = mrs_file(tmp_path / "med-58500-A_sp01-001.fits", obsid=1)
    bad = mrs_file(tmp_path / "med-58510-A_sp01-001.fits", obsid=2, lmjd=58510, seed=3)
    data = gzip.compress(bad.read_bytes())
    bad.unlink()
    cut = tmp_path / "med-58510-A_sp01-001.fits.gz"
    cut.write_bytes(data[: len(data) // 2])
    unit = helio().discover(str(tmp_path)).units[0]
    assert len(unit.row["files"]) == 2
    with pytest.raises(AdapterError, match="other file"):
        helio().read(unit)
    rec = helio(bad_files="drop").read(unit)
    assert rec.visit_id[0].startswith(good.name.split(".fits")[0]) and rec.n_visits == 2
    assert len(rec.meta["dropped_files"]) == 1 and str(cut) in rec.meta["dropped_files"][0]


def test_wrong_grid_and_inconsistent_files_are_adapter_errors(tmp_path):
    def moved(exps, coadds):
        exps[0]["loglam"] = exps[0]["loglam"] + 0.11  # the B exposure now claims 6300-6900 A

    def repeated(exps, coadds):
        exps[1]["loglam"][10] = exps[1]["loglam"][11]

    for name, mutate, message in (("moved", moved, "wrong wavelength grid"), ("repeated", repeated, "repeated")):
        path = mrs_file(tmp_path / name / "med-58500-T_sp01-001.fits", mutate=mutate)
        unit = helio().discover(str(path)).units[0]
        with pytest.raises(AdapterError, match=message) as err:
            helio().read(unit)
        assert err.value.path == str(path)
    from astropy.io import fits

    bad = tmp_path / "spec-57000-X_sp01-001.fits"
    cols = [fits.Column(name="FLUX", format="3909E", array=np.ones((1, 3909))),
            fits.Column(name="IVAR", format="3909E", array=np.ones((1, 3909))),
            fits.Column(name="WAVELENGTH", format="3000E", array=np.linspace(3700, 9000, 3000)[None])]
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"RA": 1.0, "DEC": 2.0, "Z": 0.0, "OBSID": 9})),
                  fits.BinTableHDU.from_columns(cols)]).writeto(bad)
    with pytest.raises(AdapterError, match="inconsistent lengths"):
        read_lrs(str(bad))


def test_nan_flux_and_zero_or_negative_ivar_become_bad_pixels(tmp_path):
    def spoil(exps, coadds):
        blue = next(e for e in exps if e["arm"] == "B")
        blue["flux"][1000:1010] = np.nan
        blue["ivar"][2000:2010] = 0.0
        blue["ivar"][2500] = -1.0
        blue["ivar"][3000] = np.nan
        red2 = [e for e in exps if e["arm"] == "R"][1]
        red2["ivar"][:] = 0.0

    path = mrs_file(tmp_path / "med-58500-T_sp01-001.fits", mutate=spoil)
    rec = helio().read(helio().discover(str(path)).units[0])
    for arr in (rec.visit_flux, rec.visit_ivar, rec.coadd_flux, rec.coadd_ivar):
        assert np.isfinite(arr).all()
    assert (rec.visit_ivar >= 0).all() and (rec.coadd_ivar >= 0).all() and rec.n_visits == 2
    flagged = (rec.visit_pixmask[0] & BADVALUE) != 0
    assert 20 <= flagged.sum() <= 40 and (rec.visit_ivar[0, flagged] == 0).all()
    red = np.arange(*helio().grid.blocks[1])
    assert (rec.visit_ivar[1, red] == 0).all() and (rec.visit_ivar[1, np.arange(*helio().grid.blocks[0])] > 0).any()

    def all_bad(exps, coadds):
        for e in exps:
            e["ivar"][:] = 0.0

    dead = mrs_file(tmp_path / "dead" / "med-58500-T_sp01-001.fits", mutate=all_bad)
    with pytest.raises(AdapterError, match="no usable exposure") as err:
        helio().read(helio().discover(str(dead)).units[0])
    assert err.value.path == str(dead)


def test_files_group_by_position_and_gaia_id():
    arcsec = 1 / 3600
    ra = np.array([10.0, 10.0 + 0.3 * arcsec, 10.0 + 5 * arcsec, 10.0, 10.0 + 0.5 * arcsec, 50.0, 50.0 + 60 * arcsec])
    dec = np.array([20.0, 20.0, 20.0, 20.0 + 1.0 * arcsec, 20.0 + 0.9 * arcsec, 0.0, 0.0])
    gaia = np.array([11, 0, 0, 22, 0, 33, 33])
    # 0, 1: 0.3" apart (one star, other DESIG); 2: 5" away; 3: 1" off but another Gaia source (split);
    # 4: no id, nearest to 3; 5, 6: 60" apart but one Gaia id (linked)
    assert group_files(ra, dec, gaia, 3.0) == [[0, 1], [2], [3, 4], [5, 6]]
    assert group_files(ra[:3], dec[:3], np.zeros(3, int), 10.0) == [[0, 1, 2]]


def test_catalogue_columns_sentinels_missing_and_explicit_names(tmp_path):
    mrs_file(tmp_path / "s" / "med-58500-A_sp01-001.fits", obsid=1, desig="J010000.00+100000.0", ra=15, dec=10)
    mrs_file(tmp_path / "s" / "med-58500-B_sp01-002.fits", obsid=2, desig="J020000.00+100000.0", ra=30, dec=10)
    cat = catalogue(tmp_path / "c.csv", [
        {"OBSID": 1, "RV": 0.0, "TEFF": 5100, "TEFF_ERR": 80, "LOGG": 4.4, "LOGG_ERR": -1, "FEH": -0.2, "FEH_ERR": 0.05,
         "ALPHA_CNN": 0.1},
        {"OBSID": 2, "RV": 0.0, "TEFF": -9999, "TEFF_ERR": -9999, "LOGG": 2.5, "LOGG_ERR": 0.1, "FEH": 0.1,
         "FEH_ERR": 0.05, "ALPHA_CNN": 0.2}])
    adapter = LamostAdapter(catalog=str(cat))
    with pytest.warns(UserWarning, match="alpha_fe"):
        units = {u.star_id: u for u in adapter.discover(str(tmp_path / "s")).units}
    a, b = (units[k].row for k in ("J010000.00+100000.0", "J020000.00+100000.0"))
    assert a["labels"][:3] == pytest.approx([5100, 4.4, -0.2]) and math.isnan(a["labels"][3])
    assert a["label_err"][0] == 80 and math.isnan(a["label_err"][1])  # error <= 0 is missing
    assert math.isnan(b["labels"][0]) and math.isnan(b["label_err"][0])  # -9999 is missing
    with pytest.raises(AdapterError, match="alpha_fe") as err:
        LamostAdapter(catalog=str(cat), labels=["teff", "alpha_fe"]).discover(str(tmp_path / "s"))
    assert err.value.path == str(cat)
    named = LamostAdapter(catalog=str(cat), columns={"alpha_fe": "alpha_cnn"}).discover(str(tmp_path / "s"))
    assert sorted(u.row["labels"][3] for u in named.units) == pytest.approx([0.1, 0.2])
    with pytest.raises(AdapterError, match="not in the catalogue"):
        LamostAdapter(catalog=str(cat), columns={"teff": "teff_nn"}).discover(str(tmp_path / "s"))


def test_labels_from_another_survey_by_gaia_id_or_position(tmp_path):
    from astropy.table import Table

    arcsec = 1 / 3600
    src = tmp_path / "s"
    mrs_file(src / "med-58500-A_sp01-001.fits", obsid=1, desig="J010000.00+100000.0", ra=15.0, dec=10.0)
    mrs_file(src / "med-58500-B_sp01-002.fits", obsid=2, desig="J020000.00+100000.0", ra=30.0, dec=10.0)
    mrs_file(src / "med-58500-C_sp01-003.fits", obsid=3, desig="J030000.00+100000.0", ra=45.0, dec=10.0)
    cat = catalogue(tmp_path / "c.csv", [{"obsid": o, "rv": 0.0, "gaia_source_id": g, "teff": 6000}
                                         for o, g in ((1, 0), (2, 4242), (3, 0))])
    allstar = tmp_path / "allStar.fits"
    Table({"APOGEE_ID": ["a", "b"], "RA": [15.0 + 1.0 * arcsec, 33.0], "DEC": [10.0, 10.0],
           "GAIAEDR3_SOURCE_ID": np.array([0, 4242], dtype=np.int64), "TEFF": [4800.0, 4900.0],
           "TEFF_ERR": [20.0, 25.0], "LOGG": [2.4, 2.5], "FE_H": [-0.1, 0.0], "ALPHA_M": [0.05, 0.1]}).write(allstar)
    with pytest.warns(UserWarning):
        adapter = LamostAdapter(catalog=str(cat), labels_from=str(allstar), match_radius=2.0)
        units = {u.star_id: u.row for u in adapter.discover(str(src)).units}
    assert units["J010000.00+100000.0"]["labels"] == pytest.approx([4800, 2.4, -0.1, 0.05])  # 1" away
    assert units["J020000.00+100000.0"]["labels"] == pytest.approx([4900, 2.5, 0.0, 0.1])  # Gaia id, 3 deg away
    assert np.isnan(units["J030000.00+100000.0"]["labels"]).all()
    assert units["J030000.00+100000.0"]["label_source"] == "labels_from: no match"
    with pytest.warns(UserWarning):
        tight = LamostAdapter(catalog=str(cat), labels_from=str(allstar), match_radius=0.5).discover(str(src))
    assert np.isnan(next(u.row for u in tight.units if u.star_id == "J010000.00+100000.0")["labels"]).all()


def test_lrs_layouts_read_alike_and_non_stars_are_skipped(tmp_path):
    paths = {lay: lrs_file(tmp_path / lay / "spec-57000-LTEST_sp03-009.fits", layout=lay, z=1e-4)
             for lay in ("image", "table")}
    dr1 = lrs_file(tmp_path / "dr1" / "spec-57000-LTEST_sp03-009.fits", layout="image_dr1", z=1e-4)
    a, b = (read_lrs(str(paths[k])) for k in ("image", "table"))
    assert (a.layout, b.layout) == ("image", "table")
    assert np.array_equal(a.spectrum.flux, b.spectrum.flux) and np.array_equal(a.spectrum.bits, b.spectrum.bits)
    assert np.allclose(read_lrs(str(dr1)).spectrum.loglam, 3.5682 + 1e-4 * np.arange(3904), atol=1e-9)
    adapter = LamostAdapter(resolution="lrs")
    recs = [adapter.read(adapter.discover(str(p)).units[0]) for p in (paths["image"], paths["table"])]
    assert np.allclose(recs[0].visit_flux, recs[1].visit_flux, rtol=1e-4, atol=1e-3)
    assert recs[0].meta["rv_kms"] == pytest.approx([1e-4 * C_KMS]) and recs[0].meta["layouts"] == ["image"]
    gal = lrs_file(tmp_path / "gal" / "spec-57000-LTEST_sp03-010.fits", extra={"CLASS": "GALAXY"})
    air = lrs_file(tmp_path / "gal" / "spec-57000-LTEST_sp03-011.fits", obsid=5, ra=10.0, extra={"VACUUM": False})
    disc = adapter.discover(str(tmp_path / "gal"))
    assert disc.units == [] and {s.path: s.problem.split(":")[0] for s in disc.skipped} == {
        str(gal): "CLASS = GALAXY", str(air): "VACUUM = F"}


def test_options_are_checked_and_lone_files_read():
    for bad in ({"resolution": "hrs"}, {"frame": "galactic"}, {"bad_files": "ignore"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LamostAdapter(**bad)
    with pytest.raises(ValueError, match="labels_from"):
        get_adapter("lamost", label_from="x.fits")
    assert LamostAdapter().grid.npix == 13791 and LamostAdapter(resolution="lrs").grid.npix == 3534
    assert LamostAdapter(frame="heliocentric").grid.frame == "heliocentric"


def test_lone_file_reader_for_predict(tmp_path):
    lrs = lrs_file(tmp_path / "spec-57000-LTEST_sp03-009.fits", z=2e-4)
    adapter = LamostAdapter(resolution="lrs")
    assert adapter.can_read(lrs) and not adapter.can_read(tmp_path / "med-1.fits")
    rec = adapter.read_file(lrs)
    assert rec.n_visits == 1 and np.isnan(rec.labels).all() and rec.meta["rv_kms"] == pytest.approx([2e-4 * C_KMS])
    mrs = mrs_file(tmp_path / "med-58500-T_sp01-001.fits")
    with pytest.raises(AdapterError, match="radial velocity"):
        LamostAdapter().read_file(mrs)
    assert LamostAdapter().read_file(mrs, rv_kms=12.0).meta["rv_kms"] == [12.0]


def test_a_spectrum_missing_from_the_catalogue_gets_its_stars_median_rv(tmp_path):
    for k, lmjd in enumerate((58500, 58510, 58520)):
        mrs_file(tmp_path / f"med-{lmjd}-T_sp01-001.fits", obsid=k + 1, lmjd=lmjd, seed=k)
    cat = catalogue(tmp_path / "c.csv", [
        {"obsid": 1, "designation": "LAMOST J100000.00+300000.0", "rv": 10.0, "snr": 5, "teff": 5000},
        {"obsid": 3, "designation": "LAMOST J100000.00+300000.0", "rv": 30.0, "snr": 9, "teff": 5200}])
    with pytest.warns(UserWarning):
        unit = LamostAdapter(catalog=str(cat)).discover(str(tmp_path)).units[0]
    # obsid 2 is not in the catalogue: not the RV of another night's row, the median of the star's others
    assert unit.row["rv"] == [10.0, 20.0, 30.0] and unit.row["labels"][0] == 5200  # labels: best-S/N row


def test_a_catalogue_cut_short_or_without_key_columns_is_said_so(tmp_path):
    """A CSV catalogue cut mid-row was read with a row of missing values (files then skipped for 'no radial
    velocity'); one without obsid and designation columns skipped every file for the same false reason."""
    mrs_file(tmp_path / "s" / "med-58500-A_sp01-001.fits", obsid=1, desig="J010000.00+100000.0", ra=15, dec=10)
    rows = [{"OBSID": 1, "RV": 0.0, "TEFF": 5100, "TEFF_ERR": 80, "LOGG": 4.4, "LOGG_ERR": 0.1, "FEH": -0.2,
             "FEH_ERR": 0.05}] * 3
    cat = catalogue(tmp_path / "c.csv", rows)
    text = cat.read_text()
    cut = tmp_path / "cut.csv"
    cut.write_text(text[: text.rstrip().rfind(",")])  # the last row loses its last field
    with pytest.raises(AdapterError, match="truncated"):
        LamostAdapter(catalog=str(cut)).discover(str(tmp_path / "s"))
    nokey = catalogue(tmp_path / "nokey.csv", [{k: v for k, v in r.items() if k != "OBSID"} for r in rows])
    with pytest.raises(AdapterError, match="neither an obsid nor a designation"):
        LamostAdapter(catalog=str(nokey)).discover(str(tmp_path / "s"))
