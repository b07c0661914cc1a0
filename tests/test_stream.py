"""Streamed training (data.stream): the twin stream's coverage, memory bound and order, label
statistics from the store, and training through it (run folder, learning, resume)."""

import json

import numpy as np
import pytest
import torch

from pairspec import data, stream
from pairspec import train as T
from pairspec.checkpoint import load_checkpoint, read_meta
from pairspec.config import (
    DataSection,
    ModelSection,
    RunConfig,
    RunSection,
    TrainSection,
)
from pairspec.grid import LogLinearGrid
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

torch.set_num_threads(1)
NPIX = 300
GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=NPIX, blocks=((10, NPIX - 10),))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """40 stars with 1-4 visits (1-visit stars are not loo twins); two lines follow teff and logg."""
    from learnable import learnable_star

    from pairspec.store import create_store

    path = tmp_path_factory.mktemp("stream") / "s.zarr"
    s = create_store(str(path), "apogee", "dr17", GRID, APOGEE_CORE_SCHEMA, chunk=16)
    rng, records = np.random.default_rng(0), []
    for i in range(40):
        lab = np.array([rng.uniform(4000, 6000), rng.uniform(1, 4), rng.uniform(-1, 0.3),
                        np.nan if i % 5 == 0 else rng.uniform(-0.1, 0.4)], np.float32)
        records.append(learnable_star(i, rng, NPIX, 1 + i % 4, lab))
    s.append(records)
    return s


@pytest.fixture(scope="module")
def twins(store):
    return data.TwinData(store, "train", mode="loo")


def test_stream_sees_every_twin_once_with_bounded_memory(store, twins):
    ts = stream.TwinStream(store, "train", mode="loo", chunk_stars=3, shuffle_buffer=5)
    assert ts.n_twins == len(twins) > 20  # the estimate from the star table is exact here
    rows = {int(v): i for i, v in enumerate(twins.visit_index)}
    seen = []
    for b in ts.batches(seed=0, epoch=0, batch_size=1):
        assert b["x"].shape == (1, 2, data.model_pixels(GRID).size)
        i = rows[int(b["visit_index"][0])]  # each streamed row is the twin TwinData builds
        for k in ("x", "target", "target_w", "snr", "star_index"):
            np.testing.assert_array_equal(b[k][0], getattr(twins, k)[i])
        np.testing.assert_array_equal(b["labels"][0], twins.labels[i])
        seen.append(int(b["visit_index"][0]))
    assert sorted(seen) == sorted(rows)  # every twin exactly once
    biggest = int(ts.chunk_twins.max())
    assert 5 < ts.max_held <= 5 + biggest < len(twins)  # shuffle_buffer + one chunk, never the split

    # batch 4: drop_last, still no twin twice
    four = [v for b in ts.batches(0, 0, 4) for v in b["visit_index"].tolist()]
    assert len(four) == len(twins) // 4 * 4 and len(set(four)) == len(four)


def test_stream_order_depends_on_seed_and_epoch(store):
    ts = stream.TwinStream(store, "train", chunk_stars=2, shuffle_buffer=4)
    order = lambda seed, epoch: [int(b["visit_index"][0]) for b in ts.batches(seed, epoch, 1)]
    e0 = order(0, 0)
    assert e0 == order(0, 0)  # deterministic: what resume relies on
    assert e0 != order(0, 1) and sorted(e0) == sorted(order(0, 1))
    assert e0 != order(1, 0)
    assert ts.assign(0, 0) != ts.assign(0, 1)


