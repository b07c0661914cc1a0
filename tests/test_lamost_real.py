"""The LAMOST adapter on REAL LAMOST files (tests/data/lamost, credited in its README.md): arrays against
astropy, the resampling onto the grid, KIC 8098300's seven MRS nights as one star, the LRS layouts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pairspec.surveys.lamost import LamostAdapter
from pairspec.surveys.lamost.files import read_lrs, read_mrs
from pairspec.surveys.lamost.layout import C_KMS, NOCOVER

pytestmark = pytest.mark.realdata
REAL = Path(__file__).resolve().parent / "data" / "lamost"
MRS, LRS = REAL / "mrs", REAL / "lrs"
KIC_NIGHTS = {"med-58268-HIP95119KP01_sp12-076.fits.gz": 9, "med-58269-HIP95119KP01_sp12-076.fits.gz": 5,
              "med-58270-HIP95119KP01_sp12-076.fits.gz": 4, "med-58625-TD192102N424113K01_sp12-076.fits.gz": 3,
              "med-58644-TD192102N424113K01_sp12-076.fits.gz": 4, "med-58646-TD192102N424113K01_sp12-076.fits.gz": 3,
              "med-58649-TD193637N444141K01_sp10-159.fits.gz": 4}
KIC_ID = "J192814.09+435531.0"  # the designation of its earliest file (58268)
NIGHT = MRS / "med-58270-HIP95119KP01_sp12-076.fits.gz"
LMJM = 83908922  # its first exposure


@pytest.fixture(scope="module")
def kic_record():
    adapter = LamostAdapter(frame="heliocentric")
    units = {u.star_id: u for u in adapter.discover(str(MRS)).units}
    return adapter, units, adapter.read(units[KIC_ID])


def test_exposure_and_coadd_arrays_equal_astropy():
    f = read_mrs(str(NIGHT))
    with fits.open(NIGHT) as h:
        for arm in ("B", "R"):
            d = h[f"{arm}-{LMJM}"].data
            order = np.argsort(d["LOGLAM"])  # the R arm is stored red to blue
            got = f.exposures[LMJM][arm]
            assert np.array_equal(got.loglam, d["LOGLAM"][order].astype(np.float64))
            assert np.array_equal(got.flux, d["FLUX"][order].astype(np.float64))
            assert np.array_equal(got.ivar, d["IVAR"][order].astype(np.float64))
            assert np.array_equal(got.own_mask, d["PIXMASK"][order])
            assert got.snr == pytest.approx(h[f"{arm}-{LMJM}"].header["SNR"])
        c = h["COADD_B"].data
        assert np.array_equal(f.coadds["B"].flux, c["FLUX"].astype(np.float64))
        assert np.array_equal(f.coadds["B"].and_mask, c["ANDMASK"])
    assert sorted(f.exposures) == [83908922, 83908945, 83908969, 83908992] and f.layout == "rows"


def test_exposure_on_the_grid_is_the_interpolated_file(kic_record):
    """A visit pixel = linear interpolation of the file's pixels; ivar = 1/((1-t)^2/ivar_j + t^2/ivar_j+1)."""
    adapter, _, rec = kic_record
    v = rec.visit_id.index(f"med-58270-HIP95119KP01_sp12-076#{LMJM}")
    with fits.open(NIGHT) as h:
        d = h[f"R-{LMJM}"].data
    order = np.argsort(d["LOGLAM"])
    ll, fl, iv = (np.asarray(d[c][order], np.float64) for c in ("LOGLAM", "FLUX", "IVAR"))
    x = adapter.grid.crval1 + adapter.grid.cdelt1 * np.arange(adapter.grid.npix)
    red = np.arange(*adapter.grid.blocks[1])
    uncovered = red[x[red] < ll[0]]  # this night's R arm starts at 6312 A, above the block's 6300 A
    assert uncovered.size and (rec.visit_ivar[v, uncovered] == 0).all()
    assert (rec.visit_pixmask[v, uncovered] & NOCOVER).all() and (rec.visit_flux[v, uncovered] == 0).all()
    red = red[x[red] >= ll[0]]
    assert np.allclose(rec.visit_flux[v, red], np.interp(x[red], ll, fl), rtol=1e-5, atol=1e-3)
    k = red[1234]
    j = np.searchsorted(ll, x[k]) - 1
    t = (x[k] - ll[j]) / (ll[j + 1] - ll[j])
    assert rec.visit_ivar[v, k] == pytest.approx(1.0 / ((1 - t) ** 2 / iv[j] + t ** 2 / iv[j + 1]), rel=1e-5)
    gap = np.arange(adapter.grid.blocks[0][1], adapter.grid.blocks[1][0])
    assert (rec.visit_ivar[v, gap] == 0).all() and np.isfinite(rec.visit_flux).all()
    assert np.array_equal(adapter.grid.wavelength()[[0, -1]].round(2), [4949.94, 6799.86])


