"""Network inputs, label statistics and twins loaded from a real (tiny) pair store."""

import json

import numpy as np
import pytest

from pairspec import data, preprocess
from pairspec.grid import LogLinearGrid
from pairspec.pairs import leave_one_out
from pairspec.preprocess import normalize
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA, APOGEE_GRID
from pairspec.surveys.base import StarRecord

GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=400, blocks=((10, 190), (210, 390)))
N_VISITS = [1, 2, 4, 3, 2, 1, 5, 2, 3, 2, 4, 1]


def _lines(rng, npix):
    x = np.arange(npix)
    c, d = rng.uniform(0, npix, 30), rng.uniform(0.05, 0.4, 30)
    return 1 - (d[:, None] * np.exp(-0.5 * ((x[None] - c[:, None]) / 2.0) ** 2)).sum(0).clip(0, 0.7)


def _record(i, n_visits, rng, snr=10.0):
    npix = GRID.npix
    true = _lines(rng, npix)
    t = np.linspace(-1, 1, npix)
    cont = 500 * rng.uniform(0.8, 1.2, (n_visits, 1)) * (1 + rng.uniform(-0.2, 0.2, (n_visits, 1)) * t)
    sigma = cont / snr
    vflux = (true * cont + rng.normal(size=cont.shape) * sigma).astype(np.float32)
    vivar = (1 / sigma**2).astype(np.float32)
    vivar[:, rng.random(npix) < 0.05] = 0.0  # masked pixels shared by the visits
    ccont = 500 * (1 + 0.1 * t)
    cflux = (true * ccont + rng.normal(size=npix) * ccont / 50).astype(np.float32)
    labels = np.array([4500 + 10 * i, 2.5, -0.1 * i, np.nan if i % 3 == 0 else 0.1], dtype=np.float32)
    return StarRecord(
        star_id=f"2M{i:04d}", source=f"u/{i}", labels=labels, label_err=np.full(4, 0.1, np.float32),
        label_flags=np.zeros(4, np.int64), star_flags=0, coadd_flux=cflux,
        coadd_ivar=(50 / ccont) ** 2 * np.ones(npix, np.float32), coadd_pixmask=np.zeros(npix, np.int64),
        visit_flux=vflux, visit_ivar=vivar, visit_pixmask=np.zeros((n_visits, npix), np.int64),
        visit_snr=np.full(n_visits, snr, np.float32) + np.arange(n_visits, dtype=np.float32),
        visit_snr_survey=np.full(n_visits, np.nan, np.float32), visit_mjd=np.arange(n_visits, dtype=float),
        visit_id=[f"v{i}_{k}" for k in range(n_visits)], visit_fiber=np.full(n_visits, -1, np.int32),
        snr=50.0, meta={"ra": 1.0, "dec": 2.0},
    ), true


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from pairspec.store import create_store

    rng = np.random.default_rng(0)
    built = [_record(i, n, rng) for i, n in enumerate(N_VISITS)]
    recs = [r for r, _ in built]
    recs[6].visit_ivar[2] = 0.0  # an all-bad visit: dropped as an input, ignored in others' targets
    path = tmp_path_factory.mktemp("twins") / "s.zarr"
    s = create_store(str(path), "fake", "t1", GRID, APOGEE_CORE_SCHEMA, chunk=4)
    s.append(recs[:5])
    s.append(recs[5:])
    s.truth = np.stack([t for _, t in built])
    return s


def test_model_pixels():
    assert data.model_pixels(APOGEE_GRID).size == 7514
    pix = data.model_pixels(GRID)
    assert pix.size == 360 and pix[0] == 10 and pix[-1] == 389 and 195 not in pix


def test_prepare_inputs_never_nan():
    rng = np.random.default_rng(1)
    flux = rng.normal(100, 5, (4, GRID.npix)).astype(np.float32)
    ivar = np.full_like(flux, 0.04)
    ivar[1] = 0.0  # all bad but finite
    flux[2, 50] = 1e30  # overflow-scale spike
    flux[3] = 0.0
    x = preprocess.prepare_inputs(flux, ivar, GRID)
    assert x.shape == (4, 2, 360) and x.dtype == np.float32
    assert np.isfinite(x).all()
    assert (x[1] == 0).all()
    assert x[:, 0].min() >= -1.5 and x[:, 0].max() <= 1.0
    assert x[0, 1].min() > 0 and x[0, 1].max() < 1
    # flux 100 +- 5 with ivar 0.04: per-pixel S/N 20 -> weight 20/30
    assert np.median(x[0, 1]) == pytest.approx(2 / 3, rel=0.05)
    w = preprocess.pixel_weight(np.array([0.0, 25.0, 100.0, 1e4]))
    assert w[0] == 0 and np.all(np.diff(w) > 0) and w[2] == pytest.approx(0.5)