def test_read_ahead_threads_give_the_same_batches(store):
    """Chunks read on threads come out in the same order: batches identical to a one-thread stream."""
    one = stream.TwinStream(store, "train", chunk_stars=2, shuffle_buffer=4, read_threads=1)
    many = stream.TwinStream(store, "train", chunk_stars=2, shuffle_buffer=4, read_threads=3)
    for a, b in zip(one.batches(5, 1, 3), many.batches(5, 1, 3), strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_stream_ranks_take_disjoint_chunks(store):
    ts = stream.TwinStream(store, "train", chunk_stars=2, shuffle_buffer=4)
    parts = ts.assign(seed=0, epoch=3, world=2)
    assert sorted(parts[0] + parts[1]) == list(range(len(ts.chunks))) and not set(parts[0]) & set(parts[1])
    load = [int(ts.chunk_twins[p].sum()) for p in parts]
    assert abs(load[0] - load[1]) <= ts.chunk_twins.max()
    n = ts.steps_per_epoch(4)
    per_rank = [list(ts.batches(0, 3, 4, rank=r, world=2)) for r in range(2)]
    assert [len(p) for p in per_rank] == [n, n] and all(len(b["x"]) == 2 for p in per_rank for b in p)
    for r, p in enumerate(per_rank):  # a rank's twins come from its own chunks only
        mine = set(np.concatenate([ts.chunks[c] for c in parts[r]]).tolist())
        assert {int(s) for b in p for s in b["star_index"]} <= mine

    # a rank that runs short tops up from a second pass over its own chunks, to the common step count
    extra = list(ts.batches(0, 3, 4, n_batches=n + 5, rank=1, world=2))
    assert len(extra) == n + 5 and {int(s) for b in extra for s in b["star_index"]} <= mine


def test_label_stats_from_store_match_materialised_twins(store, twins):
    got = stream.store_label_stats(store, "train", "loo")
    want = data.compute_label_stats(twins.labels)
    for k in ("mean", "std", "lo", "hi"):
        np.testing.assert_allclose(getattr(got, k), getattr(want, k), rtol=1e-6)
    assert np.isfinite(got.mean).all()  # [Mg/Fe] has missing values, still stats
    sub = stream.store_label_stats(store, "train", "direct", cols=[1, 0])
    ref = data.compute_label_stats(data.TwinData(store, "train", mode="direct").labels[:, [1, 0]])
    np.testing.assert_allclose(sub.std, ref.std, rtol=1e-6)
    np.testing.assert_allclose(sub.mean, ref.mean, rtol=1e-6)


def test_capped_val_and_prefetch(store):
    few = stream.capped_stars(store, "train", "loo", max_twins=10)
    counts = store.star_table()["n_visits"][few]
    assert counts.sum() <= 10 and np.all(np.diff(few) > 0) and (counts >= 2).all()

    def broken():
        yield 1
        raise KeyError("boom")

    it = stream.prefetch(broken())
    assert next(it) == 1
    with pytest.raises(KeyError, match="boom"):
        next(it)


def config(tmp_path, store, name="run", **train):
    tr = dict(epochs=2, batch_size=8, lr=2e-3, warmup_frac=0.1, device="cpu")
    tr.update(train)
    return RunConfig(run=RunSection(name=name, out_dir=str(tmp_path / name), seed=3),
                     data=DataSection(store=store, labels=("teff", "logg"), stream=True, shuffle_buffer=12,
                                      stream_chunk_stars=4, stream_val_twins=16),
                     model=ModelSection(preset="tsn_tiny", depth=1),
                     train=TrainSection(**tr))


def test_streamed_training_on_a_store(tmp_path, store, twins):
    best = T.train(config(tmp_path, store.path), progress=False)
    run = tmp_path / "run"
    assert best == run / "best.pt" and (run / "last.pt").exists()
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[-1]["step"] == 2 * (len(twins) // 8)
    assert np.isfinite(lines[-1]["val_loss"]) and set(lines[-1]["val_sigma"]) == {"teff", "logg"}
    meta = read_meta(best)
    want = data.compute_label_stats(twins.labels[:, :2])
    np.testing.assert_allclose(meta["label_stats"]["mean"], want.mean, rtol=1e-6)
    assert meta["config"]["data"]["stream"] is True and meta["calibration"] is not None
    model, _ = load_checkpoint(best)
    assert model.n_labels == 2


class ArrayStream(stream.TwinStream):
    """TwinStream over in-memory arrays (one 'star' per twin): the real buffer and batching, no store."""

    def __init__(self, arrays, chunk_stars=4, shuffle_buffer=12):
        n = len(arrays["x"])
        self.arrays, self.label_cols, self.shuffle_buffer, self.max_held = arrays, None, shuffle_buffer, 0
        self.chunks = [np.arange(i, min(i + chunk_stars, n)) for i in range(0, n, chunk_stars)]
        self.chunk_twins = np.array([len(c) for c in self.chunks])
        self.n_twins, self.n_pix, self.read_threads = n, arrays["x"].shape[-1], 1

    def label_stats(self):
        cols = slice(None) if self.label_cols is None else self.label_cols
        return data.compute_label_stats(self.arrays["labels"][:, cols])

    def read(self, c):
        out = {k: v[self.chunks[c]] for k, v in self.arrays.items()}
        if self.label_cols is not None:
            out["labels"] = out["labels"][:, self.label_cols]
        return out


def learnable(n, seed, L=256):
    """Line depths encode teff and logg; the input is the noisy spectrum."""
    rng = np.random.default_rng(seed)
    labels = np.column_stack([rng.uniform(4000, 6000, n), rng.uniform(1, 4, n),
                              rng.uniform(-1, 0.3, n), rng.uniform(-0.1, 0.4, n)]).astype(np.float32)
    pix = np.arange(L)
    depth = np.column_stack([(labels[:, 0] - 4000) / 4000, labels[:, 1] / 8])
    target = 1 - depth @ np.stack([np.exp(-0.5 * ((pix - c) / 5.0) ** 2) for c in (60, 190)])
    snr = rng.uniform(20, 80, n).astype(np.float32)
    x = np.stack([target + rng.normal(size=target.shape) / snr[:, None] - 1, np.ones_like(target)], 1)
    return {"x": x.astype(np.float32), "target": target.astype(np.float32), "target_w": np.ones((n, L), np.float32),
            "labels": labels, "snr": snr, "star_index": np.arange(n), "visit_index": np.arange(n)}


class Val:
    def __init__(self, a):
        self.__dict__.update(a)

    def __len__(self):
        return len(self.x)


@pytest.fixture
def fake_stream(monkeypatch):
    def load(cfg):
        return ArrayStream(learnable(48, 0)), Val(learnable(16, 1)), APOGEE_CORE_SCHEMA, GRID
    monkeypatch.setattr(T, "_load_stream", load)


def test_streamed_training_learns_and_resumes_exactly(tmp_path, fake_stream):
    T.train(config(tmp_path, "fake", "long", epochs=5), progress=False)
    lines = [json.loads(s) for s in (tmp_path / "long" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 5 * 6
    assert lines[-1]["train_loss"] < lines[0]["train_loss"] - 0.1
    assert lines[-1]["val_loss"] < lines[0]["val_loss"]

    T.train(config(tmp_path, "fake", "straight"), progress=False)
    T.train(config(tmp_path, "fake", "split", max_steps=9), progress=False)  # stops inside epoch 2
    assert read_meta(tmp_path / "split" / "last.pt")["step"] == 9
    T.train(config(tmp_path, "fake", "split"), progress=False)
    a, _ = load_checkpoint(tmp_path / "straight" / "last.pt")
    b, meta = load_checkpoint(tmp_path / "split" / "last.pt")
    assert meta["step"] == 12
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-5), name
