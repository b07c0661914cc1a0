"""Broken APOGEE inputs: each gives a clear message naming the file, and the other stars still read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from realdata import MULTI, MULTI_ID, REAL, REQUIRES_REAL, SINGLE, SINGLE_ID

from pairspec.surveys.apogee.adapter import ApogeeDR17Adapter
from pairspec.surveys.base import AdapterError

pytestmark = REQUIRES_REAL
LABELS = dict(TEFF=4500.0, TEFF_ERR=80.0, LOGG=2.5, LOGG_ERR=0.05, FE_H=-0.2, FE_H_ERR=0.01,
              MG_FE=0.1, MG_FE_ERR=0.02)


def write_allstar(path: Path, rows: list[tuple]) -> None:
    """rows of (APOGEE_ID, FIELD, SNR, EXTRATARG, label overrides)."""
    from astropy.io import fits

    def text(name, values):
        width = max(len(v) for v in values) + 3
        return fits.Column(name=name, format=f"{width}A", array=np.array([v.ljust(width) for v in values]))

    stars = [r[0] for r in rows]
    cols = [text("APOGEE_ID", stars), text("TELESCOPE", ["apo25m"] * len(rows)),
            text("FIELD", [r[1] for r in rows]), text("FILE", [f"apStar-dr17-{s}.fits" for s in stars]),
            fits.Column(name="SNR", format="D", array=np.array([r[2] for r in rows])),
            fits.Column(name="EXTRATARG", format="J", array=np.array([r[3] for r in rows], dtype=np.int32)),
            fits.Column(name="ASPCAPFLAG", format="K", array=np.zeros(len(rows), dtype=np.int64))]
    for name in LABELS:
        values = [{**LABELS, **(r[4] if len(r) > 4 else {})}[name] for r in rows]
        cols.append(fits.Column(name=name, format="D", array=np.array(values)))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path, overwrite=True)


def make_tree(tmp_path: Path, rows=None) -> Path:
    """Real multi-visit star in 000+02, real single-visit star in K04_083+13, plus an allStar."""
    root = tmp_path / "dr17"
    for name, field in ((MULTI, "000+02"), (SINGLE, "K04_083+13")):
        (root / "apo25m" / field).mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / name, root / "apo25m" / field / name)
    rows = rows or [(MULTI_ID, "000+02", 154.2, 0), (SINGLE_ID, "K04_083+13", 137.5, 0)]
    write_allstar(root / "allStar-dr17-synspec_rev1.fits", rows)
    return root


def rewrite(path: Path, change) -> None:
    """Apply change(hdul) to the real multi-visit star and write the result to `path`."""
    from astropy.io import fits

    with fits.open(REAL / MULTI, memmap=False) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    hdul = change(hdul) or hdul
    hdul.writeto(path, overwrite=True)


def multi_path(root: Path) -> Path:
    return root / "apo25m" / "000+02" / MULTI


def broken_multi(tmp_path, change=None, raw_bytes=None):
    """Tree whose multi-visit file is broken; returns (adapter, units, broken path)."""
    root = make_tree(tmp_path)
    path = multi_path(root)
    if raw_bytes is not None:
        path.write_bytes(raw_bytes)
    else:
        rewrite(path, change)
    adapter = ApogeeDR17Adapter()
    units = adapter.discover(root).units
    assert [u.star_id for u in units] == [MULTI_ID, SINGLE_ID]  # discovery does not open spectra
    assert adapter.read(units[1]).n_visits == 1  # the healthy star still reads
    return adapter, units, path


def read_error(adapter, unit) -> AdapterError:
    with pytest.raises(AdapterError) as info:
        adapter.read(unit)
    assert info.value.path == unit.path and unit.path in str(info.value)
    return info.value


def test_truncated_file(tmp_path):
    data = (REAL / MULTI).read_bytes()
    adapter, units, _ = broken_multi(tmp_path, raw_bytes=data[: len(data) // 2])
    assert "cannot read FITS" in read_error(adapter, units[0]).problem


def test_random_bytes(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, 30000, dtype=np.uint8).tobytes()
    adapter, units, _ = broken_multi(tmp_path, raw_bytes=noise)
    assert read_error(adapter, units[0]).problem.startswith("cannot read FITS:")


def test_missing_hdu(tmp_path):
    adapter, units, _ = broken_multi(tmp_path, lambda h: h[:1])
    assert "missing HDU" in read_error(adapter, units[0]).problem


def test_wrong_crval1(tmp_path):
    def shift(h):
        for k in (0, 1, 2, 3):
            h[k].header["CRVAL1"] = 4.18

    adapter, units, _ = broken_multi(tmp_path, shift)
    problem = read_error(adapter, units[0]).problem
    assert "wrong wavelength grid" in problem and "CRVAL1=4.18 " in problem and "expected CRVAL1=4.179" in problem


def test_wrong_npix(tmp_path):
    def cut(h):
        for k in range(1, 8):
            h[k].data = h[k].data[:, :8000].copy()

    adapter, units, _ = broken_multi(tmp_path, cut)
    assert "NAXIS1=8000" in read_error(adapter, units[0]).problem


def test_inconsistent_rows(tmp_path):
    def drop_err_row(h):
        h[2].data = h[2].data[:4].copy()

    adapter, units, _ = broken_multi(tmp_path, drop_err_row)
    assert "inconsistent shapes" in read_error(adapter, units[0]).problem


def test_nan_inf_flux_and_bad_errors_are_masked(tmp_path):
    def spoil(h):
        h[1].data[2, 1000:1010] = np.nan
        h[1].data[3, 2000] = np.inf
        h[2].data[2, 1500:1510] = 0.0
        h[2].data[4, 1600:1610] = -1.0
        h[2].data[3, 5000] = 1e6  # above the 1e5 ceiling
        h[2].data[3, 5001] = 60 * np.median(h[2].data[3, 1000:3000])  # > 50x the typical error

    adapter, units, _ = broken_multi(tmp_path, spoil)
    rec = adapter.read(units[0])
    assert rec.n_visits == 3
    assert np.isfinite(rec.visit_flux).all() and np.isfinite(rec.visit_ivar).all()
    assert not rec.visit_flux[0, 1000:1010].any() and rec.visit_flux[1, 2000] == 0
    for v, sl in ((0, slice(1000, 1010)), (1, slice(2000, 2001)), (0, slice(1500, 1510)),
                  (2, slice(1600, 1610)), (1, slice(5000, 5002))):
        assert not rec.visit_ivar[v, sl].any()
    # the neighbours are untouched
    assert (rec.visit_ivar[0, 1010:1020] > 0).all() and rec.visit_ivar[1, 5002] > 0


def test_one_visit_all_bad_and_one_all_zero_are_dropped(tmp_path):
    def spoil(h):
        h[3].data[3] = 1  # BADPIX everywhere in the second visit
        h[1].data[4] = 0.0  # third visit: an all-zero row as left by a failed RV
        h[2].data[4] = 0.0

    adapter, units, _ = broken_multi(tmp_path, spoil)
    rec = adapter.read(units[0])
    assert rec.n_visits == 1 and rec.visit_id == ["apVisit-dr17-5815-56396-212.fits"]
    assert rec.visit_snr_survey[0] == pytest.approx(67.2, abs=0.05)
    dropped = rec.meta["dropped_visits"]
    assert len(dropped) == 2
    assert "apVisit-dr17-5815-56433-221.fits (row 3): every pixel is bad" == dropped[0]
    assert "row 4" in dropped[1] and "all-zero" in dropped[1]


def test_every_visit_all_bad(tmp_path):
    def spoil(h):
        h[3].data[2:] = 1 << 14  # NOT_ENOUGH_PSF everywhere

    adapter, units, _ = broken_multi(tmp_path, spoil)
    assert "every pixel is bad" in read_error(adapter, units[0]).problem


def test_nvisits_larger_than_the_rows(tmp_path):
    def lie(h):
        h[0].header["NVISITS"] = 5

    adapter, units, _ = broken_multi(tmp_path, lie)
    problem = read_error(adapter, units[0]).problem
    assert "NVISITS=5" in problem and "has 5" in problem


def test_apstar_without_allstar_row_and_row_without_file(tmp_path):
    root = make_tree(tmp_path, rows=[(MULTI_ID, "000+02", 154.2, 0), ("2M00000000+0000000", "120+12", 50.0, 0)])
    found = ApogeeDR17Adapter().discover(root)
    assert [u.star_id for u in found.units] == [MULTI_ID]
    problems = {s.star_id: s for s in found.skipped}
    assert problems["2M00000000+0000000"].problem == "allStar row has no file on disk"
    assert problems["2M00000000+0000000"].path.endswith("apo25m/120+12/apStar-dr17-2M00000000+0000000.fits")
    assert problems[SINGLE_ID].problem == "no allStar row for this apStar file"
    assert problems[SINGLE_ID].path == str(root / "apo25m" / "K04_083+13" / SINGLE)


def test_a_file_of_another_star_under_a_rows_name_is_refused(tmp_path):
    """A misplaced or renamed apStar would give its spectra another star's labels (the audit's case: two
    stars with the same visits and position): the header's OBJID must be the row's APOGEE_ID."""
    root = make_tree(tmp_path)
    shutil.copy(REAL / SINGLE, multi_path(root))  # the single-visit star's file, under the other's name
    adapter = ApogeeDR17Adapter()
    units = adapter.discover(root).units
    err = read_error(adapter, units[0])
    assert f"holds {SINGLE_ID} (header OBJID), but its allStar row is {MULTI_ID}" in str(err)
    assert adapter.read(units[1]).star_id == SINGLE_ID


def test_same_star_twice(tmp_path):
    rows = [(MULTI_ID, "000+02", 154.2, 0), (SINGLE_ID, "K04_083+13", 137.5, 0), (MULTI_ID, "other", 90.0, 0)]
    root = make_tree(tmp_path, rows)
    (root / "apo25m" / "other").mkdir()
    shutil.copy(REAL / MULTI, root / "apo25m" / "other" / MULTI)
    found = ApogeeDR17Adapter().discover(root)
    assert [u.unit_id for u in found.units] == [f"apo25m/000+02/{MULTI}", f"apo25m/K04_083+13/{SINGLE}"]
    (skip,) = found.skipped
    assert skip.path.endswith(f"apo25m/other/{MULTI}") and skip.star_id == MULTI_ID
    assert skip.problem == f"duplicate: APOGEE_ID {MULTI_ID} again; kept apo25m/000+02/{MULTI}"


def test_sentinel_labels_become_nan(tmp_path):
    rows = [(MULTI_ID, "000+02", 154.2, 0, {"TEFF": -9999.0, "TEFF_ERR": -9999.0, "MG_FE": np.nan}),
            (SINGLE_ID, "K04_083+13", 137.5, 0, {"LOGG": 9.0, "FE_H_ERR": 0.0})]
    root = make_tree(tmp_path, rows)
    adapter = ApogeeDR17Adapter()
    first, second = (adapter.read(u) for u in adapter.discover(root).units)
    assert np.isnan(first.labels[[0, 3]]).all() and np.isnan(first.label_err[[0, 3]]).all()
    np.testing.assert_allclose(first.labels[[1, 2]], [2.5, -0.2], rtol=1e-6)
    assert np.isnan(second.labels[1]) and np.isnan(second.label_err[1])  # log g 9 is out of range
    assert second.labels[2] == pytest.approx(-0.2) and np.isnan(second.label_err[2])  # zero error
    assert not second.label_flags.any()  # no flag columns in this allStar


def test_missing_allstar_names_the_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError) as info:
        ApogeeDR17Adapter().discover(tmp_path / "empty")
    assert info.value.path == str(tmp_path / "empty") and "no allStar file" in info.value.problem
    assert "`pairspec predict CHECKPOINT apStar-*.fits` reads apStar files without one" in info.value.problem


def test_allstar_without_required_column(tmp_path):
    from astropy.io import fits

    path = tmp_path / "allStar-dr17-synspec_rev1.fits"
    cols = [fits.Column(name="APOGEE_ID", format="20A", array=np.array([MULTI_ID]))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    with pytest.raises(AdapterError) as info:
        ApogeeDR17Adapter().discover(tmp_path)
    assert info.value.path == str(path) and "TELESCOPE" in info.value.problem


def test_a_truncated_allstar_is_said_to_be_truncated(tmp_path):
    """A download cut short is named as such (it read "HDU1 is not a binary table (not an allStar file?)")."""
    root = make_tree(tmp_path, rows=[(MULTI_ID, "000+02", 154.2, 0)])
    path = root / "allStar-dr17-synspec_rev1.fits"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2880])  # the last FITS block of the table is missing
    with pytest.raises(AdapterError) as info:
        ApogeeDR17Adapter().discover(root)
    assert info.value.path == str(path) and "truncated" in info.value.problem


def test_adapter_options_have_the_types_their_defaults_promise():
    from pairspec.surveys import get_adapter

    with pytest.raises(ValueError, match="option strict must be true or false"):
        get_adapter("apogee", strict="false")  # a text "false" used to switch strict masking on
    assert get_adapter("apogee", strict=True).strict is True
    assert get_adapter("apogee", labels="teff").schema.names == ["teff"]  # not ['t', 'e', 'f', 'f']
    assert get_adapter("apogee", labels="teff, logg").schema.names == ["teff", "logg"]


def test_an_ingest_whose_stars_have_no_label_says_so_and_one_that_reads_nothing_leaves_no_store(tmp_path):
    """A label source that matches no star gave a store of NaN labels with no word (exit 0); an ingest where
    every unit is skipped left a 0-star store that then fixed the grid and options of the rerun."""
    from pairspec.ingest import ingest

    nolab = {k: -9999.0 for k in LABELS}
    root = make_tree(tmp_path, rows=[(MULTI_ID, "000+02", 154.2, 0, nolab), (SINGLE_ID, "K04_083+13", 137.5, 0, nolab)])
    with pytest.warns(UserWarning, match="none of the 2 stars ingested has a label value"):
        ingest("apogee", str(root), str(tmp_path / "s.zarr"), workers=1, progress=False)
    for f in root.glob("apo25m/*/apStar-*.fits"):
        f.write_bytes(f.read_bytes()[:3000])  # every file cut short: nothing readable
    report = ingest("apogee", str(root), str(tmp_path / "none.zarr"), workers=1, progress=False)
    assert report.n_stars == 0 and len(report.skipped) == 2
    assert not (tmp_path / "none.zarr").exists() and not (tmp_path / "none.zarr.ingest-report.json").exists()


def test_numeric_mapping_and_bit_options_are_checked_before_any_work():
    from pairspec.surveys import get_adapter

    for name, options, says in [("gaia_rvs", {"twins": 2.5}, "twins must be a whole number"),
                                ("lamost", {"match_radius": "abc"}, "match_radius must be a number"),
                                ("lamost", {"group_radius": -1}, "group_radius must be > 0"),
                                ("lamost", {"columns": "teff"}, "columns must be a mapping"),
                                ("sdssv", {"bad_bits": [1, 2, 99]}, "bad_bits must be a list of bit numbers 0-62"),
                                ("apogee", {"bad_bits": "hello"}, "bad_bits must be a list of bit numbers")]:
        with pytest.raises(ValueError, match=says):
            get_adapter(name, **options)
    assert get_adapter("gaia_rvs", twins=3.0).twins == 3  # a whole number written 3.0 is 3


def test_gzipped_apstar_files_ingest_and_read_as_the_plain_ones(tmp_path):
    """`can_read` takes apStar-*.fits.gz, so ingest and predict must read them (they said 'no SIMPLE card'
    and 'allStar row has no file on disk')."""
    import gzip

    from pairspec.surveys.apogee.adapter import read_apstar

    plain = ApogeeDR17Adapter().read(ApogeeDR17Adapter().discover(make_tree(tmp_path / "a")).units[0])
    root = make_tree(tmp_path / "b")
    path = multi_path(root)
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    found = ApogeeDR17Adapter().discover(root)
    assert [u.star_id for u in found.units] == [MULTI_ID, SINGLE_ID] and found.skipped == []
    rec = ApogeeDR17Adapter().read(found.units[0])
    np.testing.assert_array_equal(rec.visit_flux, plain.visit_flux)
    assert rec.visit_id == plain.visit_id and rec.labels[0] == plain.labels[0]
    assert read_apstar(gz).n_visits == plain.n_visits  # predict's lone-file path
    gz.write_bytes(gz.read_bytes()[:5000])  # a cut download
    with pytest.raises(AdapterError, match="cannot read the gzipped FITS file"):
        read_apstar(gz)


def test_an_allstar_without_label_columns_gives_a_store_to_predict(tmp_path):
    from astropy.io import fits

    from pairspec.ingest import ingest

    root = make_tree(tmp_path)
    allstar = root / "allStar-dr17-synspec_rev1.fits"
    with fits.open(allstar) as hdul:
        keep = [c for c in hdul[1].columns if c.name in ("APOGEE_ID", "TELESCOPE", "FIELD", "FILE")]
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(keep)]).writeto(allstar, overwrite=True)
    with pytest.warns(UserWarning, match="none of the 27 DR17 label columns"):
        report = ingest("apogee", str(root), str(tmp_path / "s.zarr"), workers=1, progress=False)
    assert report.n_stars == 2
    with pytest.raises(AdapterError, match=r"lacks label column\(s\) \['TEFF'\] asked for by labels="):
        ApogeeDR17Adapter(labels=["teff"]).discover(root)
