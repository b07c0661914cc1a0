"""The SDSS-V adapter on hand-built astra files (tests/test_sdssv_files.py): what it reads, and every kind of
bad input named in a clear error while the rest is ingested."""

from __future__ import annotations

import numpy as np
import pytest
from test_sdssv_files import BOSS_NPIX, aspcap_row, visit, write_mwm, write_summary

from pairspec.surveys import get_adapter
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA, APOGEE_GRID
from pairspec.surveys.base import AdapterError
from pairspec.surveys.sdssv import SdssvAdapter
from pairspec.surveys.sdssv.layout import LABEL_FLAG_WARN, STAR_FLAG_BAD, STAR_FLAG_WARN

PIX = 1000  # a pixel inside the blue chip block


def one_star(root, sdss_id=1234, apo=None, lco=None, star_apo=None, summary=None, **options):
    apo = [visit(mjd=60000), visit(mjd=60010, fiber=11)] if apo is None else apo
    path = write_mwm(root, "mwmVisit", sdss_id, {"APOGEE/APO": apo, "APOGEE/LCO": lco or []}, **options)
    write_mwm(root, "mwmStar", sdss_id, {"APOGEE/APO": star_apo if star_apo is not None else [visit(snr=90.0)]})
    write_summary(root, [aspcap_row(sdss_id)] if summary is None else summary)
    return path


def read_one(root, **options):
    adapter = SdssvAdapter(**options)
    units = adapter.discover(str(root)).units
    assert len(units) == 1
    return adapter.read(units[0])


def test_apogee_store_is_dr17_compatible():
    a = get_adapter("sdssv")
    assert a.grid == APOGEE_GRID  # same grid and chip blocks: a DR17 checkpoint's input
    assert a.schema.names == APOGEE_CORE_SCHEMA.names and a.schema.units == APOGEE_CORE_SCHEMA.units
    assert [(x.lo, x.hi) for x in a.schema.labels] == [(x.lo, x.hi) for x in APOGEE_CORE_SCHEMA.labels]
    boss = get_adapter("sdssv", instrument="boss")
    assert boss.grid.npix == 4648 and abs(boss.grid.wavelength()[0] - 3566.97) < 0.01
    with pytest.raises(ValueError, match="instrument"):
        SdssvAdapter(instrument="desi")
    with pytest.raises(ValueError, match="not in the sdssv schema"):
        SdssvAdapter(labels=["teff", "age"])


def test_reads_visits_coadd_labels_and_bits(tmp_path):
    flags = np.zeros(8575, np.uint64)
    flags[PIX] = 1 << 0  # BADPIX: bad
    flags[PIX + 1] = 1 << 12  # SIG_SKYLINE: kept unless strict
    flux = np.full(8575, 100.0, np.float32)
    flux[PIX + 2] = np.nan  # non-finite flux: bad, and never NaN in the record
    ivar = np.full(8575, 4.0, np.float32)
    ivar[PIX + 3] = 0.0
    ivar[PIX + 4] = np.nan
    apo = [visit(flux=flux, ivar=ivar, pixel_flags=flags, snr=25.0), visit(mjd=60010, fiber=11, snr=40.0)]
    one_star(tmp_path, apo=apo)
    rec = read_one(tmp_path)
    assert rec.star_id == "1234" and rec.n_visits == 2
    assert np.isfinite(rec.visit_flux).all() and np.isfinite(rec.visit_ivar).all()
    v = rec.visit_ivar[0]
    assert v[PIX] == 0 and v[PIX + 2] == 0 and v[PIX + 3] == 0 and v[PIX + 4] == 0
    assert v[PIX + 1] == pytest.approx(4.0, rel=1e-6) and v[PIX + 5] == pytest.approx(4.0, rel=1e-6)
    assert rec.visit_flux[0, PIX + 5] == pytest.approx(100.0)
    assert rec.visit_pixmask[0, PIX] == 1 and rec.visit_pixmask[0, PIX + 1] == 4096
    assert (rec.visit_ivar[:, ~APOGEE_GRID.usable()] == 0).all()  # outside the chip blocks
    np.testing.assert_allclose(rec.visit_snr_survey, [25.0, 40.0])
    np.testing.assert_allclose(rec.visit_mjd, [60000.0, 60010.0])
    assert rec.visit_id[0] == "apVisit-1.3-apo25m-5000-60000-010"
    assert rec.snr == pytest.approx(90.0) and (rec.coadd_ivar[APOGEE_GRID.usable()] > 0).all()
    # mg_fe = mg_h - fe_h, errors in quadrature (ASPCAP publishes X/H)
    np.testing.assert_allclose(rec.labels, [4800.0, 2.5, -0.2, 0.15], rtol=1e-6)
    np.testing.assert_allclose(rec.label_err, [20.0, 0.03, 0.01, np.hypot(0.02, 0.01)], rtol=1e-5)
    assert rec.star_flags == 0 and (rec.label_flags == 0).all()
    strict = read_one(tmp_path, strict=True)
    assert strict.visit_ivar[0, PIX + 1] == 0