def test_label_stats_nan_aware_and_round_trip():
    labels = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.nan]], dtype=np.float32)
    st = data.compute_label_stats(labels)
    np.testing.assert_allclose(st.mean, [2.0, 5.0, 0.0])
    np.testing.assert_allclose(st.std, [1.0, 1e-3, 1.0])  # constant label: floored, not 0
    assert st.lo[0] == 1.0 and st.hi[0] == 3.0 and np.isnan(st.lo[2])
    text = json.dumps(st.to_dict(), allow_nan=False)
    back = data.LabelStats.from_dict(json.loads(text))
    np.testing.assert_array_equal(back.mean, st.mean)
    assert back.std.dtype == np.float32 and np.isnan(back.hi[2])


def test_loo_twins_from_store(store):
    twins = data.TwinData(store, "all", mode="loo", chunk_stars=3)
    multi = [i for i, n in enumerate(N_VISITS) if n >= 2]
    assert len(twins) == sum(N_VISITS[i] for i in multi) - 1  # the all-bad visit is dropped
    assert sorted(set(twins.star_index.tolist())) == multi
    stars, visits = store.star_table(), store.visit_table()
    np.testing.assert_array_equal(visits["star"][twins.visit_index], twins.star_index)
    np.testing.assert_array_equal(twins.labels, store.labels()[twins.star_index])
    np.testing.assert_array_equal(twins.snr, visits["snr"][twins.visit_index])
    for arr in (twins.x, twins.target, twins.target_w):
        assert arr.dtype == np.float32 and np.isfinite(arr).all()

    # each target = leave-one-out of the star's other normalised visits, recomputed here
    pix = data.model_pixels(GRID)
    for s in (2, 6):
        a, n = stars["first_visit"][s], stars["n_visits"][s]
        f, iv, _ = store.visit_spectra(slice(a, a + n))
        nf, ni, _ = normalize(f, iv, GRID)
        lf, li = leave_one_out(nf[:, pix], ni[:, pix])
        for k in range(n):
            rows = np.flatnonzero(twins.visit_index == a + k)
            if s == 6 and k == 2:
                assert rows.size == 0
                continue
            good = li[k] > 0
            np.testing.assert_allclose(twins.target[rows[0]][good], lf[k][good], rtol=1e-5)
            assert (twins.target_w[rows[0]][~good] == 0).all()

    # the twin target is less noisy than its input: 4-visit star, other 3 visits coadded
    r = np.flatnonzero(twins.star_index == 2)
    truth = store.truth[2][pix]
    good = twins.target_w[r] > 0
    err_in = np.std((twins.x[r, 0] + 1 - truth)[good])
    err_tgt = np.std((twins.target[r] - truth)[good])
    assert err_tgt < 0.7 * err_in


def test_twins_read_on_threads_equal_one_thread(store):
    """TwinData reads star chunks on threads (ordered.thread_map): same twins, same order."""
    one = data.TwinData(store, "all", mode="loo", chunk_stars=1, threads=1)
    many = data.TwinData(store, "all", mode="loo", chunk_stars=1, threads=3)
    for name in ("x", "target", "target_w", "labels", "snr", "star_index", "visit_index"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=name)


def test_thread_map_keeps_order_and_bounds_the_look_ahead():
    import threading
    import time

    from pairspec.ordered import thread_map

    started, lock = [], threading.Lock()

    def slow(i):
        with lock:
            started.append(i)
        time.sleep(0.01 * (i % 3))  # later items may finish first
        return i * i

    out = []
    for value in thread_map(slow, range(20), threads=3):
        with lock:
            ahead = len(started) - len(out)
        assert ahead <= 2 * 3  # never more than 2 x threads submitted and not yet consumed
        out.append(value)
    assert out == [i * i for i in range(20)]
    assert list(thread_map(slow, [4], threads=3)) == [16]


