"""Train TwinSpecNet from a RunConfig: CPU, one GPU, or many GPUs under torchrun (DDP).

Run folder (config.run_dir): config.yaml (resolved recipe), metrics.jsonl (one JSON per epoch),
last.pt (every epoch, with optimizer/scheduler/rng state for resume) and best.pt (lowest val loss,
with the sigma calibration fitted on the val split after training).

Batches: each epoch draws one permutation of the train twins from (seed, epoch); global batch b is
perm[b*G:(b+1)*G] and DDP rank r takes the r-th slice of it, so a DDP run sees exactly the batches
of a single-process run with the same global batch_size G. Resume restarts inside an epoch if the
run was stopped there (max_steps).

With data.stream the train twins are not held in memory: pairspec.stream.TwinStream reads star chunks
in an order permuted by (seed, epoch) through a shuffle buffer (DDP: each rank its own chunks), label
statistics come from the store's star labels, and the validation set is a capped in-memory subset.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from pairspec.calibration import fit_calibration, robust_std
from pairspec.checkpoint import read_train_state, save_checkpoint
from pairspec.config import RunConfig, save_resolved, to_dict
from pairspec.models import TwinSpecNet, count_parameters, preset_kwargs


def _prep_device(config: RunConfig):
    """Where the twins' continuum normalisation runs: this rank's GPU when training on CUDA (the torch
    port, data.normalizer), else None (numpy)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _device(config.train.device, int(os.environ.get("LOCAL_RANK", "0")), world)
    return device if device.type == "cuda" else None


def _load_data(config: RunConfig):
    """-> (train TwinData, val TwinData, store schema, grid). Tests replace this hook."""
    from pairspec import data
    from pairspec.store import open_store

    store = open_store(config.data.store)
    kw = dict(mode=config.data.mode, min_visits=config.data.min_visits, max_stars=config.data.max_stars,
              device=_prep_device(config))
    return (data.TwinData(store, "train", **kw), data.TwinData(store, config.data.val_split, **kw),
            store.schema, store.grid)


def _load_stream(config: RunConfig):
    """-> (train TwinStream, val TwinData capped at data.stream_val_twins, store schema, grid). Tests
    replace this hook."""
    from pairspec import data, stream
    from pairspec.store import open_store

    d = config.data
    store = open_store(d.store)
    train_stream = stream.TwinStream(store, "train", mode=d.mode, min_visits=d.min_visits, max_stars=d.max_stars,
                                     chunk_stars=d.stream_chunk_stars, shuffle_buffer=d.shuffle_buffer,
                                     device=_prep_device(config))
    val_stars = stream.capped_stars(store, d.val_split, d.mode, d.min_visits, d.max_stars, d.stream_val_twins)
    val = data.TwinData(store, d.val_split, mode=d.mode, min_visits=d.min_visits, stars=val_stars,
                        device=_prep_device(config))
    return train_stream, val, store.schema, store.grid


def _with_labels(twins, cols):
    """The same twins with only the label columns `cols` (the recipe's label subset)."""
    if cols is None:
        return twins
    if dataclasses.is_dataclass(twins):
        return dataclasses.replace(twins, labels=twins.labels[:, cols])
    twins = copy.copy(twins)
    twins.labels = twins.labels[:, cols]
    return twins


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1):
    """This rank's index lists for one epoch (drop_last), from a permutation seeded by (seed, epoch)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    per_rank = batch_size // world
    return [perm[b * batch_size + rank * per_rank: b * batch_size + (rank + 1) * per_rank]
            for b in range(n // batch_size)]


def lr_factor(step: int, total: int, warmup_frac: float, min_lr_frac: float) -> float:
    """Linear warmup, then cosine decay to min_lr_frac of the peak."""
    warmup = max(1, int(round(warmup_frac * total)))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr_frac + (1.0 - min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model, lr: float, weight_decay: float):
    """AdamW; no decay on norms, biases, the positional embedding and the label token."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or name.endswith(("pos_embed", "label_token"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def train_step(model, batch, optimizer, scheduler, tcfg, amp) -> dict | None:
    """One optimizer step; None (weights and optimizer untouched) when the loss or gradient is non-finite."""
    with amp():
        out = model(batch["x"])
    parts = _loss(out, batch, tcfg)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()  # always: under DDP every rank must join the gradient all-reduce
    clip = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if not (torch.isfinite(parts["loss"]) and torch.isfinite(norm)):  # NaN anywhere poisons every rank's norm
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    scheduler.step()
    return {k: float(v.detach()) for k, v in parts.items()}