def test_flag_bad_means_missing_labels_and_flag_warn_is_kept(tmp_path):
    one_star(tmp_path, summary=[aspcap_row(1234, flag_warn=True, fe_h_flags=1 << 9)])
    rec = read_one(tmp_path)
    assert np.isfinite(rec.labels).all()
    assert rec.star_flags == STAR_FLAG_WARN
    assert (rec.label_flags & LABEL_FLAG_WARN).all()
    assert rec.label_flags[2] == LABEL_FLAG_WARN | 1 << 9 and rec.label_flags[3] == LABEL_FLAG_WARN | 1 << 9
    one_star(tmp_path, summary=[aspcap_row(1234, flag_bad=True)])
    rec = read_one(tmp_path)
    assert np.isnan(rec.labels).all() and np.isnan(rec.label_err).all() and rec.star_flags == STAR_FLAG_BAD
    assert rec.n_visits == 2  # its visits still make twins


def test_missing_label_column_is_nan_with_a_message(tmp_path):
    row = aspcap_row(1234)
    del row["mg_h"], row["e_mg_h"], row["mg_h_flags"]
    one_star(tmp_path, summary=[row])
    with pytest.warns(UserWarning, match=r"no column\(s\) \['mg_h'\].*mg_fe"):
        rec = read_one(tmp_path)
    assert np.isnan(rec.labels[3]) and np.isfinite(rec.labels[:3]).all()
    assert "mg_fe" in rec.meta["label_note"]


def test_summary_row_of_the_observatory_is_chosen(tmp_path):
    summary = [aspcap_row(1234, "lco25m", teff=5000.0), aspcap_row(1234, "apo25m", teff=4700.0, snr=20.0),
               aspcap_row(1234, "apo25m", teff=4600.0, release="dr17", snr=200.0)]
    one_star(tmp_path, summary=summary)
    rec = read_one(tmp_path)
    assert rec.meta["site"] == "apo" and rec.labels[0] == pytest.approx(4700.0)  # sdss5 over dr17 at APO
    assert rec.meta["n_summary_rows"] == 3


def test_observatories_are_not_mixed(tmp_path):
    lco = [visit(telescope="lco25m", mjd=60100 + k, fiber=20) for k in range(3)]
    one_star(tmp_path, lco=lco, summary=[aspcap_row(1234, "lco25m", teff=5100.0)])
    rec = read_one(tmp_path)  # 3 LCO visits beat 2 APO ones
    assert rec.meta["site"] == "lco" and rec.n_visits == 3 and rec.meta["other_site_visits"] == {"apo": 2}
    assert rec.labels[0] == pytest.approx(5100.0)
    assert "no mwmStar" not in rec.meta["coadd"] and "0 rows" in rec.meta["coadd"]  # mwmStar has no LCO coadd
    assert (rec.coadd_ivar == 0).all()
    apo = read_one(tmp_path, site="apo")
    assert apo.n_visits == 2 and apo.meta["telescope"] == "apo25m"
    assert "labels from the lco25m row" in apo.meta["label_note"]


def test_duplicates(tmp_path):
    """The same exposure reduced twice (dr17 and sdss5), and one sdss_id in two astra versions."""
    apo = [visit(mjd=60000, release="dr17", apred="dr17", snr=50.0), visit(mjd=60000, snr=30.0),
           visit(mjd=60020, fiber=12)]
    one_star(tmp_path, apo=apo)
    old = write_mwm(tmp_path, "mwmVisit", 1234, {"APOGEE/APO": [visit()]}, v="0.6.0")
    adapter = SdssvAdapter()
    disc = adapter.discover(str(tmp_path))
    assert [u.path for u in disc.units] == [str(tmp_path / "spectra/visit/12/34/mwmVisit-0.8.1-1234.fits")]
    assert any(s.path == str(old) and "duplicate" in s.problem for s in disc.skipped)
    rec = adapter.read(disc.units[0])
    assert rec.n_visits == 2 and rec.visit_id[0].startswith("apVisit-1.3-")  # the SDSS-V reduction kept
    assert any("duplicate of apVisit-1.3-apo25m-5000-60000-010" in d for d in rec.meta["dropped_visits"])


