"""Training loop: outputs, resume equivalence, the non-finite guard and the sigma calibration."""

import json
import types

import numpy as np
import pytest
import torch

from pairspec import train as T
from pairspec.calibration import apply_calibration, fit_calibration
from pairspec.checkpoint import load_checkpoint, read_meta
from pairspec.config import (
    DataSection,
    ModelSection,
    RunConfig,
    RunSection,
    TrainSection,
)
from pairspec.grid import LogLinearGrid
from pairspec.metrics import robust_std
from pairspec.models import create_model
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

torch.set_num_threads(1)
L = 256


def fake_twins(n, seed, nan_target=False):
    """TwinData-like twins: 4 labels, the first two encoded as line depths in a 256-px spectrum."""
    rng = np.random.default_rng(seed)
    labels = np.column_stack([rng.uniform(4000, 6000, n), rng.uniform(1, 4, n),
                              rng.uniform(-1, 0.3, n), rng.uniform(-0.1, 0.4, n)]).astype(np.float32)
    labels[::7, 3] = np.nan  # some missing [Mg/Fe]
    pix = np.arange(L)
    depth = np.column_stack([(labels[:, 0] - 4000) / 4000, labels[:, 1] / 8])
    target = 1 - depth @ np.stack([np.exp(-0.5 * ((pix - c) / 5.0) ** 2) for c in (60, 190)])
    snr = rng.uniform(10, 80, n).astype(np.float32)
    noisy = target + rng.normal(size=target.shape) / snr[:, None]
    x = np.stack([noisy - 1, np.ones_like(noisy)], axis=1).astype(np.float32)
    if nan_target:
        target[:] = np.nan
    return FakeTwins(x=x, target=target.astype(np.float32), target_w=np.ones((n, L), np.float32),
                     labels=labels, snr=snr, star_index=np.arange(n), visit_index=np.arange(n))


class FakeTwins(types.SimpleNamespace):
    """The attributes of pairspec.data.TwinData, without a store."""

    def __len__(self):
        return len(self.x)


GRID = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=L)


def config(tmp_path, name="run", model=None, **train):
    tr = dict(epochs=2, batch_size=8, lr=2e-3, warmup_frac=0.1, device="cpu")
    tr.update(train)
    return RunConfig(run=RunSection(name=name, out_dir=str(tmp_path / name), seed=3),
                     data=DataSection(store="fake", labels=("teff", "logg", "fe_h")),
                     model=model or ModelSection(preset="tsn_tiny", depth=1),
                     train=TrainSection(**tr))


@pytest.fixture
def fake_store(monkeypatch):
    def load(cfg):
        return fake_twins(48, 0), fake_twins(40, 1), APOGEE_CORE_SCHEMA, GRID
    monkeypatch.setattr(T, "_load_data", load)
    return monkeypatch


def test_train_writes_run_folder(tmp_path, fake_store):
    best = T.train(config(tmp_path), progress=False)
    run = tmp_path / "run"
    assert best == run / "best.pt" and (run / "last.pt").exists() and (run / "config.yaml").exists()
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[-1]["step"] == 12  # 48 twins / 8 x 2 epochs
    assert set(lines[-1]["val_sigma"]) == {"teff", "logg", "fe_h"}
    assert np.isfinite(lines[-1]["val_loss"]) and lines[-1]["lr"] > 0
    meta = read_meta(best)
    assert meta["label_names"] == ["teff", "logg", "fe_h"] and meta["n_model_pix"] == L
    assert meta["schema"]["labels"][2]["name"] == "fe_h" and meta["grid"]["npix"] == L
    assert len(meta["calibration"]["scale"]) == 3 and len(meta["calibration"]["scale_by_snr"]) == 4
    assert meta["label_lo"][0] >= 4000 and meta["label_hi"][0] <= 6000
    model, _ = load_checkpoint(best)
    assert model.n_labels == 3 and len(model.blocks) == 1


def test_recipe_model_overrides_reach_the_checkpoint(tmp_path, fake_store):
    shape = ModelSection(preset="tsn_tiny", depth=1, embed_dim=48, num_heads=4, patch_size=16)
    best = T.train(config(tmp_path, model=shape, epochs=1), progress=False)
    model, meta = load_checkpoint(best)
    assert (model.embed_dim, model.patch_size, model.blocks[0].attn.num_heads) == (48, 16, 4)
    assert meta["model_kwargs"]["num_heads"] == 4


