"""Synthetic APOGEE DR17 survey: real-format files, row/NaN/zero conventions, labels vs truth, determinism."""

import hashlib

import numpy as np
import pytest
from astropy.io import fits

from pairspec.surveys.apogee.simulate import simulate_apogee

N_STARS = 14


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return simulate_apogee(out, n_stars=N_STARS, seed=7, workers=1, progress=False)


def _open(path):
    with fits.open(path) as h:
        return h[0].header.copy(), h[1].data.copy(), h[2].data.copy(), h[3].data.copy(), [x.header.copy() for x in h]


def test_tree_and_summary(sim):
    out = sim.out_dir
    assert (out / "allStar-dr17-synspec_rev1.fits").exists() and (out / "truth.fits").exists()
    assert sim.n_stars == N_STARS and sim.n_files == len(sim.paths["apstar"]) >= N_STARS
    for p in sim.paths["apstar"]:
        rel = p.relative_to(out).parts
        assert rel[0] in ("apo25m", "lco25m") and p.exists()
        assert p.name.startswith("asStar-dr17-" if rel[0] == "lco25m" else "apStar-dr17-")
    allstar = fits.getdata(out / "allStar-dr17-synspec_rev1.fits", 1)
    assert len(allstar) == sim.n_files and allstar["NVISITS"].sum() == sim.n_visits


def test_apstar_layout_dtypes_and_conventions(sim):
    seen_single = seen_multi = False
    for p in sim.paths["apstar"]:
        hdr, flux, err, mask, headers = _open(p)
        nv = hdr["NVISITS"]
        assert len(headers) == 11 and headers[8]["NAXIS"] == 0
        assert flux.dtype.str == ">f8" and err.dtype.str == ">f8" and mask.dtype.str == ">i8"
        assert headers[1]["BUNIT"].startswith("Flux (10^-17") and headers[3]["BUNIT"] == "Pixel bitmask"
        assert any("APOGEE" in str(c) for c in hdr["HISTORY"]) and hdr["SFILE1"][:7] in ("apVisit", "asVisit")
        assert hdr["CRVAL1"] == 4.179 and hdr["NWAVE"] == 8575
        with fits.open(p) as h:
            assert h[9].columns.names[:3] == ["filename", "jd", "snr"] and len(h[9].data) == nv
            assert len(h[10].data) == 1
        with np.errstate(divide="ignore", invalid="ignore"):
            assert abs(np.nanmedian(flux[0] / err[0]) - hdr["SNR"]) < 1e-6
        gap0 = np.isnan(flux[0])
        assert 500 < gap0.sum() < 1500 and np.array_equal(gap0, np.isnan(err[0]))
        if nv == 1:
            seen_single = True
            assert flux.shape == (2, 8575)
            assert not np.any(flux[1]) and not np.any(err[1]) and not np.any(mask[1])
        else:
            seen_multi = True
            assert flux.shape == (nv + 2, 8575)
            assert np.array_equal(mask[0], np.bitwise_and.reduce(mask[2:], axis=0))
            assert not np.any(mask[1])
            visits, verr = flux[2:], err[2:]
            assert np.isfinite(visits).all()
            gap = visits == 0
            assert 600 < gap.sum(1).min() and np.array_equal(gap, verr == 0)  # zeros, not NaN, in visit gaps
            assert (verr > 1e5).sum(1).min() >= 6 * 5  # chip-edge spikes: >= 5 px at each of 6 edges
            bad = (mask[2:] & 0x40FF) != 0  # DRP "bad" bits carry smooth flux and huge errors, not zeros
            assert bad.any() and np.all(verr[bad] > 1e4) and np.all(visits[bad] > 0)
            assert ((mask[2:] >> 12) & 1).any()  # sky lines flagged
    assert seen_single and seen_multi


def test_visit_snr_distribution(sim):
    snr = []
    for p in sim.paths["apstar"]:
        hdr = fits.getheader(p)
        snr += [hdr[f"SNRVIS{n}"] for n in range(1, hdr["NVISITS"] + 1) if hdr["NVISITS"] > 1]
    snr = np.array(snr)
    assert (snr < 60).mean() > 0.5 and snr.min() > 3


def test_allstar_has_no_truth_and_labels_match_errors(sim):
    out = sim.out_dir
    with fits.open(out / "allStar-dr17-synspec_rev1.fits") as h:
        names = [n.lower() for n in h[1].columns.names]
        allstar = h[1].data.copy()
    assert not {"mass", "age", "population", "cluster", "alpha_fe"} & set(names)
    truth = fits.getdata(out / "truth.fits", 1)
    assert {"teff", "logg", "fe_h", "mg_fe", "alpha_fe", "mass", "age", "population", "cluster"} <= set(truth.columns.names)
    np.testing.assert_array_equal(truth["mg_fe"], truth["alpha_fe"])
    row = {s: i for i, s in enumerate(truth["star_id"])}
    idx = np.array([row[s] for s in allstar["APOGEE_ID"]])
    z = []
    for col, t in (("TEFF", "teff"), ("LOGG", "logg"), ("FE_H", "fe_h"), ("MG_FE", "mg_fe")):
        diff = allstar[col] - truth[t][idx]
        assert np.nanmax(np.abs(diff)) > 0  # not a copy of the truth
        z.append(diff / allstar[f"{col}_ERR"])
    z = np.concatenate(z)
    assert 0.7 < np.nanstd(z) < 1.4


def test_cluster_members_share_abundances(sim):
    truth = fits.getdata(sim.out_dir / "truth.fits", 1)
    members = truth["cluster"] != ""
    assert members.sum() >= 2
    for name in set(truth["cluster"][members]):
        sel = truth["cluster"] == name
        assert np.ptp(truth["fe_h"][sel]) == 0 and np.ptp(truth["alpha_fe"][sel]) == 0
    assert np.ptp(truth["fe_h"]) > 0.1  # the field stars do differ


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.fits")):
        h.update(str(p.relative_to(root)).encode())
        with fits.open(p) as hd:
            for x in hd:
                if x.data is not None:
                    h.update(np.ascontiguousarray(x.data).tobytes() if not hasattr(x, "columns") else x.data.tobytes())
    return h.hexdigest()


def test_same_seed_same_output_for_any_worker_count(tmp_path):
    a = simulate_apogee(tmp_path / "a", n_stars=4, seed=3, workers=1, progress=False)
    b = simulate_apogee(tmp_path / "b", n_stars=4, seed=3, workers=2, progress=False)
    assert a.n_visits == b.n_visits
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    simulate_apogee(tmp_path / "c", n_stars=4, seed=4, workers=1, progress=False)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