def test_in_stack_false_is_dropped_or_shifted_to_rest_frame(tmp_path):
    """An in_stack = False visit is at its topocentric RV: dropped by default; `shift` moves its lines back."""
    x = np.arange(8575, dtype=float)
    lines = (1000.0, 2000.0, 4500.0, 7000.0)

    def spectrum(offset):
        return 100.0 * np.prod([1 - 0.5 * np.exp(-0.5 * ((x - p - offset) / 2.0) ** 2) for p in lines], axis=0)

    v_rel = 41.4  # km/s: 10.0 apStar pixels
    d = np.log10(1 + v_rel / 299792.458) / 6e-6
    apo = [visit(flux=spectrum(0.0), mjd=60000), visit(flux=spectrum(d), in_stack=False, mjd=60030, fiber=12,
                                                       v_rel=v_rel, v_rad=v_rel + 12.0, bc=12.0)]
    one_star(tmp_path, apo=apo)
    dropped = read_one(tmp_path)
    assert dropped.n_visits == 1 and "in_stack = False" in dropped.meta["dropped_visits"][0]
    shifted = read_one(tmp_path, not_in_stack="shift")
    assert shifted.n_visits == 2 and len(shifted.meta["shifted_visits"]) == 1
    for p in lines:
        k = int(p) - 5 + int(np.argmin(shifted.visit_flux[1, int(p) - 5:int(p) + 6]))
        y0, y1, y2 = shifted.visit_flux[1, k - 1:k + 2]
        centre = k + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
        assert abs(centre - p) < 0.1, f"line at {p} found at {centre:.2f} after the shift"
    assert np.isfinite(shifted.visit_flux).all() and (shifted.visit_ivar >= 0).all()


def test_visit_without_in_stack_column_dr19_is_kept(tmp_path):
    one_star(tmp_path, in_stack_column=False)
    rec = read_one(tmp_path)
    assert rec.n_visits == 2 and rec.meta["in_stack_column"] is False


def test_rv_failed_visit_is_dropped(tmp_path):
    one_star(tmp_path, apo=[visit(), visit(mjd=60010, spectrum_flags=1 << 22)])
    rec = read_one(tmp_path)
    assert rec.n_visits == 1 and "RV failed" in rec.meta["dropped_visits"][0]
    assert read_one(tmp_path, drop_bad_rv=False).n_visits == 2


def test_boss_instrument(tmp_path):
    flags = np.zeros(BOSS_NPIX, np.uint64)
    flags[500] = 1 << 18  # FULLREJECT: bad
    flags[501] = 1 << 23  # BRIGHTSKY: kept unless strict
    rows = [visit(npix=BOSS_NPIX, pixel_flags=flags, telescope="apo25m", mjd=60000 + k, fieldid=100 + k)
            for k in range(2)]
    write_mwm(tmp_path, "mwmVisit", 77, {"BOSS/APO": rows, "APOGEE/APO": [visit()]})
    write_summary(tmp_path, [{"sdss_id": 77, "telescope": "apo25m", "teff": 15000.0, "e_teff": 300.0, "logg": 8.0,
                              "e_logg": 0.1, "fe_h": 0.0, "e_fe_h": 0.1, "flag_bad": False, "flag_warn": False}],
                  instrument="BOSS", pipeline="BossNet", instrmnt_cards=False)  # positional: HDU1 is BOSS
    rec = read_one(tmp_path, instrument="boss")
    assert rec.visit_flux.shape == (2, BOSS_NPIX) and rec.visit_id[0] == "spec-000100-60000-7"
    assert rec.visit_ivar[0, 500] == 0 and rec.visit_ivar[0, 501] > 0 and (rec.visit_ivar[:, :100] == 0).all()
    np.testing.assert_allclose(rec.labels, [15000.0, 8.0, 0.0])  # a white dwarf is inside the BOSS ranges
    assert read_one(tmp_path, instrument="boss", strict=True).visit_ivar[0, 501] == 0
    with pytest.raises(AdapterError, match=r"HDU2 \(APOGEE\) has 0 rows.*BossNet"):
        SdssvAdapter(pipeline="BossNet").discover(str(tmp_path))