def test_seven_nights_of_kic_8098300_are_one_star_with_every_exposure(kic_record):
    _, units, rec = kic_record
    assert len(units) == 2  # KIC 8098300 and J230311.44+321335.5
    unit = units[KIC_ID]
    assert sorted(Path(p).name for p in unit.row["files"]) == sorted(KIC_NIGHTS)
    assert unit.row["designations"] == ["J192814.09+435530.7", "J192814.09+435531.0"]
    assert rec.star_id == KIC_ID and rec.n_visits == sum(KIC_NIGHTS.values()) == 32
    assert len(set(rec.visit_id)) == 32
    for name, n in KIC_NIGHTS.items():
        assert sum(vid.startswith(name.split(".fits")[0] + "#") for vid in rec.visit_id) == n
    # LMJM is Beijing local time in minutes: the first exposure (600 s) started at 17:36 UTC on MJD 58267
    assert rec.visit_mjd[0] == pytest.approx(83906016 / 1440 - 8 / 24 + 300 / 86400, abs=1e-9)
    assert np.all(np.diff(rec.visit_mjd) > 0)
    assert rec.snr == pytest.approx(88.36)  # the best night's COADD_B SNR (58649)
    # the first two nights hold no stellar light (header SNR ~0): kept as visits, recomputed S/N ~0
    assert np.nanmax(rec.visit_snr[:14]) < 2 and np.nanmin(rec.visit_snr[14:]) > 3
    assert (rec.coadd_ivar > 0).sum() > 6000 and np.isnan(rec.labels).all()


def test_rest_frame_needs_an_rv_and_the_catalogue_gives_it(tmp_path):
    skipped = LamostAdapter().discover(str(MRS))
    assert skipped.units == [] and len(skipped.skipped) == 8
    assert all("no radial velocity" in s.problem for s in skipped.skipped)
    # a LAMOST-like catalogue (upper-case names: matched case-insensitively); rv of the LRS file's Z
    rv = -0.00017162 * C_KMS
    obsids = [666212076, 666512076, 666912076, 744812076, 747012076, 747412076, 747810159]
    lines = ["OBSID,DESIGNATION,RV,TEFF,TEFF_ERR,LOGG,LOGG_ERR,FEH,FEH_ERR,SNR"]
    lines += [f"{o},LAMOST J192814.09+435531.0,{rv},{6400 + k},50,{4.0 + k / 100},0.1,-0.1,0.05,{k}"
              for k, o in enumerate(obsids)]
    (tmp_path / "kic_MRS.csv").write_text("\n".join(lines) + "\n")
    adapter = LamostAdapter(catalog=str(tmp_path / "kic_MRS.csv"))
    with pytest.warns(UserWarning, match="alpha_fe"):
        disc = adapter.discover(str(MRS))
    assert [u.star_id for u in disc.units] == [KIC_ID]
    assert any("med-58408" in s.path and "no radial velocity" in s.problem for s in disc.skipped)
    rec = adapter.read(disc.units[0])
    assert rec.labels[:3] == pytest.approx([6406, 4.06, -0.1])  # the highest-S/N row (k = 6)
    assert math.isnan(rec.labels[3]) and rec.meta["rv_kms"] == pytest.approx([rv] * 7)
    # the rest-frame visit is the file read at lambda_rest (1 + v/c)
    v = rec.visit_id.index(f"med-58270-HIP95119KP01_sp12-076#{LMJM}")
    with fits.open(NIGHT) as h:
        d = h[f"B-{LMJM}"].data
    x = adapter.grid.crval1 + adapter.grid.cdelt1 * np.arange(adapter.grid.npix)
    blue = np.arange(*adapter.grid.blocks[0])
    expected = np.interp(x[blue] + math.log10(1 + rv / C_KMS), d["LOGLAM"].astype(float), d["FLUX"].astype(float))
    good = rec.visit_ivar[v, blue] > 0
    assert good.mean() > 0.99
    assert np.allclose(rec.visit_flux[v, blue][good], expected[good], rtol=1e-5, atol=1e-3)


