"""DDP on CPU (gloo, 2 processes) reaches the same weights as one process with the same global batch."""

import os
import socket
import time
import types

import numpy as np
import torch
import torch.multiprocessing as mp

from pairspec import train as T
from pairspec.checkpoint import load_checkpoint
from pairspec.config import (
    DataSection,
    ModelSection,
    RunConfig,
    RunSection,
    TrainSection,
)
from pairspec.grid import LogLinearGrid
from pairspec.models import create_model
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

L = 128


class FakeTwins(types.SimpleNamespace):
    def __len__(self):
        return len(self.x)


def fake_twins(n, seed):
    """Twins with every label present (the label loss is then exactly additive over ranks)."""
    rng = np.random.default_rng(seed)
    labels = np.column_stack([rng.uniform(4000, 6000, n), rng.uniform(1, 4, n),
                              rng.uniform(-1, 0.3, n), rng.uniform(-0.1, 0.4, n)]).astype(np.float32)
    target = 1 - 0.3 * np.exp(-0.5 * ((np.arange(L) - 40) / 4.0) ** 2)[None] * (labels[:, :1] - 3500) / 3000
    x = np.stack([target - 1 + 0.02 * rng.normal(size=target.shape), np.ones_like(target)], 1)
    w = rng.uniform(0.5, 2.0, size=target.shape)  # unequal pixel weights, as from the target ivar
    return FakeTwins(x=x.astype(np.float32), target=target.astype(np.float32), target_w=w.astype(np.float32),
                     labels=labels, snr=rng.uniform(10, 80, n).astype(np.float32),
                     star_index=np.arange(n), visit_index=np.arange(n))


def fake_load(cfg):
    return fake_twins(32, 0), fake_twins(16, 1), APOGEE_CORE_SCHEMA, LogLinearGrid(4.179, 6e-6, L)


def make_config(out_dir):
    return RunConfig(run=RunSection(name="ddp", out_dir=str(out_dir), seed=5),
                     data=DataSection(store="fake"),
                     model=ModelSection(preset="tsn_tiny", depth=1, patch_size=16, drop_path=0.0),
                     train=TrainSection(epochs=2, batch_size=8, lr=3e-3, warmup_frac=0.2, device="cpu",
                                        resume=False))


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    T._load_data = fake_load
    T.train(make_config(out_dir), progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_matches_single_process(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(T, "_load_data", fake_load)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    T.train(make_config(tmp_path / "single"), progress=False)

    ctx = mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError("DDP workers did not finish in 240 s")

    single, meta_single = load_checkpoint(tmp_path / "single" / "last.pt")
    ddp, meta_ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert meta_single["step"] == meta_ddp["step"] == 8  # 32 twins / global batch 8 x 2 epochs
    a_state, b_state = single.state_dict(), ddp.state_dict()
    # The key bias has an exactly zero gradient (softmax ignores a per-query shift), so Adam turns
    # float rounding there into steps of ~lr: compare it loosely, everything else tightly.
    D = single.embed_dim
    key_bias = (a_state.pop("blocks.0.attn.qkv.bias")[D:2 * D], b_state.pop("blocks.0.attn.qkv.bias")[D:2 * D])
    for name, a in a_state.items():
        assert torch.allclose(a, b_state[name], atol=1e-5), (name, float((a - b_state[name]).abs().max()))
    assert torch.allclose(*key_bias, atol=1e-3)
    q_bias = single.state_dict()["blocks.0.attn.qkv.bias"], ddp.state_dict()["blocks.0.attn.qkv.bias"]
    assert torch.allclose(q_bias[0][:D], q_bias[1][:D], atol=1e-5)  # query bias does learn
    assert torch.allclose(q_bias[0][2 * D:], q_bias[1][2 * D:], atol=1e-5)  # value bias
    fresh = create_model("tsn_tiny", L, 4, depth=1, patch_size=16)
    assert not torch.allclose(fresh.recon_head.weight, single.recon_head.weight, atol=1e-4)
    assert (tmp_path / "ddp" / "best.pt").exists() and (tmp_path / "ddp" / "metrics.jsonl").exists()