@pytest.mark.parametrize("problem", ["wrong_grid", "all_bad", "empty", "header_id", "no_extname_positional"])
def test_bad_files_name_the_file_and_the_problem(tmp_path, problem):
    kw, apo = {}, None
    if problem == "wrong_grid":
        apo, kw = [visit(npix=8000)], {"grid": (4.179, 6e-6, 8000)}
    elif problem == "all_bad":
        apo = [visit(ivar=0.0), visit(mjd=60010, ivar=np.nan)]
    elif problem == "empty":
        apo, kw = [], {"counts": False}  # a header without N_APOGEE: found empty when read
    elif problem == "header_id":
        kw = {"header_id": 999}
    else:
        kw = {"extname": False}
    path = one_star(tmp_path, apo=apo, **kw)
    adapter = SdssvAdapter()
    units = adapter.discover(str(tmp_path)).units
    if problem == "no_extname_positional":  # astra's positions still find APOGEE/APO
        assert adapter.read(units[0]).n_visits == 2
        return
    with pytest.raises(AdapterError) as err:
        adapter.read(units[0])
    assert err.value.path == str(path)
    expected = {"wrong_grid": "wrong wavelength grid", "all_bad": "no usable visit",
                "empty": "have 0 rows", "header_id": "header SDSS_ID = 999"}[problem]
    assert expected in err.value.problem


def test_discovery_skips_what_it_can_tell(tmp_path):
    one_star(tmp_path)
    write_mwm(tmp_path, "mwmVisit", 55, {"BOSS/APO": [visit(npix=BOSS_NPIX)]})  # BOSS only: N_APOGEE blank
    write_summary(tmp_path, [aspcap_row(1234), aspcap_row(4321)])  # 4321: a star with no file
    disc = SdssvAdapter().discover(str(tmp_path))
    assert [u.star_id for u in disc.units] == ["1234"]
    why = {s.star_id: s.problem for s in disc.skipped}
    assert "no APOGEE spectra (N_APOGEE = None" in why["55"]
    assert "sdss_id 4321 but no mwmVisit file" in why["4321"]
    assert SdssvAdapter(require_labels=True).discover(str(tmp_path)).units[0].star_id == "1234"
    with pytest.raises(AdapterError, match="no astraAllStarAstroNN"):
        SdssvAdapter(pipeline="AstroNN").discover(str(tmp_path))


def test_ingest_reports_bad_files_and_writes_only_whole_stars(tmp_path):
    """Truncated, corrupt, wrong-grid and all-bad files and a corrupt mwmStar are named in the report; the
    good stars are ingested, the store validates, and a rerun adds nothing."""
    from pairspec.ingest import ingest
    from pairspec.store import open_store

    src = tmp_path / "src"
    good = [write_mwm(src, "mwmVisit", i, {"APOGEE/APO": [visit(mjd=60000), visit(mjd=60001)]}) for i in (1, 2, 3)]
    for i in (1, 2, 3, 6):
        write_mwm(src, "mwmStar", i, {"APOGEE/APO": [visit()]})
    cut = write_mwm(src, "mwmVisit", 4, {"APOGEE/APO": [visit(), visit(mjd=60001)]})
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    junk = write_mwm(src, "mwmVisit", 5, {"APOGEE/APO": [visit()]})
    junk.write_bytes(b"SIMPLE  = garbage" + b"\0" * 5000)
    bad_star = write_mwm(src, "mwmVisit", 6, {"APOGEE/APO": [visit()]})
    star6 = src / "spectra/star/00/06/mwmStar-0.8.1-6.fits"
    star6.write_bytes(star6.read_bytes()[:4000])
    grid = write_mwm(src, "mwmVisit", 7, {"APOGEE/APO": [visit(npix=8000)]}, grid=(4.179, 6e-6, 8000))
    write_summary(src, [aspcap_row(i) for i in range(1, 8)])
    store = tmp_path / "s.zarr"
    report = ingest("sdssv", str(src), str(store), workers=1, progress=False)
    named = {s.path: s.problem for s in report.skipped}
    assert str(cut) in named and "truncated" in named[str(cut)]
    assert str(junk) in named and str(grid) in named and "wrong wavelength grid" in named[str(grid)]
    assert str(star6) in named and "truncated" in named[str(star6)]
    assert str(bad_star) not in named
    s = open_store(str(store))
    assert s.validate() == [] and s.n_stars == 3 and s.n_visits == 6
    assert sorted(s.star_table()["id"]) == ["1", "2", "3"] and len(good) == 3
    again = ingest("sdssv", str(src), str(store), workers=1, progress=False)
    assert again.n_stars == 0 and open_store(str(store)).n_stars == 3


