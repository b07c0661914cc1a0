"""The contract every survey adapter keeps, built in or installed through the entry point: run on a tiny
tree written by the survey's own simulator (pairspec.surveys registries)."""

from __future__ import annotations

import numpy as np
import pytest

from pairspec.surveys import available, get_adapter, get_simulator, simulators
from pairspec.surveys.base import AdapterError, Discovery, StarRecord

SURVEYS = sorted(set(available()) & set(simulators()))
N_STARS = 12


@pytest.fixture(scope="module", params=SURVEYS)
def tree(request, tmp_path_factory):
    """(survey name, simulated source folder, simulator result) for each survey with a simulator."""
    out = tmp_path_factory.mktemp(f"contract-{request.param}")
    res = get_simulator(request.param).simulate(out / "src", n_stars=N_STARS, seed=7, workers=1, progress=False)
    return request.param, out / "src", res


def test_every_adapter_has_a_simulator():
    assert set(available()) <= set(simulators()), "an adapter without a simulator cannot run the contract suite"


def test_discover_gives_sorted_unique_units(tree):
    name, src, _ = tree
    adapter = get_adapter(name)
    disc = adapter.discover(str(src))
    assert isinstance(disc, Discovery) and disc.units
    ids = [u.unit_id for u in disc.units]
    assert len(set(ids)) == len(ids)
    assert len({u.star_id for u in disc.units}) == len(disc.units), "one unit per star after de-duplication"
    assert all(isinstance(s.problem, str) and s.problem for s in disc.skipped)


def test_records_keep_the_contract(tree):
    name, src, _ = tree
    adapter = get_adapter(name)
    grid, schema = adapter.grid, adapter.schema
    assert type(grid).from_dict(grid.to_dict()) == grid and type(schema).from_dict(schema.to_dict()) == schema
    assert grid.usable().sum() > 0 and len(schema) >= 1
    for unit in adapter.discover(str(src)).units:
        rec = adapter.read(unit)
        assert isinstance(rec, StarRecord) and rec.star_id == unit.star_id
        nv, npix, k = rec.n_visits, grid.npix, len(schema)
        assert nv >= 1
        assert rec.visit_flux.shape == rec.visit_ivar.shape == rec.visit_pixmask.shape == (nv, npix)
        assert rec.coadd_flux.shape == rec.coadd_ivar.shape == rec.coadd_pixmask.shape == (npix,)
        assert rec.visit_flux.dtype == rec.visit_ivar.dtype == np.float32
        for arr in (rec.visit_flux, rec.visit_ivar, rec.coadd_flux, rec.coadd_ivar):
            assert np.isfinite(arr).all(), "no NaN/inf in flux or ivar: bad pixels are ivar = 0"
        assert (rec.visit_ivar >= 0).all() and (rec.coadd_ivar >= 0).all()
        assert (rec.visit_ivar > 0).any(axis=1).all(), "every kept visit has a good pixel"
        assert rec.labels.shape == rec.label_err.shape == rec.label_flags.shape == (k,)
        assert len(rec.visit_id) == nv and rec.visit_snr.shape == rec.visit_mjd.shape == (nv,)
        good = np.isfinite(rec.labels)
        lo, hi = np.array([lab.lo for lab in schema.labels]), np.array([lab.hi for lab in schema.labels])
        assert ((rec.labels[good] >= lo[good]) & (rec.labels[good] <= hi[good])).all()


def test_truth_file_matches_the_store_ids(tree, tmp_path):
    from astropy.io import fits

    from pairspec.ingest import ingest
    from pairspec.store import open_store

    name, src, res = tree
    store = tmp_path / "s.zarr"
    report = ingest(name, str(src), str(store), workers=1, progress=False)
    s = open_store(str(store))
    assert s.validate() == [] and s.n_stars == report.n_stars > 0
    with fits.open(res["truth"]) as h:
        ids = set(np.char.strip(np.asarray(h[1].data["star_id"]).astype(str)))
        cols = {c.lower() for c in h[1].columns.names}
        assert "SPECTRA" in h and h["SPECTRA"].data.shape == (len(h[1].data), s.grid.npix)
    assert set(s.star_table()["id"]) <= ids
    assert set(s.schema.names) & cols, "truth has the schema's labels"


def test_broken_files_are_reported_and_the_rest_ingested(tree, tmp_path):
    import shutil

    from pairspec.ingest import ingest

    name, src, _ = tree
    copy = tmp_path / "src"
    shutil.copytree(src, copy)
    adapter = get_adapter(name)
    units = adapter.discover(str(copy)).units
    paths = sorted({u.path for u in units})
    if len(paths) < 3:
        pytest.skip(f"{name}: its units share fewer than 3 files")
    truncated, garbage = paths[0], paths[1]
    data = open(truncated, "rb").read()
    open(truncated, "wb").write(data[: len(data) // 3])
    open(garbage, "wb").write(b"not a spectrum at all\n" * 50)
    report = ingest(name, str(copy), str(tmp_path / "s.zarr"), workers=1, progress=False)
    named = " ".join(f"{s.path}: {s.problem}" for s in report.skipped)
    assert truncated in named and garbage in named
    assert report.n_stars >= 1
    with pytest.raises(AdapterError):
        adapter.read(next(u for u in units if u.path == garbage))
