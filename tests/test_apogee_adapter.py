"""APOGEE DR17 adapter on the two real apStar files, placed in a DR17 tree with a small allStar."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from realdata import MULTI, MULTI_ID, REAL, REQUIRES_REAL, SINGLE, SINGLE_ID

from pairspec.surveys import get_adapter
from pairspec.surveys.apogee.adapter import (
    ApogeeDR17Adapter,
    apstar_to_spectrum,
    read_apstar,
)
from pairspec.surveys.apogee.layout import APOGEE_GRID
from pairspec.surveys.base import AdapterError, SurveyAdapter, recompute_snr

pytestmark = REQUIRES_REAL

BASE_ROW = dict(EXTRATARG=0, ASPCAPFLAG=0, NVISITS=1, RA=0.0, DEC=0.0, MEMBER="",
                TEFF=4500.0, TEFF_ERR=80.0, LOGG=2.5, LOGG_ERR=0.05, FE_H=-0.2, FE_H_ERR=0.01,
                FE_H_FLAG=0, MG_FE=0.1, MG_FE_ERR=0.02, MG_FE_FLAG=0)


def row(star, field, telescope="apo25m", **kw):
    return {**BASE_ROW, "APOGEE_ID": star, "TELESCOPE": telescope, "FIELD": field,
            "FILE": f"apStar-dr17-{star}.fits", **kw}


def write_allstar(path: Path, rows: list[dict]) -> Path:
    """allStar HDU1 with blank-padded string columns, as the real file has."""
    from astropy.io import fits

    cols = []
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            width = max(len(v) for v in values) + 4
            cols.append(fits.Column(name=name, format=f"{width}A", array=np.array([v.ljust(width) for v in values])))
        elif isinstance(values[0], int):
            cols.append(fits.Column(name=name, format="K", array=np.array(values, dtype=np.int64)))
        else:
            cols.append(fits.Column(name=name, format="D", array=np.array(values, dtype=np.float64)))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    return path


def make_tree(tmp_path: Path, extra_rows=(), allstar_name="allStar-dr17-synspec_rev1.fits") -> Path:
    root = tmp_path / "dr17"
    for name, field in ((MULTI, "000+02"), (SINGLE, "K04_083+13")):
        (root / "apo25m" / field).mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / name, root / "apo25m" / field / name)
    rows = [
        row(MULTI_ID, "000+02", NVISITS=3, SNR=154.2, RA=263.478474, DEC=-27.884539, MEMBER="bulge"),
        row(SINGLE_ID, "K04_083+13", SNR=137.5, TEFF=5100.0, FE_H=-0.5, FE_H_FLAG=2),
        *extra_rows,
    ]
    write_allstar(root / allstar_name, rows)
    return root


def raw(name):
    from astropy.io import fits

    with fits.open(REAL / name) as h:
        return h[0].header.copy(), h[1].data.astype(float), h[2].data.astype(float), h[3].data.astype(np.int64)


def test_discover_builds_one_unit_per_file(tmp_path):
    root = make_tree(tmp_path)
    adapter = ApogeeDR17Adapter()
    found = adapter.discover(str(root))
    assert [u.unit_id for u in found.units] == [f"apo25m/000+02/{MULTI}", f"apo25m/K04_083+13/{SINGLE}"]
    assert [u.star_id for u in found.units] == [MULTI_ID, SINGLE_ID]
    assert found.skipped == []
    assert Path(found.units[0].path) == root / "apo25m" / "000+02" / MULTI
    assert found.units[0].row["TELESCOPE"] == "apo25m"  # padding stripped
    # adapters and units travel to worker processes
    again = pickle.loads(pickle.dumps((adapter, found.units[0])))
    assert again[0].bad_mask == adapter.bad_mask and again[1] == found.units[0]


def test_allstar_lite_and_explicit_path(tmp_path):
    root = make_tree(tmp_path, allstar_name="allStarLite-dr17-synspec_rev1.fits")
    assert len(ApogeeDR17Adapter().discover(root).units) == 2
    assert len(ApogeeDR17Adapter().discover(root / "allStarLite-dr17-synspec_rev1.fits").units) == 2


def test_multi_visit_star_matches_the_file(tmp_path):
    adapter = ApogeeDR17Adapter()
    unit = adapter.discover(make_tree(tmp_path)).units[0]
    rec = adapter.read(unit)
    _header, flux, err, mask = raw(MULTI)

    assert rec.star_id == MULTI_ID and rec.source == unit.unit_id and rec.n_visits == 3
    for a in (rec.coadd_flux, rec.coadd_ivar, rec.visit_flux, rec.visit_ivar):
        assert np.isfinite(a).all()
    # visits are rows 2..4 exactly; coadd is row 0
    np.testing.assert_array_equal(rec.visit_pixmask, mask[2:5])
    np.testing.assert_array_equal(rec.visit_flux, np.nan_to_num(flux[2:5]).astype(np.float32))
    np.testing.assert_array_equal(rec.coadd_pixmask, mask[0])
    np.testing.assert_array_equal(rec.coadd_flux, np.nan_to_num(flux[0]).astype(np.float32))
    good = rec.visit_ivar > 0
    assert 0.8 < good.mean() < 0.9  # chip gaps, edges and bad bits go; most pixels stay
    np.testing.assert_allclose(rec.visit_ivar[good], 1.0 / err[2:5][good] ** 2, rtol=1e-6)
    assert not rec.visit_ivar[:, ~APOGEE_GRID.usable()].any()
    bad_bits = (rec.visit_pixmask & adapter.bad_mask) != 0
    assert bad_bits.any() and not rec.visit_ivar[bad_bits].any()
    assert rec.visit_pixmask.dtype == np.int64 and rec.visit_flux.dtype == np.float32

    np.testing.assert_allclose(rec.visit_snr_survey, [67.2, 90.6, 105.9], atol=0.05)
    ratio = rec.visit_snr / rec.visit_snr_survey
    assert np.all((ratio > 1 / 1.5) & (ratio < 1.5))
    np.testing.assert_allclose(rec.visit_mjd, [56396.49199, 56433.38234, 56434.3824], atol=1e-5)
    assert rec.visit_id == [f"apVisit-dr17-5815-{m}.fits" for m in ("56396-212", "56433-221", "56434-221")]
    assert rec.visit_fiber.tolist() == [212, 221, 221]

    np.testing.assert_allclose(rec.labels[:4], [4500.0, 2.5, -0.2, 0.1], rtol=1e-6)
    assert np.isnan(rec.labels[4:]).all()  # this allStar has no M_H, ALPHA_M or other abundance columns
    np.testing.assert_allclose(rec.label_err[:4], [80.0, 0.05, 0.01, 0.02], rtol=1e-6)
    assert rec.snr == pytest.approx(154.2)
    assert rec.meta["field"] == "000+02" and rec.meta["telescope"] == "apo25m"
    assert rec.meta["member"] == "bulge" and rec.meta["nvisits_header"] == 3
    assert rec.meta["dropped_visits"] == []


def test_single_visit_star_is_row_zero(tmp_path):
    adapter = ApogeeDR17Adapter()
    rec = adapter.read(adapter.discover(make_tree(tmp_path)).units[1])
    _header, flux, _err, mask = raw(SINGLE)
    assert rec.n_visits == 1
    np.testing.assert_array_equal(rec.visit_flux[0], np.nan_to_num(flux[0]).astype(np.float32))
    np.testing.assert_array_equal(rec.visit_pixmask[0], mask[0])
    np.testing.assert_array_equal(rec.coadd_ivar, rec.visit_ivar[0])
    assert np.isfinite(rec.visit_ivar).all() and (rec.visit_ivar > 0).mean() > 0.8
    # SNRVIS1 is 0 in DR17 single-visit files: the header SNR of row 0 stands in
    assert rec.visit_snr_survey[0] == pytest.approx(137.49, abs=0.01)
    assert rec.visit_snr[0] == pytest.approx(recompute_snr(rec.coadd_flux, rec.coadd_ivar)[0])
    assert rec.label_flags[:4].tolist() == [0, 0, 2, 0] and rec.labels[0] == 5100.0


def test_strict_masks_persistence_and_skylines(tmp_path):
    unit = ApogeeDR17Adapter().discover(make_tree(tmp_path)).units[0]
    loose, strict = ApogeeDR17Adapter().read(unit), ApogeeDR17Adapter(strict=True).read(unit)
    warn = (loose.visit_pixmask & sum(1 << b for b in (9, 10, 11, 12))) != 0
    warn &= loose.visit_ivar > 0
    assert warn.sum() > 10
    assert not strict.visit_ivar[warn].any()
    assert (strict.visit_ivar > 0).sum() == (loose.visit_ivar > 0).sum() - warn.sum()


def test_label_subset_star_bad_and_require_labels(tmp_path):
    root = make_tree(tmp_path)
    from astropy.io import fits

    with fits.open(root / "allStar-dr17-synspec_rev1.fits", mode="update") as h:
        h[1].data["ASPCAPFLAG"][1] = 1 << 23  # STAR_BAD on the single-visit star
    default = ApogeeDR17Adapter(labels=["teff", "fe_h"])
    units = default.discover(root).units
    assert len(units) == 2
    good, bad = default.read(units[0]), default.read(units[1])
    np.testing.assert_allclose(good.labels, [4500.0, -0.2], rtol=1e-6)
    assert np.isnan(bad.labels).all() and np.isnan(bad.label_err).all()
    assert bad.star_flags == 1 << 23 and bad.n_visits == 1
    assert ApogeeDR17Adapter(star_bad="keep").read(units[1]).labels[0] == 5100.0
    dropped = ApogeeDR17Adapter(star_bad="drop").discover(root)
    assert [u.star_id for u in dropped.units] == [MULTI_ID]
    assert "STAR_BAD" in dropped.skipped[0].problem
    strict = ApogeeDR17Adapter(require_labels=True).discover(root)
    assert [s.star_id for s in strict.skipped] == [SINGLE_ID]
    assert "missing labels: teff, logg, fe_h, mg_fe" in strict.skipped[0].problem


def test_extratarg_duplicate_row_is_skipped(tmp_path):
    # the same star listed again in another field, flagged non-primary
    root = make_tree(tmp_path, [row(MULTI_ID, "bulge_dup", EXTRATARG=16, SNR=300.0)])
    (root / "apo25m" / "bulge_dup").mkdir()
    shutil.copy(REAL / MULTI, root / "apo25m" / "bulge_dup" / MULTI)
    found = ApogeeDR17Adapter().discover(root)
    assert [u.unit_id for u in found.units] == [f"apo25m/000+02/{MULTI}", f"apo25m/K04_083+13/{SINGLE}"]
    assert len(found.skipped) == 1 and "EXTRATARG bit 4" in found.skipped[0].problem
    # without the cut the higher-SNR row wins and the other is a reported duplicate
    loose = ApogeeDR17Adapter(drop_duplicates=False).discover(root)
    assert f"apo25m/bulge_dup/{MULTI}" in [u.unit_id for u in loose.units]
    assert [s.problem.split(":")[0] for s in loose.skipped] == ["duplicate"]


def test_lone_apstar_and_spectrum_round_trip():
    import astropy.units as u

    rec = read_apstar(REAL / MULTI)
    assert rec.star_id == MULTI_ID and np.isnan(rec.labels).all() and rec.n_visits == 3
    assert rec.meta["field"] == "000+02" and rec.snr == pytest.approx(154.155, abs=1e-3)
    # a hand-made summary row: bytes, padding, lower-case keys and sentinels are all fine
    given = read_apstar(REAL / MULTI, row={"apogee_id": b"MY-STAR  ", "TEFF": -9999.0, "logg": 3.1,
                                           "telescope": b"lco25m ", "SNR": 42.0})
    assert given.star_id == "MY-STAR" and given.meta["telescope"] == "lco25m" and given.snr == 42.0
    assert np.isnan(given.labels[0]) and given.labels[1] == pytest.approx(3.1)
    spec = apstar_to_spectrum(REAL / MULTI, row=3)
    np.testing.assert_array_equal(spec.flux.value, rec.visit_flux[1])
    np.testing.assert_array_equal(spec.uncertainty.array, rec.visit_ivar[1])
    np.testing.assert_array_equal(spec.mask, rec.visit_ivar[1] == 0)
    assert spec.flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
    np.testing.assert_allclose(spec.spectral_axis.to_value(u.AA), APOGEE_GRID.wavelength())
    assert spec.spectral_axis[0].value == pytest.approx(15100.80, abs=0.01)


def test_registry_gives_the_adapter():
    adapter = get_adapter("APOGEE", strict=True)
    assert isinstance(adapter, ApogeeDR17Adapter) and isinstance(adapter, SurveyAdapter)
    assert adapter.name == "apogee" and adapter.release == "dr17" and 12 in adapter.bad_bits
    names = adapter.schema.names
    assert names[:4] == ["teff", "logg", "fe_h", "mg_fe"] and adapter.grid is APOGEE_GRID
    assert len(names) == 27 and {"m_h", "alpha_m", "c_fe", "n_fe", "ce_fe", "yb_fe"} <= set(names)  # DR17's labels


def test_every_dr17_label_column_is_kept_and_missing_ones_are_nan(tmp_path):
    """An allStar with C_FE and N_FE (the C/N-age labels) gives them to the store; one without them (another
    release, a custom table) is ingested with them NaN and a warning; asking for one by name is an error."""
    from astropy.table import Table

    root = make_tree(tmp_path)
    path = root / "allStar-dr17-synspec_rev1.fits"
    t = Table.read(path, hdu=1)
    t["C_FE"] = np.float32([0.12, -0.05][: len(t)] + [0.0] * max(0, len(t) - 2))
    t["C_FE_ERR"] = np.full(len(t), 0.02, np.float32)
    t["N_FE"] = np.full(len(t), 0.30, np.float32)
    t.write(path, overwrite=True)
    adapter = ApogeeDR17Adapter()
    with pytest.warns(UserWarning, match="NaN in the store") as caught:
        unit = adapter.discover(root).units[0]
    absent = str(caught[0].message).split("present; ")[1].split(" are NaN")[0].split(", ")
    assert "C_FE" not in absent and "N_FE" not in absent and "O_FE" in absent
    rec = adapter.read(unit)
    names = adapter.schema.names
    assert rec.labels[names.index("n_fe")] == pytest.approx(0.30)
    assert np.isfinite(rec.labels[names.index("c_fe")]) and rec.label_err[names.index("c_fe")] == pytest.approx(0.02)
    assert np.isnan(rec.labels[names.index("o_fe")])
    with pytest.raises(AdapterError, match="O_FE"):
        ApogeeDR17Adapter(labels=["teff", "o_fe"]).discover(root)