def test_read_file_hook_reads_a_lone_mwmvisit(tmp_path):
    path = one_star(tmp_path)
    adapter = SdssvAdapter()
    assert adapter.can_read(path) and not adapter.can_read(tmp_path / "apStar-dr17-x.fits")
    star = next(tmp_path.rglob("mwmStar-*.fits"))
    assert not adapter.can_read(star) and "an SDSS-V mwmStar file (a star's coadd)" in adapter.file_hint(star)
    assert adapter.file_hint(tmp_path / "apStar-dr17-x.fits") is None
    rec = adapter.read_file(path)
    assert rec.n_visits == 2 and np.isnan(rec.labels).all()  # no summary for a lone file
    assert rec.star_flags == 0  # not NO_SUMMARY_ROW: no summary was read (predict set it on every star)
    assert rec.snr == pytest.approx(90.0)  # its mwmStar, found in astra's layout


def test_visit_fitter_follows_the_instrument_option():
    from pairspec.surveys import visit_fitter
    from pairspec.surveys.apogee.fit import EmulatorFit

    assert isinstance(visit_fitter("sdssv", instrument="apogee", site="best"), EmulatorFit)
    assert visit_fitter("sdssv", instrument="boss") is None
    assert isinstance(visit_fitter("apogee", strict=True), EmulatorFit)  # options it does not take: ignored


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_summary_is_said_to_be_truncated(tmp_path, gz):
    """A summary cut short reads as a file with fewer HDUs; it used to be reported as 'no APOGEE HDU'."""
    import gzip

    one_star(tmp_path)
    (full,) = (tmp_path / "summary").glob("astraAllStar*.fits")
    data = full.read_bytes()
    cut = tmp_path / ("cut.fits.gz" if gz else "cut.fits")
    head = data[: len(data) // 2]
    cut.write_bytes(gzip.compress(data)[: len(gzip.compress(data)) // 2] if gz else head)
    with pytest.raises(AdapterError, match="truncated"):
        SdssvAdapter(summary=str(cut)).discover(str(tmp_path))


def test_a_second_ingest_may_not_bring_another_pipelines_labels(tmp_path):
    """summary= only says where the file is, but its name says whose labels it holds: an AstroNN summary
    after an ASPCAP ingest would mix two pipelines' labels in one store (a helper's audit: it did, and
    validate passed). The pipeline a summary resolves to is compared; instrument=BOSS is boss."""
    import shutil

    from pairspec.ingest import ingest

    src = tmp_path / "src"
    one_star(src)
    store = str(tmp_path / "s.zarr")
    ingest("sdssv", str(src), store, workers=1, progress=False)
    aspcap = next((src / "summary").glob("astraAllStarASPCAP-*"))
    astronn = tmp_path / "astraAllStarAstroNN-0.8.1.fits"
    shutil.copy(aspcap, astronn)
    assert SdssvAdapter(summary=str(astronn)).pipeline == "AstroNN"
    with pytest.raises(ValueError, match="pipeline: 'ASPCAP' -> 'AstroNN'"):
        ingest("sdssv", str(src), store, workers=1, progress=False, adapter_options={"summary": str(astronn)})
    # the same file named by its path is the same pipeline: a location, free to differ
    again = ingest("sdssv", str(src), store, workers=1, progress=False, adapter_options={"summary": str(aspcap)})
    assert again.n_stars == 0
    with pytest.raises(ValueError, match="is an astraAllStarAstroNN file, but pipeline=ASPCAP"):
        SdssvAdapter(summary=str(astronn), pipeline="ASPCAP")


def test_instrument_is_compared_as_resolved(tmp_path):
    from pairspec.ingest import _changed_options

    adapter = SdssvAdapter(instrument="boss")
    assert _changed_options(adapter, {"instrument": "BOSS"}, {"instrument": "boss"}) == []
    assert _changed_options(adapter, {"instrument": "apogee"}, {"instrument": "boss"}) == [
        "instrument: 'apogee' -> 'boss'", "pipeline: 'ASPCAP' -> 'BossNet'"]


def test_a_folder_without_mwmvisit_files_says_so_once(tmp_path):
    write_summary(tmp_path, [aspcap_row(i) for i in range(1, 50)])
    with pytest.raises(AdapterError, match="no mwmVisit-\\*.fits\\[.gz\\] files under this folder"):
        SdssvAdapter().discover(str(tmp_path))