def test_lrs_layouts_wavelengths_and_redshift():
    dr1 = read_lrs(str(LRS / "spec-55862-B6212_sp06-003.fits"))  # row 2 is the "Subcontinuum"
    assert np.allclose(dr1.spectrum.loglam, 3.5682 + 1e-4 * np.arange(3904), atol=1e-12)
    dr6_path = LRS / "spec-57287-KP193637N444141V03_sp10-161.fits.gz"
    dr6 = read_lrs(str(dr6_path))
    with fits.open(dr6_path) as h:
        img = h[0].data.astype(np.float64)
    assert np.allclose(dr6.spectrum.loglam, np.log10(img[2]), rtol=0, atol=1e-12)
    assert np.array_equal(dr6.spectrum.flux, img[0]) and np.array_equal(dr6.spectrum.ivar, img[1])
    adapter = LamostAdapter(resolution="lrs")
    disc = adapter.discover(str(LRS))
    assert disc.skipped == [] and len(disc.units) == 4
    kic = next(u for u in disc.units if u.star_id == "J192814.09+435530.8")
    assert kic.row["rv"] == pytest.approx([-0.00017162 * C_KMS])
    rec = adapter.read(kic)
    assert rec.n_visits == 1 and rec.visit_snr_survey[0] == pytest.approx(87.63) and rec.visit_snr[0] > 50
    assert rec.visit_flux.shape == (1, 3534) and (rec.visit_ivar[0][adapter.usable] > 0).all()  # no masked pixel
    assert not (rec.visit_pixmask & NOCOVER)[0, adapter.usable].any()


def test_real_mrs_files_ingest_into_a_valid_store(tmp_path):
    from pairspec.ingest import ingest
    from pairspec.store import open_store

    report = ingest("lamost", str(MRS), str(tmp_path / "s.zarr"), workers=1, progress=False,
                    adapter_options={"frame": "heliocentric"})
    store = open_store(str(tmp_path / "s.zarr"))
    assert store.validate() == [] and report.skipped == []
    assert store.n_stars == 2 and store.n_visits == 32 + 7
    assert sorted(store.star_table()["id"]) == ["J192814.09+435531.0", "J230311.44+321335.5"]


def test_predicting_files_joins_a_stars_designations_as_ingest_does():
    """KIC 8098300's 58649 file carries another designation (J192814.09+435530.7): predict on files must
    still make one star of its seven nights, as ingest does (group_radius), not two."""
    from pairspec.predict import _file_chunks

    reader = LamostAdapter(frame="heliocentric")
    paths = sorted(str(MRS / name) for name in KIC_NIGHTS)
    star_ids, skipped, flags = [], [], []
    chunks = list(_file_chunks(reader, paths, reader.grid.npix, 1000, star_ids, skipped, lambda n: None, flags))
    assert skipped == [] and star_ids == [KIC_ID]
    assert sum(len(c["star"]) for c in chunks) == sum(KIC_NIGHTS.values())


def test_a_folder_or_file_of_the_other_resolution_says_which_option_reads_it():
    from pairspec.surveys.base import AdapterError

    with pytest.raises(AdapterError, match="it holds LAMOST LRS files: --option resolution=lrs"):
        LamostAdapter().discover(str(LRS))
    with pytest.raises(AdapterError, match=r"it holds LAMOST MRS files: --option resolution=mrs \(MRS is the default\)"):
        LamostAdapter(resolution="lrs").discover(str(MRS))
    lrs_file = next(LRS.glob("spec-*"))
    assert not LamostAdapter().can_read(lrs_file)
    assert "a LAMOST LRS file (spec-*); this model reads MRS files" in LamostAdapter().file_hint(lrs_file)
    assert LamostAdapter().file_hint(MRS / "notes.txt") is None
