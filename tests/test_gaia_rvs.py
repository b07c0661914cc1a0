"""Gaia RVS adapter: the published layouts read back exactly, the grid, the synthetic twins, and labels.

Every file is built here (tmp_path) with the package's writers or by hand; spectra are a few Gaussian lines
(no line generator), so each test runs in well under a second.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from pairspec.grid import LogLinearGrid
from pairspec.surveys.base import AdapterError
from pairspec.surveys.gaia_rvs import GaiaRvsAdapter, layout, products, writers
from pairspec.surveys.gaia_rvs.twins import (
    native_pixel_kernel,
    resample,
    synthetic_visits,
)

NPIX = layout.NPIX
WAVE = layout.wavelength_nm()
SIDS = (4295806720, 5937083312263887616, 6436372809361915909)  # a real-looking short id and two 19-digit ones


def line_model(centres=(850.035, 854.444, 866.452), depth=0.6, width=0.03) -> np.ndarray:
    """A normalised spectrum with three Ca-triplet-like Gaussian lines (vacuum nm)."""
    f = np.ones(NPIX)
    for c in centres:
        f -= depth * np.exp(-0.5 * ((WAVE - c) / width) ** 2)
    return f


def mean_columns(sids=SIDS, snr=80.0, n_transits=30, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(sids)
    flux = line_model()[None] + rng.normal(0, 1 / snr, (n, NPIX))
    err = np.full((n, NPIX), 1 / snr)
    return {"solution_id": np.full(n, 375316653866487564, np.int64), "source_id": np.array(sids, np.int64),
            "ra": np.linspace(10, 20, n), "dec": np.linspace(-5, 5, n), "flux": flux.astype(np.float32),
            "flux_error": err.astype(np.float32), "combined_transits": np.full(n, n_transits, np.int16),
            "combined_ccds": np.full(n, 3 * n_transits, np.int16), "deblended_ccds": np.zeros(n, np.int16)}


def read_all(adapter, src):
    disc = adapter.discover(str(src))
    return disc, {u.star_id: adapter.read(u) for u in disc.units}


# ---- grid -------------------------------------------------------------------------------------
def test_grid_is_the_published_one_and_the_store_grid_keeps_its_ends():
    assert WAVE.size == 2401 and WAVE[0] == 846.0 and abs(WAVE[-1] - 870.0) < 1e-12
    assert np.allclose(np.diff(WAVE), 0.01, atol=1e-12)
    native, log = layout.GAIA_RVS_NATIVE_GRID, layout.GAIA_RVS_GRID
    assert np.allclose(native.wavelength(), 10 * WAVE, atol=1e-9, rtol=0)
    lw = log.wavelength()
    assert abs(lw[0] - 8460) < 1e-6 and abs(lw[-1] - 8700) < 1e-6 and lw.size == 2401
    assert 0.8 < np.abs(lw - 10 * WAVE).max() < 0.85  # the documented 0.84 A mid-range offset
    # what a store rebuilds from each grid's attributes: equal to its own grid, never to the other one
    rebuilt_native, rebuilt_log = (LogLinearGrid.from_dict(g.to_dict()) for g in (native, log))
    assert native == rebuilt_native and rebuilt_native == native and rebuilt_log == log
    assert native != rebuilt_log and rebuilt_log != native
    assert type(native).from_dict(native.to_dict()) == native and native.to_dict()["type"] == "linear"
    from pairspec.grid import grid_from_dict

    assert type(grid_from_dict(native.to_dict())).__name__ == "LinearGrid" and grid_from_dict(native.to_dict()) == native
    assert type(grid_from_dict(log.to_dict())) is LogLinearGrid
    with pytest.raises(ValueError, match="unknown wavelength grid type 'spline'"):
        grid_from_dict({**log.to_dict(), "type": "spline"})


def test_resampling_keeps_lines_in_place_and_propagates_the_variance():
    f = line_model().astype(np.float32)
    ivar = np.full(NPIX, 1e4, np.float32)
    ivar[1000] = 0
    out_f, out_i, _ = resample(WAVE, f, ivar, np.zeros(NPIX, np.int64), layout.GAIA_RVS_GRID.wavelength() / 10)
    dst = layout.GAIA_RVS_GRID.wavelength() / 10
    # the line minimum moves to the pixel nearest its true wavelength on the new grid (to 0.01 nm)
    for c in (850.035, 854.444, 866.452):
        near = np.abs(dst - c) < 0.3
        assert abs(dst[near][np.argmin(out_f[near])] - c) < 0.006
    # a pixel halfway between two samples averages them: variance (s^2 + s^2)/4 -> ivar doubles
    t = (dst - 846.0) / 0.01 % 1.0
    half = np.flatnonzero((np.abs(t - 0.5) < 0.01) & (out_i > 0))
    assert half.size and np.allclose(out_i[half], 2e4 / (1 + (2 * t[half] - 1) ** 2), rtol=1e-3)
    # the bad sample makes the (at most two) pixels that take weight from it bad, nothing else
    bad = np.flatnonzero(out_i == 0)
    assert 1 <= bad.size <= 2 and np.all(np.abs(dst[bad] - WAVE[1000]) < 0.01)


# ---- the layouts ------------------------------------------------------------------------------
def test_bulk_csv_reads_back_exactly_with_nulls(tmp_path):
    cols = mean_columns()
    cols["flux"][1, :7] = np.nan  # null edge bins
    cols["flux_error"][1, :7] = np.nan
    path = writers.write_bulk_ecsv(tmp_path / "RvsMeanSpectrum_000000-003111.csv.gz", cols)
    with gzip.open(path, "rt") as f:
        text = f.read()
    assert text.startswith("# %ECSV 1.0") and '"[null,null,' in text  # nulls inside the quoted array field
    entries, problems = products.scan(path)
    assert problems == [] and [e.source_id for e in entries] == list(SIDS)  # all 19 digits survive
    assert all(e.n_transits == 30 and not e.epoch for e in entries)
    spec = products.load(path, entries[1].locator)
    assert np.array_equal(np.isnan(spec.flux), np.isnan(cols["flux"][1]))
    good = ~np.isnan(spec.flux)
    assert np.allclose(spec.flux[good], cols["flux"][1][good], rtol=1e-6)
    assert spec.scalars["combined_ccds"] == 90 and spec.scalars["solution_id"] == 375316653866487564
    from astropy.table import Table  # the file is ECSV that astropy reads too

    t = Table.read(path, format="ascii.ecsv")
    assert np.array_equal(np.asarray(t["source_id"]), np.array(SIDS))
    assert np.allclose(np.ma.filled(np.asarray(t["flux"][1], dtype=float), np.nan)[good], spec.flux[good], rtol=1e-6)


@pytest.mark.parametrize("suffix", ["fits", "ecsv", "xml", "csv"])
def test_datalink_individual_files_of_every_format(tmp_path, suffix):
    cols = mean_columns(sids=SIDS[1:2])
    scalars = {k: cols[k][0].item() for k in ("source_id", "solution_id", "ra", "dec", "combined_transits")}
    path = writers.write_pixel_table(tmp_path / f"RVS-Gaia DR3 {SIDS[1]}.{suffix}", cols["flux"][0],
                                     cols["flux_error"][0], scalars)
    (entry,), problems = products.scan(path)
    assert problems == [] and entry.source_id == SIDS[1]  # a CSV has no header: the id comes from the name
    spec = products.load(path, entry.locator)
    assert np.allclose(spec.flux, cols["flux"][0], rtol=1e-6) and np.allclose(spec.wavelength_nm, WAVE, atol=1e-6)
    if suffix != "csv":
        assert spec.scalars["combined_transits"] == 30 and entry.n_transits == 30
    rec = GaiaRvsAdapter(twins=3, gaia_source=None).read_file(path)  # predict's path: the spectrum is the visit
    assert rec.star_id == str(SIDS[1]) and rec.n_visits == 1 and rec.visit_id == [f"{SIDS[1]}:mean"]


@pytest.mark.parametrize("suffix,votable_format", [("fits", ""), ("xml", "binary2"), ("xml", "tabledata")])
def test_datalink_raw_tables(tmp_path, suffix, votable_format):
    cols = mean_columns()
    cols["flux"][2, :4] = np.nan
    path = writers.write_array_table(tmp_path / f"RVS_RAW.{suffix}", cols, votable_format=votable_format or "binary2")
    entries, _ = products.scan(path)
    assert [e.source_id for e in entries] == list(SIDS)
    spec = products.load(path, entries[2].locator)
    assert spec.source_id == SIDS[2] and np.allclose(spec.flux, cols["flux"][2], rtol=1e-6, equal_nan=True)
    assert np.isnan(spec.flux[:4]).all() and spec.scalars["combined_transits"] == 30
    with pytest.raises(AdapterError, match="holds 3 spectra"):
        GaiaRvsAdapter().read_file(path)


# ---- twins ------------------------------------------------------------------------------------
def test_synthetic_twins_have_the_k_transit_noise_and_are_reproducible():
    flux = np.ones(NPIX, np.float32)
    ivar = np.full(NPIX, 1e4, np.float32)  # sigma_mean = 0.01
    v1, i1, ks = synthetic_visits(flux, ivar, 36, SIDS[1], n_twins=40, min_gain=3.0, correlated=False)
    v2, i2, _ = synthetic_visits(flux, ivar, 36, SIDS[1], n_twins=40, min_gain=3.0, correlated=False)
    assert np.array_equal(v1, v2) and np.array_equal(i1, i2)  # seeded by the source id
    assert not np.array_equal(v1, synthetic_visits(flux, ivar, 36, SIDS[2], n_twins=40, correlated=False)[0])
    assert ks.min() >= 1 and ks.max() <= 4  # floor(36 / 3^2)
    assert np.allclose(i1, 1e4 * ks[:, None] / 36, rtol=1e-6)  # sigma_in = sigma_mean sqrt(N/k)
    for k in np.unique(ks):
        resid = (v1[ks == k] - flux).ravel()
        expect = 0.01 * np.sqrt(36 / k - 1)  # the noise ADDED to the mean's own
        assert abs(resid.std() / expect - 1) < 0.03
    with pytest.raises(ValueError, match="combined_transits=8"):
        synthetic_visits(flux, ivar, 8, SIDS[1], min_gain=3.0)


def test_correlated_noise_keeps_the_pixel_variance():
    kern = native_pixel_kernel()
    assert abs((kern**2).sum() - 1) < 1e-12
    v, _, ks = synthetic_visits(np.ones(NPIX, np.float32), np.full(NPIX, 1e4, np.float32), 100, 1, n_twins=30)
    z = (v - 1) / (0.01 * np.sqrt(100 / ks[:, None] - 1))
    assert abs(z.std() - 1) < 0.03
    lag1 = np.mean(z[:, 1:] * z[:, :-1]) / z.var()
    assert 0.4 < lag1 < 0.9  # neighbours share a native pixel


def test_ingested_twins_are_marked_synthetic_and_identical_on_reingest(tmp_path):
    from pairspec.ingest import ingest
    from pairspec.store import open_store

    writers.write_bulk_ecsv(tmp_path / "src" / "RvsMeanSpectrum_000000-003111.csv.gz", mean_columns())
    with pytest.warns(UserWarning, match="no labels table"):
        a = ingest("gaia_rvs", str(tmp_path / "src"), str(tmp_path / "a.zarr"), workers=1, progress=False)
    with pytest.warns(UserWarning):
        ingest("gaia_rvs", str(tmp_path / "src"), str(tmp_path / "b.zarr"), workers=1, progress=False)
    sa, sb = open_store(str(tmp_path / "a.zarr")), open_store(str(tmp_path / "b.zarr"))
    assert a.n_stars == 3 and a.n_visits == 12 and sa.validate() == []
    fa, ia, ma = sa.visit_spectra(slice(0, 12))
    fb, ib, _ = sb.visit_spectra(slice(0, 12))
    assert np.array_equal(fa, fb) and np.array_equal(ia, ib)
    assert (ma & layout.PIX_SYNTHETIC).all()
    stars = sa.star_table()
    assert (np.asarray(stars["star_flags"]) & layout.STAR_SYNTHETIC_TWINS).all()
    assert sorted(stars["id"]) == sorted(str(s) for s in SIDS)
    # the coadd is the published mean, on the store grid
    cf, ci, _ = sa.star_spectra(slice(0, 3))
    assert np.all(ci > 0) and abs(np.median(cf) - 1) < 0.01


def test_twins_zero_makes_the_mean_the_one_visit(tmp_path):
    cols = mean_columns()
    cols["combined_transits"][0] = 2  # too few for a twin, but no twin is made here
    writers.write_bulk_ecsv(tmp_path / "src" / "RvsMeanSpectrum_000000-003111.csv", cols)
    adapter = GaiaRvsAdapter(twins=0)
    with pytest.warns(UserWarning, match="no labels table"):
        disc, recs = read_all(adapter, tmp_path / "src")
    assert disc.skipped == [] and len(recs) == 3
    for sid, rec in recs.items():
        assert rec.n_visits == 1 and rec.visit_id == [f"{sid}:mean"]
        assert np.array_equal(rec.visit_flux[0], rec.coadd_flux) and np.array_equal(rec.visit_ivar[0], rec.coadd_ivar)
        assert not rec.star_flags & layout.STAR_SYNTHETIC_TWINS and not (rec.visit_pixmask & layout.PIX_SYNTHETIC).any()
    with pytest.raises(ValueError, match="cannot be negative"):
        GaiaRvsAdapter(twins=-1)


def test_native_grid_keeps_the_published_samples_and_never_mixes_with_the_default(tmp_path):
    from pairspec.ingest import ingest
    from pairspec.store import open_store

    cols = mean_columns()
    writers.write_bulk_ecsv(tmp_path / "src" / "RvsMeanSpectrum_000000-003111.csv.gz", cols)
    opts = {"grid": "native"}
    with pytest.warns(UserWarning):
        ingest("gaia_rvs", str(tmp_path / "src"), str(tmp_path / "n.zarr"), workers=1, progress=False, adapter_options=opts)
    s = open_store(str(tmp_path / "n.zarr"))
    assert np.allclose(s.wavelength, 10 * WAVE, rtol=0, atol=1e-9)  # the exact published grid
    # the store rebuilds its grid as the linear grid it is: validate accepted it only as a log-linear stand-in
    from pairspec.grid import LinearGrid

    assert isinstance(s.grid, LinearGrid) and s.grid == layout.GAIA_RVS_NATIVE_GRID and s.validate() == []
    assert "lambda = 8460.0 + 0.1 i A, linear" in s.grid.describe()
    row = list(s.star_table()["id"]).index(str(SIDS[0]))
    flux, ivar, _ = s.star_spectra(np.array([row]))
    published = products.load(tmp_path / "src" / "RvsMeanSpectrum_000000-003111.csv.gz", "row=0000000")
    assert published.source_id == SIDS[0]  # no resampling: the stored samples are the file's, bit for bit
    assert np.array_equal(flux[0], published.flux.astype(np.float32))
    assert np.allclose(ivar[0], 1 / published.flux_error**2, rtol=1e-6)
    with pytest.warns(UserWarning):  # the same grid again: a rerun is accepted (and adds nothing)
        assert ingest("gaia_rvs", str(tmp_path / "src"), str(tmp_path / "n.zarr"), workers=1, progress=False,
                      adapter_options=opts).n_stars == 0
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="grids do not match"):  # resampled: refused
        ingest("gaia_rvs", str(tmp_path / "src"), str(tmp_path / "n.zarr"), workers=1, progress=False)