def _loss(out, batch, tcfg):
    from pairspec.models.tsn import TwinSpecNet

    return TwinSpecNet.forward_loss(out, batch, tcfg.recon_weight, tcfg.label_weight)


@torch.inference_mode()
def predict_twins(model, loader, device, amp, tcfg) -> dict:
    """Standardised mean/log_var of every twin in loader order, and the mean loss parts."""
    model.eval()
    means, log_vars, sums, n = [], [], {}, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with amp():
            out = model(batch["x"])
        b = batch["x"].shape[0]
        for k, v in _loss(out, batch, tcfg).items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        means.append(out["mean"].float().cpu())
        log_vars.append(out["log_var"].float().cpu())
        n += b
    model.train()
    if n == 0:
        return {"n": 0}
    return {"n": n, "mean": torch.cat(means).numpy(), "log_var": torch.cat(log_vars).numpy(),
            **{k: v / n for k, v in sums.items()}}


def _physical(pred: dict, stats):
    std, mu = np.asarray(stats.std, np.float64), np.asarray(stats.mean, np.float64)
    return pred["mean"] * std + mu, np.exp(0.5 * pred["log_var"]) * std


def _setup_distributed(config: RunConfig, forced):
    """(rank, world, local_rank, we_initialised) from torchrun's environment."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if forced is False or world <= 1:
        return 0, 1, 0, False
    mine = not dist.is_initialized()
    if mine:
        cuda = config.train.device != "cpu" and torch.cuda.is_available()
        if cuda:  # bind this rank to its GPU before NCCL starts
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), mine


def _device(setting: str, local_rank: int, world: int) -> torch.device:
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and world > 1:
        setting = f"cuda:{local_rank}"
    return torch.device(setting)


def train(config: RunConfig, progress: bool = True, _distributed=None) -> Path:
    """Train (or resume) the run described by `config`; returns the best checkpoint's path.

    Under torchrun (WORLD_SIZE > 1) this is one DDP rank; only rank 0 writes files. `_distributed=False`
    forces a single-process run whatever the environment says.
    """
    rank, world, local_rank, own_group = _setup_distributed(config, _distributed)
    tc, run_dir = config.train, config.run_dir
    if tc.batch_size % world:
        raise ValueError(f"train.batch_size {tc.batch_size} is not divisible by {world} DDP ranks")
    device = _device(tc.device, local_rank, world)
    use_bf16 = tc.bf16 is True or (tc.bf16 == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    from pairspec import data

    streaming = config.data.stream
    train_twins, val_twins, schema, grid = (_load_stream if streaming else _load_data)(config)
    if config.data.labels is not None:
        try:
            subset = schema.subset(list(config.data.labels))
        except KeyError as err:
            raise ValueError(f"{config.data.store}: data.labels: {err.args[0]}") from err
        cols, schema = [schema.index(n) for n in config.data.labels], subset
    else:
        cols = None
    val_twins = _with_labels(val_twins, cols)
    if streaming:  # train_twins is a TwinStream: stats from the store's star labels, no spectra
        train_twins.label_cols = cols
        stats, n_train, n_pix = train_twins.label_stats(), train_twins.n_twins, train_twins.n_pix
        if len(train_twins.chunks) < world:
            raise ValueError(f"{config.data.store}: {len(train_twins.chunks)} star chunks for {world} DDP ranks; "
                             "lower data.stream_chunk_stars")
    else:
        train_twins = _with_labels(train_twins, cols)
        stats = data.compute_label_stats(train_twins.labels)
        train_ds = data.TwinTorchDataset(train_twins, stats)
        n_train, n_pix = len(train_ds), int(train_twins.x.shape[-1])
    val_ds = data.TwinTorchDataset(val_twins, stats)
    steps_per_epoch = n_train // tc.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{config.data.store}: {n_train} train twins, "
                         f"fewer than train.batch_size {tc.batch_size}")
    total_steps = tc.epochs * steps_per_epoch

    m = config.model
    model_kwargs = preset_kwargs(m.preset, n_pix, len(schema), patch_size=m.patch_size, embed_dim=m.embed_dim,
                                 depth=m.depth, num_heads=m.num_heads, drop_path=m.drop_path)
    torch.manual_seed(config.run.seed)
    raw_model = TwinSpecNet(**model_kwargs).to(device)
    optimizer = make_optimizer(raw_model, tc.lr, tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, tc.warmup_frac, tc.min_lr_frac))
    meta = dict(preset=m.preset, model_kwargs=model_kwargs, config=to_dict(config), schema=schema.to_dict(),
                grid=grid.to_dict(), label_stats=stats.to_dict(), label_names=schema.names, label_units=schema.units,
                label_lo=np.asarray(stats.lo).tolist(), label_hi=np.asarray(stats.hi).tolist(), n_model_pix=n_pix,
                n_parameters=count_parameters(raw_model), pairspec_version=_version(), calibration=None)

    state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_val": float("inf"), "nonfinite": 0}
    last, best = run_dir / "last.pt", run_dir / "best.pt"
    if tc.resume and last.exists():
        model_state, _, saved = read_train_state(last, map_location=device)
        raw_model.load_state_dict(model_state)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), device)
        state.update({k: saved[k] for k in state})
    elif rank == 0:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    if rank == 0:
        save_resolved(config, run_dir / "config.yaml")

    model = raw_model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=ids)
    if tc.compile:
        model = torch.compile(model)
    val_batches = [np.arange(i, min(i + tc.batch_size, len(val_ds))) for i in range(0, len(val_ds), tc.batch_size)]
    val_loader = torch.utils.data.DataLoader(data.TwinBatches(val_ds), batch_size=None, sampler=val_batches,
                                             num_workers=tc.num_workers)
    show = progress and rank == 0

    def save_last():
        train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "torch_rng": torch.get_rng_state(), **state}
        if device.type == "cuda":  # drop_path draws on the GPU generator
            train_state["cuda_rng"] = torch.cuda.get_rng_state(device)
        info = {"epoch": state["epoch"], "step": state["step"]}
        save_checkpoint(last, raw_model.state_dict(), meta | info, train_state)

    from rich.progress import Progress

    with Progress(disable=not show, transient=False) as bar:
        task = bar.add_task("train", total=total_steps, completed=state["step"])
        stopped, t_train = False, time.perf_counter()
        while state["epoch"] < tc.epochs and not stopped:
            epoch, t0, sums, n_ok = state["epoch"], time.perf_counter(), {}, 0
            if streaming:
                loader = _stream_loader(train_twins, stats, config.run.seed, epoch, tc.batch_size, steps_per_epoch,
                                        state["batch_in_epoch"], rank, world)
            else:
                batches = epoch_batches(len(train_ds), tc.batch_size, config.run.seed, epoch, rank, world)
                loader = torch.utils.data.DataLoader(data.TwinBatches(train_ds), batch_size=None,
                                                     sampler=batches[state["batch_in_epoch"]:],
                                                     num_workers=tc.num_workers, pin_memory=device.type == "cuda")
            for batch in loader:
                if tc.max_steps is not None and state["step"] >= tc.max_steps:
                    stopped = True
                    break
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                parts = train_step(model, batch, optimizer, scheduler, tc, amp)
                state["batch_in_epoch"] += 1
                if parts is None:
                    state["nonfinite"] += 1
                    if state["nonfinite"] >= tc.max_nonfinite:
                        raise FloatingPointError(
                            f"{run_dir}: {state['nonfinite']} consecutive non-finite losses/gradients at "
                            f"step {state['step']}; lower train.lr or check the data")
                    continue
                state["nonfinite"], state["step"], n_ok = 0, state["step"] + 1, n_ok + 1
                sums = {k: sums.get(k, 0.0) + v for k, v in parts.items()}
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{tc.epochs} loss {parts['loss']:.4f}")
            if streaming:
                loader.close()  # stops the read-ahead thread
            if stopped:
                break
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            record = {"epoch": epoch + 1, "step": state["step"], "lr": scheduler.get_last_lr()[0],
                      **{f"train_{k}": v / max(n_ok, 1) for k, v in sums.items()}}
            if rank == 0 and ((epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs):
                val = predict_twins(raw_model, val_loader, device, amp, tc)
                if val["n"]:
                    pred, _ = _physical(val, stats)
                    record |= {"val_loss": val["loss"], "val_recon_loss": val["recon_loss"],
                               "val_label_loss": val["label_loss"],
                               "val_sigma": dict(zip(schema.names, robust_std(pred - val_twins.labels).tolist()))}
                    if val["loss"] < state["best_val"]:
                        state["best_val"] = val["loss"]
                        info = {"epoch": epoch + 1, "step": state["step"], "metrics": record}
                        save_checkpoint(best, raw_model.state_dict(), meta | info)
            record["time_s"] = time.perf_counter() - t0
            if rank == 0:
                save_last()
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            stopped = _time_up(t_train, tc.time_limit_min, world, device)
        if stopped and rank == 0:
            save_last()

    if rank == 0:
        _finish(best, last, raw_model, meta, val_loader, val_twins, stats, schema, device, amp, tc, state)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if own_group:
            dist.destroy_process_group()
    return best


def _time_up(t_start: float, limit_min, world: int, device) -> bool:
    """train.time_limit_min reached? Rank 0's clock decides for every rank (they must stop together)."""
    if limit_min is None:
        return False
    up = (time.perf_counter() - t_start) / 60.0 >= float(limit_min)
    if world > 1:
        import torch.distributed as dist

        flag = torch.tensor([1.0 if up else 0.0], device=device)
        dist.broadcast(flag, src=0)
        up = bool(flag.item() > 0)
    return up