def test_resume_gives_the_uninterrupted_weights(tmp_path, fake_store):
    T.train(config(tmp_path, "straight"), progress=False)
    # stop mid-epoch 2 (step 9 of 12), then resume the same run to the end
    T.train(config(tmp_path, "split", max_steps=9), progress=False)
    assert read_meta(tmp_path / "split" / "last.pt")["step"] == 9
    T.train(config(tmp_path, "split"), progress=False)
    a, _ = load_checkpoint(tmp_path / "straight" / "last.pt")
    b, meta = load_checkpoint(tmp_path / "split" / "last.pt")
    assert meta["step"] == 12
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-5), name
    # and the run did change the weights (the comparison is not trivially true)
    fresh = create_model("tsn_tiny", L, 3, depth=1)
    assert not torch.allclose(fresh.pos_embed, a.pos_embed, atol=1e-3)


def test_resume_refuses_a_run_folder_of_another_recipe(tmp_path, fake_store):
    from pairspec.config import ConfigError

    T.train(config(tmp_path, "r", epochs=1), progress=False)
    saved = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"holds a run of another recipe \(train.lr: 0.002 -> 0.004\)"):
        T.train(config(tmp_path, "r", epochs=1, lr=4e-3), progress=False)
    assert (tmp_path / "r" / "config.yaml").read_text() == saved  # the folder still describes its run
    # where things are and how the work runs may change on resume; resume=false starts over
    T.train(config(tmp_path, "r", epochs=1, device="cpu", eval_every=2), progress=False)
    T.train(config(tmp_path, "r", epochs=1, lr=4e-3, resume=False), progress=False)
    assert "lr: 0.004" in (tmp_path / "r" / "config.yaml").read_text()


def test_starting_over_never_returns_the_earlier_runs_weights(tmp_path, fake_store, capsys):
    """resume=false used to keep the old best.pt: a new run stopped before its first validation returned
    the old run's weights as its result; and one killed early left the old last.pt, so the next plain rerun
    resumed the old weights under the new config.yaml. Starting over now removes the old checkpoints."""
    T.train(config(tmp_path, "r", epochs=1), progress=False)
    old, _ = load_checkpoint(tmp_path / "r" / "best.pt")
    stale = tmp_path / "r" / ".last.pt.12345.tmp"  # what a kill mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    best = T.train(config(tmp_path, "r", epochs=1, lr=4e-3, resume=False, max_steps=2), progress=True)
    out = capsys.readouterr().out
    assert "train.resume=false: the earlier run's best.pt and last.pt removed; training starts over" in out
    assert "stopped at step 2 of 6 (train.max_steps=2; 0 of 1 epochs done)" in out
    new, meta = load_checkpoint(best)
    assert meta["config"]["train"]["lr"] == 4e-3 and meta["step"] == 2 and not stale.exists()
    assert not torch.allclose(new.pos_embed, old.pos_embed)