def test_splits_partition_and_max_stars(store):
    parts = [data.TwinData(store, s, mode="loo") for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(data.TwinData(store, "all", mode="loo"))
    split = store.star_table()["split"]
    for code, p in enumerate(parts):
        assert (split[p.star_index] == code).all()
    every = data.select_stars(store, "all", "loo")
    capped = data.TwinData(store, "all", mode="loo", max_stars=2)
    two = sorted(set(capped.star_index.tolist()))
    assert len(two) == 2 and set(two) <= set(every.tolist())
    # nested (a larger cap keeps the smaller one's stars) and not simply the first stars in store order
    three = data.select_stars(store, "all", "loo", max_stars=3)
    assert set(two) <= set(three.tolist()) and list(three) == sorted(three)
    ids = store.star_table()["id"]
    import zlib

    ranked = sorted(every, key=lambda i: zlib.crc32(str(ids[i]).encode()))
    assert two == sorted(ranked[:2])
    with pytest.raises(ValueError, match="split"):
        data.TwinData(store, "training")
    with pytest.raises(ValueError, match="mode"):
        data.TwinData(store, "all", mode="pairs")


def test_coadd_and_direct_modes(store):
    pix = data.model_pixels(GRID)
    cf, ci, _ = store.star_spectra(slice(0, store.n_stars))
    nf, _ni, _ = normalize(cf, ci, GRID)
    coadd = data.TwinData(store, "all", mode="coadd", min_visits=1)
    assert len(coadd) == sum(N_VISITS) - 1
    for row in (0, len(coadd) - 1):
        np.testing.assert_allclose(coadd.target[row], nf[coadd.star_index[row]][pix], rtol=1e-6)
    assert len(data.TwinData(store, "all", mode="coadd")) == len(data.TwinData(store, "all", mode="loo"))
    direct = data.TwinData(store, "all", mode="direct")
    assert len(direct) == store.n_stars and (direct.visit_index == -1).all()
    np.testing.assert_array_equal(direct.star_index, np.arange(store.n_stars))
    np.testing.assert_allclose(direct.x[:, 0], np.clip(nf[:, pix] - 1, -1.5, 1.0), atol=1e-6)
    np.testing.assert_array_equal(direct.snr, np.full(store.n_stars, 50.0, np.float32))


def test_torch_dataset(store):
    import torch

    torch.set_num_threads(1)
    twins = data.TwinData(store, "all", mode="loo")
    stats = data.compute_label_stats(twins.labels)
    ds = data.TwinTorchDataset(twins, stats)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == len(twins)
    item = ds[0]
    assert item["x"].shape == (2, 360) and item["target"].shape == (360,) and item["snr"].shape == ()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    mask = batch["label_mask"]
    assert mask.dtype == torch.bool and not mask[:, 3].all() and mask[:, 0].all()
    assert (batch["labels"][~mask] == 0).all() and torch.isfinite(batch["labels"]).all()
    z = batch["labels"][:, 0].numpy()
    assert abs(z.mean()) < 1e-5 and z.std() == pytest.approx(1.0, rel=1e-4)
    # whole-batch loading (what training uses) gives exactly the collated items, in sampler order
    order = [np.array([3, 0, 5]), np.arange(len(ds) - 2, len(ds))]
    loader = torch.utils.data.DataLoader(data.TwinBatches(ds), batch_size=None, sampler=order)
    for idx, got in zip(order, loader):
        want = torch.utils.data.default_collate([ds[int(i)] for i in idx])
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("mode", ["loo", "direct"])
def test_twins_with_torch_normalisation_match_numpy(store, mode):
    """device= runs the continuum on torch (on a GPU in training; here its CPU): same twins as numpy."""
    ref = data.TwinData(store, "all", mode=mode)
    dev = data.TwinData(store, "all", mode=mode, device="cpu")
    assert len(ref) == len(dev) > 0
    for name in ("x", "target", "target_w", "labels", "star_index", "visit_index"):
        a, b = getattr(ref, name), getattr(dev, name)
        assert a.shape == b.shape
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=0, atol=2e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(b, a, err_msg=name)
