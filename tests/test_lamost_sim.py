"""The LAMOST simulator: real formats that the adapter reads, truth files keyed by the adapter's ids, an
exposure S/N distribution with most exposures below 60, rest-frame spectra that match the truth, and the
same files for any worker count."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pairspec.surveys import get_simulator
from pairspec.surveys.lamost import LamostAdapter
from pairspec.surveys.lamost.files import read_mrs
from pairspec.surveys.lamost.simulate import plan

N_STARS = 12


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("lamost-sim") / "src"
    res = get_simulator("lamost").simulate(out, n_stars=N_STARS, seed=3, workers=1, progress=False)
    adapter = LamostAdapter()
    disc = adapter.discover(str(out))
    return out, res, adapter, disc, [adapter.read(u) for u in disc.units]


def test_truth_files_are_keyed_by_the_adapter_ids(sim):
    out, res, adapter, disc, _records = sim
    assert disc.skipped == [] and len(disc.units) == N_STARS
    with fits.open(res["truth"]) as h:
        ids = list(h[1].data["star_id"])
        spectra = h["SPECTRA"].data
        assert {"teff", "logg", "fe_h", "alpha_fe"} <= {c.lower() for c in h[1].columns.names}
    assert sorted(ids) == sorted(u.star_id for u in disc.units)
    assert spectra.shape == (N_STARS, adapter.grid.npix) and spectra.dtype.kind == "f" and spectra.dtype.itemsize == 4
    assert (spectra[:, ~adapter.usable] == 1).all() and 0 < spectra.min() and spectra.max() <= 1
    lrs = LamostAdapter(resolution="lrs")
    lrs_units = lrs.discover(str(out)).units
    with fits.open(res["truth_lrs"]) as h:
        assert sorted(h[1].data["star_id"]) == sorted(u.star_id for u in lrs_units)
        assert h["SPECTRA"].data.shape == (len(lrs_units), lrs.grid.npix)
    assert 0 < len(lrs_units) < N_STARS


def test_exposures_are_noisy_masked_and_in_both_layouts(sim):
    out, _, _adapter, _, records = sim
    snr = np.concatenate([r.visit_snr_survey for r in records])
    assert snr.size > 2 * N_STARS and np.mean(snr < 60) > 0.5 and snr.max() > 30
    assert {lay for r in records for lay in r.meta["layouts"]} == {"rows", "arrays"}
    pix = np.concatenate([r.visit_pixmask for r in records])
    ivar = np.concatenate([r.visit_ivar for r in records])
    flagged = (pix & 0xFFFF) != 0
    assert flagged.any() and (ivar[flagged] == 0).all()  # PIXMASK bits kept, those pixels bad
    f = read_mrs(min(str(p) for p in (out / "mrs").rglob("med-*.fits")))
    lmjm = min(f.exposures)
    assert f.exposures[lmjm]["B"].loglam.size == 4136
    steps = np.diff(f.exposures[lmjm]["B"].loglam)
    assert 0.8e-5 < steps.min() < steps.max() < 1.2e-5 and steps.max() / steps.min() > 1.2  # non-uniform native
    assert np.allclose(np.diff(f.coadds["R"].loglam), 1e-5, atol=5e-7)  # coadds on the 1e-5 lattice
    with fits.open(f.path) as h:
        assert h[0].header["DESIG"].startswith("LAMOST J") and h[0].name.upper() == "INFORMATION"
        red = next(x for x in h if x.name.startswith("R-"))
        loglam = red.data["LOGLAM"] if "LOGLAM" in red.columns.names else np.log10(red.data["WAVELENGTH"][0])
        assert loglam[0] > loglam[-1]  # red to blue, as the real files


def test_rest_frame_coadds_match_the_truth_spectra(sim):
    """A wrong RV shift would misalign the lines: the normalised coadd must follow the noiseless model."""
    from pairspec.preprocess import normalize

    _out, res, adapter, _, records = sim
    with fits.open(res["truth"]) as h:
        truth = dict(zip(h[1].data["star_id"], h["SPECTRA"].data))
    best = sorted(records, key=lambda r: -r.snr)[:3]
    flux = np.stack([r.coadd_flux for r in best])
    ivar = np.stack([r.coadd_ivar for r in best])
    norm, norm_ivar, _ = normalize(flux, ivar, adapter.grid)
    for r, nf, ni in zip(best, norm, norm_ivar):
        for a, b in adapter.grid.blocks:
            good = ni[a:b] > 0
            corr = np.corrcoef(nf[a:b][good], truth[r.star_id][a:b][good])[0, 1]
            assert corr > 0.9, (r.star_id, a, corr)


def test_catalogue_labels_scatter_around_the_truth(sim):
    _, res, _, _, records = sim
    with fits.open(res["truth"]) as h:
        truth = {sid: (t, g) for sid, t, g in zip(h[1].data["star_id"], h[1].data["teff"], h[1].data["logg"])}
    dteff = [r.labels[0] - truth[r.star_id][0] for r in records if np.isfinite(r.labels[0])]
    assert len(dteff) >= N_STARS - 2 and abs(np.median(dteff)) < 150 and np.std(dteff) < 400


def test_layout_plan_covers_every_real_layout():
    stars = plan(300, seed=5)
    assert {n["layout"] for s in stars for n in s["nights"]} == {"rows", "arrays"}
    assert {e["layout"] for s in stars for e in s["epochs"]} == {"image_dr1", "image", "table"}
    assert any(n["desig"] != s["desig"] for s in stars for n in s["nights"])  # varied designations
    assert min(len(s["nights"]) for s in stars) == 1 and max(len(s["nights"]) for s in stars) == 7


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.fits"))}


def test_same_seed_same_files_for_any_worker_count(tmp_path):
    sim = get_simulator("lamost")
    sim.simulate(tmp_path / "one", n_stars=3, seed=11, workers=1, progress=False)
    sim.simulate(tmp_path / "two", n_stars=3, seed=11, workers=2, progress=False)
    one, two = _digest(tmp_path / "one"), _digest(tmp_path / "two")
    assert one == two and len(one) > 5
    with pytest.raises(ValueError, match="not supported"):
        sim.simulate(tmp_path / "x", n_stars=3, store_only=True)