def test_a_checkpoint_without_calibration_warns_when_loaded(tmp_path, fake_store):
    from pairspec.checkpoint import save_checkpoint
    from pairspec.inference import LabelPredictor

    best = T.train(config(tmp_path, "c", epochs=1), progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LabelPredictor.from_checkpoint(best)  # calibrated: quiet
    model, meta = load_checkpoint(best)
    save_checkpoint(tmp_path / "raw.pt", model.state_dict(), {**meta, "calibration": None})
    with pytest.warns(UserWarning, match="no sigma calibration in this checkpoint"):
        LabelPredictor.from_checkpoint(tmp_path / "raw.pt")


def test_time_limit_stops_at_an_epoch_end_and_finishes(tmp_path, fake_store, capsys):
    best = T.train(config(tmp_path, "boxed", epochs=5, time_limit_min=0.0), progress=True)
    lines = [json.loads(s) for s in (tmp_path / "boxed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1]  # a zero limit: stop after the first epoch
    meta = read_meta(best)
    assert meta["epoch"] == 1 and "calibration" in meta  # finished as a normal run
    assert "(train.time_limit_min=0.0; 1 of 5 epochs done)" in capsys.readouterr().out
    T.train(config(tmp_path, "one", epochs=1, time_limit_min=0.0), progress=True)  # the limit met at the end
    assert "stopped at" not in capsys.readouterr().out


def test_nonfinite_step_is_skipped_and_weights_unchanged():
    tw = fake_twins(8, 0, nan_target=True)
    model = create_model("tsn_tiny", L, 4, depth=1)
    opt = T.make_optimizer(model, 1e-3, 0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    batch = {"x": torch.from_numpy(tw.x), "target": torch.from_numpy(tw.target),
             "target_w": torch.from_numpy(tw.target_w), "labels": torch.zeros(8, 4),
             "label_mask": torch.ones(8, 4, dtype=torch.bool)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tc = TrainSection(device="cpu")
    assert T.train_step(model, batch, opt, sched, tc, T.contextlib.nullcontext) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sched.last_epoch == 0 and not opt.state  # no step taken, no moments accumulated
    batch["target"] = torch.ones(8, L)
    assert T.train_step(model, batch, opt, sched, tc, T.contextlib.nullcontext) is not None
    assert not torch.equal(before["pos_embed"], model.pos_embed)


def test_training_gives_up_after_max_nonfinite(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_load_data", lambda cfg: (fake_twins(48, 0, True), fake_twins(16, 1),
                                                      APOGEE_CORE_SCHEMA, GRID))
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite"):
        T.train(config(tmp_path, max_nonfinite=3), progress=False)


def test_lr_schedule_and_batches():
    f = [T.lr_factor(s, 100, 0.1, 0.05) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[-1] == pytest.approx(0.05, abs=1e-3) and all(a >= b for a, b in zip(f[10:], f[11:]))
    one = T.epoch_batches(20, 8, seed=1, epoch=0)
    two = [T.epoch_batches(20, 8, seed=1, epoch=0, rank=r, world=2) for r in range(2)]
    assert len(one) == 2 and all(len(b) == 8 for b in one)  # drop_last
    for b in range(2):
        assert two[0][b] + two[1][b] == one[b]  # ranks split each global batch
    assert one != T.epoch_batches(20, 8, seed=1, epoch=1)


def test_calibration_recovers_sigma_scale():
    rng = np.random.default_rng(0)
    n, K = 20000, 2
    labels = rng.normal(size=(n, K))
    sigma_true = rng.uniform(0.05, 0.2, size=(n, K))
    pred = labels + sigma_true * rng.normal(size=(n, K))
    snr = rng.uniform(5, 100, n)
    cal = fit_calibration(pred, sigma_true / 3, labels, snr=snr, label_names=["a", "b"])
    assert np.allclose(cal["scale"], 3.0, rtol=0.03)
    # fresh data: calibrated z-scores have unit spread
    labels2 = rng.normal(size=(n, K))
    pred2 = labels2 + sigma_true * rng.normal(size=(n, K))
    snr2 = rng.uniform(5, 100, n)
    z = (pred2 - labels2) / apply_calibration(sigma_true / 3, snr2, cal)
    assert np.allclose(z.std(0), 1.0, atol=0.03) and np.allclose(robust_std(z), 1.0, atol=0.03)
    # S/N-dependent miscalibration: factor 4 below S/N 20, 2 above; the binned scale finds both
    factor = np.where(snr < 20, 4.0, 2.0)[:, None]
    binned = fit_calibration(pred, sigma_true / factor, labels, snr=snr)
    by_bin = np.asarray(binned["scale_by_snr"])
    assert np.allclose(by_bin[0], 4.0, rtol=0.05) and np.allclose(by_bin[1:], 2.0, rtol=0.05)
    assert binned["count_by_snr"][0][0] > 3000


def test_calibration_needs_enough_twins():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(10, 1))
    cal = fit_calibration(y + 0.5 * rng.normal(size=(10, 1)), np.full((10, 1), 0.01), y, min_count=30)
    assert cal["scale"] == [1.0] and cal["count"] == [10]


def build_store(path, n_stars=40, n_visits=3, npix=300, seed=0):
    """A real pair store (pairspec.store) of synthetic stars: two lines whose depths follow teff, logg."""
    from learnable import learnable_star

    from pairspec.store import create_store

    grid = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=npix, blocks=((10, npix - 10),))
    store = create_store(str(path), "apogee", "dr17", grid, APOGEE_CORE_SCHEMA)
    rng, records = np.random.default_rng(seed), []
    for i in range(n_stars):
        lab = np.array([rng.uniform(4000, 6000), rng.uniform(1, 4), rng.uniform(-1, 0.3), rng.uniform(-0.1, 0.4)],
                       np.float32)
        records.append(learnable_star(i, rng, npix, n_visits, lab))
    store.append(records)
    return store


def test_end_to_end_on_a_real_store(tmp_path):
    """store -> TwinData -> train -> best.pt -> LabelPredictor, with no fakes in between."""
    from pairspec.inference import LabelPredictor

    store = build_store(tmp_path / "s.zarr")
    cfg = RunConfig(run=RunSection(name="e2e", out_dir=str(tmp_path / "run"), seed=0),
                    data=DataSection(store=str(tmp_path / "s.zarr"), labels=("teff", "logg")),
                    model=ModelSection(preset="tsn_tiny", depth=1),
                    train=TrainSection(epochs=2, batch_size=8, device="cpu"))
    best = T.train(cfg, progress=False)
    pred = LabelPredictor.from_checkpoint(best)
    assert pred.label_names == ["teff", "logg"] and pred.grid.npix == 300
    flux, ivar, _ = store.visit_spectra(slice(0, 6))
    out = pred.predict(flux, ivar, denoise=True)
    assert out["labels"].shape == (6, 2) and np.all(np.isfinite(out["labels"])) and np.all(out["sigma"] > 0)
    assert np.all((out["labels"][:, 0] > 3000) & (out["labels"][:, 0] < 7000))  # de-standardised to K
    assert np.all(np.isfinite(out["denoised"][:, 10:290])) and np.isnan(out["denoised"][0, 0])
    assert np.allclose(out["snr"], store.visit_table()["snr"][:6], rtol=0.05)


@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streamed"])
def test_all_labels_means_those_the_store_has_values_for(tmp_path, stream):
    """data.labels null on a store whose schema has a label nobody measured (an abundance column the
    catalogue lacked): that label is left out with a warning, the others train; asked for, it is an error
    (streamed training too: it used to start with NaN label statistics)."""
    from learnable import learnable_star

    from pairspec.schema import Label, LabelSchema
    from pairspec.store import create_store

    schema = LabelSchema("apogee", APOGEE_CORE_SCHEMA.labels[:2] + (Label("c_fe", "dex", -3, 3, "C_FE", "C_FE_ERR"),))
    grid = LogLinearGrid(crval1=4.179, cdelt1=6e-6, npix=300, blocks=((10, 290),))
    store = create_store(str(tmp_path / "s.zarr"), "apogee", "dr17", grid, schema)
    rng = np.random.default_rng(0)
    store.append([learnable_star(i, rng, 300, 3, np.array([rng.uniform(4000, 6000), rng.uniform(1, 4), np.nan],
                                                             np.float32)) for i in range(30)])
    run = RunSection(name="all", out_dir=str(tmp_path / "run"), seed=0)
    cfg = RunConfig(run=run, data=DataSection(store=str(tmp_path / "s.zarr"), labels=None, stream=stream),
                    model=ModelSection(preset="tsn_tiny", depth=1), train=TrainSection(epochs=1, batch_size=8, device="cpu"))
    with pytest.warns(UserWarning, match="no train twin has a value for c_fe"):
        best = T.train(cfg, progress=False)
    assert read_meta(best)["label_names"] == ["teff", "logg"]
    asked = RunConfig(run=RunSection(name="c", out_dir=str(tmp_path / "run2"), seed=0),
                      data=DataSection(store=str(tmp_path / "s.zarr"), labels=("teff", "c_fe"), stream=stream),
                      model=ModelSection(preset="tsn_tiny", depth=1), train=TrainSection(epochs=1, batch_size=8, device="cpu"))
    with pytest.raises(ValueError, match="no train twin has a value for \\['c_fe'\\]"):
        T.train(asked, progress=False)
