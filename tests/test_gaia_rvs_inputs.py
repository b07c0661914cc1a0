"""Gaia RVS adapter on bad input, label tables (GSP-Spec, APOGEE label transfer, Parquet), and DR4-style
epoch spectra. Every file is built here; spectra are Gaussian lines (no line generator)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_gaia_rvs import NPIX, SIDS, WAVE, line_model, mean_columns

from pairspec.surveys.gaia_rvs import GaiaRvsAdapter, layout, writers
from pairspec.surveys.gaia_rvs.twins import C_KMS

CENTRES = (850.035, 854.444, 866.452)


def _ingest(src, store, **options):
    from pairspec.ingest import ingest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no labels table" is expected here
        return ingest("gaia_rvs", str(src), str(store), workers=1, progress=False, adapter_options=options or None)


def _sub(cols: dict, rows) -> dict:
    return {k: np.asarray(v)[list(rows)] for k, v in cols.items()}


def test_bad_files_and_rows_are_reported_and_the_rest_ingested(tmp_path):
    from pairspec.store import open_store

    src = tmp_path / "src"
    ids = [1000000000 + i for i in range(12)]
    cols = mean_columns(sids=ids, seed=1)
    cols["flux_error"][3, 500:505] = 0.0  # zero and null errors inside: ingested, those pixels bad
    cols["flux_error"][3, 900] = np.nan
    cols["flux_error"][4, :] = np.nan  # no usable pixel at all
    cols["combined_transits"][5] = 6  # too few transits for a copy at 1/3 of the mean's S/N
    writers.write_bulk_ecsv(src / "RvsMeanSpectrum_000000-000001.csv.gz", _sub(cols, range(6)))
    # truncated bulk file: rows 6..9, the gzip stream cut part-way
    cut = writers.write_bulk_ecsv(src / "RvsMeanSpectrum_000002-000003.csv.gz", _sub(cols, range(6, 10)))
    data = cut.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    # wrong grid length (RAW table with 2400 values) and a wrong wavelength column
    short = _sub(cols, [10])
    short["flux"], short["flux_error"] = short["flux"][:, :2400], short["flux_error"][:, :2400]
    writers.write_array_table(src / "RVS_RAW_short.fits", short)
    writers.write_pixel_table(src / f"RVS-Gaia DR3 {ids[11]}.ecsv", cols["flux"][11], cols["flux_error"][11],
                              {"source_id": ids[11], "combined_transits": 30}, wavelength=WAVE + 0.5)
    # garbage named as a spectrum, a FITS cut short, and a duplicate of ids[0] in a second file
    (src / "RVS-Gaia DR3 77777777777.fits").write_bytes(b"not a spectrum at all\n" * 50)
    good = writers.write_pixel_table(tmp_path / "whole.fits", cols["flux"][1], cols["flux_error"][1],
                                     {"source_id": 88888888888, "combined_transits": 30})
    (src / "RVS-Gaia DR3 88888888888.fits").write_bytes(good.read_bytes()[:5000])
    writers.write_pixel_table(src / f"RVS-Gaia DR3 {ids[0]}.fits", cols["flux"][0], cols["flux_error"][0],
                              {"source_id": ids[0], "combined_transits": 30})

    report = _ingest(src, tmp_path / "s.zarr")
    why = {s.path.split("/")[-1] + " | " + s.problem for s in report.skipped}
    joined = "\n".join(sorted(why))

    def said(name, words):
        return any(w.startswith(name) and words in w for w in why)

    assert said("RvsMeanSpectrum_000002-000003.csv.gz", "cut short"), joined
    assert said("RVS_RAW_short.fits", "wrong grid length: flux has 2400 values"), joined
    assert said(f"RVS-Gaia DR3 {ids[11]}.ecsv", "wrong wavelength grid"), joined
    assert said("RVS-Gaia DR3 77777777777.fits", "cannot read"), joined
    assert said("RVS-Gaia DR3 88888888888.fits", "truncated"), joined
    assert said("RvsMeanSpectrum_000000-000001.csv.gz", f"source_id {ids[4]}): no usable pixel"), joined
    assert said("RvsMeanSpectrum_000000-000001.csv.gz", "combined_transits=6"), joined
    # ids[0] is in two files: the first by path is kept, the other skipped as a duplicate
    assert sum(f"duplicate: source_id {ids[0]} again" in w for w in why) == 1, joined
    s = open_store(str(tmp_path / "s.zarr"))
    kept = set(s.star_table()["id"])
    assert {str(ids[i]) for i in (0, 1, 2, 3)} <= kept and str(ids[4]) not in kept and str(ids[5]) not in kept
    assert 1 <= len(kept & {str(i) for i in ids[6:10]}) < 4  # the rows before the cut, not the cut one
    assert s.validate() == [] and s.n_stars == report.n_stars == len(kept)
    # zero / null errors: ivar 0 exactly there, the BAD_ERROR bit kept (on the star's coadd)
    row = list(s.star_table()["id"]).index(str(ids[3]))
    _, ivar, mask = s.star_spectra(np.array([row]))
    dst = layout.GAIA_RVS_GRID.wavelength() / 10
    near = np.abs(dst[:, None] - WAVE[[500, 501, 502, 503, 504, 900]][None]).min(axis=1) < 0.0099
    assert (ivar[0][near] == 0).all() and (mask[0][near] & layout.PIX_BAD_ERROR).all()
    assert (ivar[0][~near] > 0).mean() > 0.99
    # a rerun adds nothing and duplicates nothing (nothing half-written the first time)
    again = _ingest(src, tmp_path / "s.zarr")
    assert again.n_stars == 0 and open_store(str(tmp_path / "s.zarr")).n_stars == s.n_stars


def test_a_row_without_a_spectrum_is_a_clear_error(tmp_path):
    cols = mean_columns(sids=SIDS[:2])
    path = writers.write_bulk_ecsv(tmp_path / "src" / "RvsMeanSpectrum_000000-000001.csv", cols)
    lines = path.read_text().splitlines()
    head, row = lines[-1].split('"[', 1)
    rest = row.split(']"', 1)[1]
    lines[-1] = head + "null" + rest  # flux null for the second source
    path.write_text("\n".join(lines) + "\n")
    adapter = GaiaRvsAdapter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        units = adapter.discover(str(tmp_path / "src")).units
    assert len(units) == 2
    adapter.read(units[0])
    with pytest.raises(Exception, match=rf"{path}: row=0000001 \(source_id {SIDS[1]}\): no spectrum"):
        adapter.read(units[1])


# ---- labels ------------------------------------------------------------------------------------
def _ap_table(path, sids, drop=()):
    cols = {"source_id": np.array(sids, np.int64)}
    vals = {"teff_gspspec": 4800.0, "logg_gspspec": 2.5, "mh_gspspec": -0.2, "alphafe_gspspec": 0.1}
    for name, v in vals.items():
        if name in drop:
            continue
        cols[name] = np.full(len(sids), v) + np.arange(len(sids))
        cols[name.replace("_gspspec", "_gspspec_lower")] = cols[name] - 0.5
        cols[name.replace("_gspspec", "_gspspec_upper")] = cols[name] + 0.5
    cols["flags_gspspec"] = np.array(["0" * 41, "0100000000000" + "0" * 28][: len(sids)] + ["0" * 41] * max(0, len(sids) - 2),
                                     dtype=object)
    return writers.write_bulk_ecsv(path, cols)


def test_gspspec_labels_errors_flags_and_a_missing_column(tmp_path):
    src = tmp_path / "src"
    writers.write_bulk_ecsv(src / "RvsMeanSpectrum_000000-000001.csv.gz", mean_columns())
    _ap_table(src / "AstrophysicalParameters_000000-003111.csv.gz", SIDS[:2], drop=("alphafe_gspspec",))
    adapter = GaiaRvsAdapter()
    with pytest.warns(UserWarning, match="no column for label 'alpha_fe'.*alphafe_gspspec"):
        disc = adapter.discover(str(src))
    recs = {u.star_id: adapter.read(u) for u in disc.units}
    a, b, c = (recs[str(s)] for s in SIDS)
    assert np.allclose(a.labels[:3], [4800.0, 2.5, -0.2]) and np.isnan(a.labels[3])
    assert np.allclose(b.labels[:3], [4801.0, 3.5, 0.8])
    assert np.allclose(a.label_err[:3], 0.5) and np.isnan(a.label_err[3])  # (upper - lower) / 2
    assert (a.label_flags[:3] == 0).all() and (b.label_flags[:3] == 1 << 1).all()  # character 1 of flags_gspspec
    assert np.isnan(c.labels).all() and c.star_flags & layout.STAR_NO_LABEL_ROW
    assert not a.star_flags & layout.STAR_LABELS_TRANSFERRED


def test_label_transfer_from_an_apogee_allstar_table(tmp_path):
    from astropy.table import Table

    src = tmp_path / "src"
    writers.write_bulk_ecsv(src / "RvsMeanSpectrum_000000-000001.csv.gz", mean_columns())
    t = Table({
        "APOGEE_ID": ["2M0001", "2M0002", "2M0002b", "2M0003", "2M0004"],
        "GAIAEDR3_SOURCE_ID": np.array([SIDS[0], SIDS[1], SIDS[1], SIDS[2], 0], np.int64),
        "TEFF": [4500.0, 5000.0, 5100.0, 6000.0, 4000.0], "TEFF_ERR": [50.0, 60.0, 70.0, 80.0, 90.0],
        "LOGG": [2.1, 4.4, 4.3, 4.0, 1.0], "LOGG_ERR": [0.05] * 5,
        "FE_H": [-0.3, 0.1, 0.0, -1.0, 0.0], "FE_H_ERR": [0.01] * 5, "FE_H_FLAG": np.array([0, 8, 0, 0, 0], np.int32),
        "ALPHA_M": [0.2, 0.0, 0.05, 0.3, 0.0], "ALPHA_M_ERR": [0.02] * 5,
        "SNR": [100.0, 50.0, 200.0, 80.0, 90.0],
        "EXTRATARG": np.array([0, 0, 16, 0, 0], np.int32),  # bit 4: the higher-SNR row is a duplicate: dropped
        "ASPCAPFLAG": np.array([0, 0, 0, 1 << 23, 0], np.int64),  # STAR_BAD
    })
    allstar = tmp_path / "allStar-dr17-synspec_rev1.fits"
    t.write(allstar)
    adapter = GaiaRvsAdapter(labels_from=str(allstar))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        disc = adapter.discover(str(src))
    said = " | ".join(str(w.message) for w in caught)
    assert "no column for label" not in said and "1 row(s) with ASPCAPFLAG STAR_BAD" in said
    recs = {u.star_id: adapter.read(u) for u in disc.units}
    a, b, c = (recs[str(s)] for s in SIDS)
    assert np.allclose(a.labels, [4500.0, 2.1, -0.3, 0.2]) and np.allclose(a.label_err, [50, 0.05, 0.01, 0.02])
    assert np.allclose(b.labels, [5000.0, 4.4, 0.1, 0.0]) and b.label_flags[2] == 8
    assert np.isnan(c.labels).all()  # STAR_BAD
    assert all(r.star_flags & layout.STAR_LABELS_TRANSFERRED for r in (a, b, c))
    assert a.meta["label_kind"] == "apogee" and a.meta["label_source"] == str(allstar)


def test_parquet_labels_with_named_columns_and_require_labels(tmp_path):
    from astropy.table import Table

    src = tmp_path / "src"
    writers.write_bulk_ecsv(src / "RvsMeanSpectrum_000000-000001.csv.gz", mean_columns())
    t = Table({"source_id": np.array(SIDS[:2], np.int64), "teff": [5000.0, 5100.0], "logg": [4.0, 4.1],
               "FEH_SPEC": [-0.5, np.nan], "alpha_fe": [0.1, 0.2]})
    t.write(tmp_path / "labels.parquet")
    adapter = GaiaRvsAdapter(labels_from=str(tmp_path / "labels.parquet"), label_columns={"fe_h": "FEH_SPEC"},
                             require_labels=True)
    disc = adapter.discover(str(src))
    assert [u.star_id for u in disc.units] == [str(SIDS[0])]
    rec = adapter.read(disc.units[0])
    assert np.allclose(rec.labels, [5000.0, 4.0, -0.5, 0.1])
    why = {s.star_id: s.problem for s in disc.skipped}
    assert why[str(SIDS[1])] == "missing labels: fe_h" and why[str(SIDS[2])] == "missing labels: no row in the labels table"
    with pytest.raises(ValueError, match="label_columns names"):
        GaiaRvsAdapter(labels_from=str(tmp_path / "labels.parquet"), label_columns={"mg_fe": "x"}).discover(str(src))
    # a column the user names that the table lacks is an error (it only warned, and the label went NaN)
    from pairspec.surveys.base import AdapterError

    with pytest.raises(AdapterError, match="'nope' for teff, which is not a column"):
        GaiaRvsAdapter(labels_from=str(tmp_path / "labels.parquet"), label_columns={"teff": "nope"}).discover(str(src))


# ---- DR4 epoch spectra (formats.md 4.3: barycentric, per-transit times; layout unverified) -------------
def _epochs(sid, rvs, times, snr=60.0, with_rv=True, seed=0):
    rng = np.random.default_rng(seed)
    n = len(rvs)
    flux = np.stack([np.interp(WAVE / (1 + v / C_KMS), WAVE, line_model()) for v in rvs])  # rest -> barycentric
    flux += rng.normal(0, 1 / snr, flux.shape)
    cols = {"source_id": np.full(n, sid, np.int64), "transit_id": np.arange(n, dtype=np.int64) + 10 * sid % 997,
            "obs_time_rv": np.asarray(times, np.float64), "flux": flux.astype(np.float32),
            "flux_error": np.full((n, NPIX), 1 / snr, np.float32), "combined_ccds": np.full(n, 3, np.int16)}
    if with_rv:
        cols["radial_velocity"] = np.asarray(rvs, np.float64)
    return cols


def test_epoch_spectra_become_rest_frame_visits(tmp_path):
    from pairspec.pairs import coadd

    src = tmp_path / "src"
    a, b, c = 111111111111, 222222222222, 333333333333
    writers.write_array_table(src / f"RVS_EPOCH_SPECTRUM-Gaia DR4 {a}.fits",
                              _epochs(a, [-40.0, 10.0, 75.0], [1700.25, 1800.5, 1950.75]))
    writers.write_array_table(src / "RVS_EPOCH_SPECTRUM-Gaia DR4 b.fits",
                              _epochs(b, [55.0] * 4, [1000.0, 1001.0, 1002.0, 1003.0], with_rv=False))
    writers.write_array_table(src / "RVS_EPOCH_SPECTRUM-Gaia DR4 c.fits", _epochs(c, [20.0, 20.0], [5.0, 6.0], with_rv=False))
    writers.write_bulk_ecsv(src / "RvsMeanSpectrum_000000-000001.csv.gz", mean_columns(sids=[b]))
    writers.write_bulk_ecsv(tmp_path / "gaia_source.csv", {"source_id": np.array([b], np.int64),
                                                          "radial_velocity": np.array([55.0])})
    adapter = GaiaRvsAdapter(gaia_source=str(tmp_path / "gaia_source.csv"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disc = adapter.discover(str(src))
    units = {u.star_id: u for u in disc.units}
    ra, rb = adapter.read(units[str(a)]), adapter.read(units[str(b)])
    assert ra.n_visits == 3 and rb.n_visits == 4
    assert ra.star_flags & layout.STAR_EPOCH_VISITS and not ra.star_flags & layout.STAR_SYNTHETIC_TWINS
    assert np.allclose(ra.visit_mjd, np.array([1700.25, 1800.5, 1950.75]) + 55197.0)
    assert ra.visit_id[0].startswith(f"{a}:transit:")
    dst = layout.GAIA_RVS_GRID.wavelength() / 10
    for rec in (ra, rb):
        for v in range(rec.n_visits):  # every visit's lines are back at their rest wavelengths
            for centre in CENTRES:
                near = np.abs(dst - centre) < 0.3
                assert abs(dst[near][np.argmin(rec.visit_flux[v][near])] - centre) < 0.015
    # no mean spectrum for a: its coadd is the ivar-weighted mean of its rest-frame visits
    cf, ci = coadd(ra.visit_flux, ra.visit_ivar)
    assert np.allclose(ra.coadd_flux, cf) and np.allclose(ra.coadd_ivar, ci)
    # b has a mean spectrum: that is its coadd (30 transits at S/N 80, not the epochs' sum)
    assert abs(np.median(rb.coadd_ivar) / np.median(rb.visit_ivar.sum(axis=0)) - (80 / 60) ** 2 / 4) < 0.1
    # c: barycentric epochs and no radial velocity anywhere -> a clear error naming the file
    with pytest.raises(Exception, match="no radial_velocity is known"):
        adapter.read(units[str(c)])