def _stream_loader(twins, stats, seed, epoch, batch_size, n_batches, skip, rank, world):
    """This rank's streamed torch batches of one epoch, read ahead in a thread. `skip` batches are
    read and dropped first: the stream is deterministic in (seed, epoch, rank), so a run stopped by
    max_steps resumes exactly where it stopped."""
    import itertools

    from pairspec import stream

    gen = twins.batches(seed, epoch, batch_size, n_batches, rank, world)
    return stream.prefetch(stream.torch_batch(b, stats) for b in itertools.islice(gen, skip, None))


def _finish(best, last, raw_model, meta, val_loader, val_twins, stats, schema, device, amp, tc, state):
    """Fit the sigma calibration on the val split with the best weights and store it in best.pt."""
    if best.exists():
        model_state, best_meta, _ = read_train_state(best, map_location=device)
        raw_model.load_state_dict(model_state)
    else:  # no validation happened (empty val split): the last weights are the best we have
        best_meta = meta | {"epoch": state["epoch"], "step": state["step"]}
    val = predict_twins(raw_model, val_loader, device, amp, tc)
    if val["n"]:
        pred, sigma = _physical(val, stats)
        best_meta["calibration"] = fit_calibration(pred, sigma, val_twins.labels, snr=np.asarray(val_twins.snr),
                                                   star=np.asarray(val_twins.star_index),
                                                   label_names=schema.names)
    save_checkpoint(best, raw_model.state_dict(), best_meta)


def _version() -> str:
    from pairspec import __version__

    return __version__
