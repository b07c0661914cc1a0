"""The epoch loop of pairspec.train: train one epoch, validate, checkpoint, stop on time or steps; and the
closing calibration. Kept apart from train.py so each stage reads on its own."""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from pairspec.checkpoint import read_train_state, save_checkpoint
from pairspec.train_steps import (
    degrade_targets,
    denoise_error_profile,
    epoch_batches,
    label_weight_vector,
    physical,
    predict_twins,
    refit_on_val,
    train_step,
)


def _val_loader(twins, batch_size: int, num_workers: int):
    from pairspec import data

    ds = data.TwinTorchDataset(twins.val, twins.stats)
    batches = [np.arange(i, min(i + batch_size, len(ds))) for i in range(0, len(ds), batch_size)]
    return torch.utils.data.DataLoader(data.TwinBatches(ds), batch_size=None, sampler=batches,
                                       num_workers=num_workers)


def _train_loader(config, run, twins, opt, epoch: int, skip: int):
    """This rank's batches of one epoch, from batch `skip` on (resume inside an epoch)."""
    from pairspec import data, stream

    tc = config.train
    if twins.streaming:
        # deterministic in (seed, epoch, rank): a run stopped by max_steps resumes exactly where it stopped
        gen = twins.train.batches(config.run.seed, epoch, tc.batch_size, opt.steps_per_epoch, run.rank, run.world)
        return stream.prefetch(stream.torch_batch(b, twins.stats) for b in itertools.islice(gen, skip, None))
    if not hasattr(twins, "_train_ds"):
        twins._train_ds = data.TwinTorchDataset(twins.train, twins.stats)
    batches = epoch_batches(len(twins._train_ds), tc.batch_size, config.run.seed, epoch, run.rank, run.world)
    return torch.utils.data.DataLoader(data.TwinBatches(twins._train_ds), batch_size=None, sampler=batches[skip:],
                                       num_workers=tc.num_workers, pin_memory=run.device.type == "cuda")


def _augment_generator(seed: int, epoch: int, batch_index: int, rank: int) -> torch.Generator:
    # one stream per (seed, epoch, batch, rank): a resumed run augments the batches it repeats identically
    return torch.Generator().manual_seed(((seed * 1009 + epoch) * 100003 + batch_index) * 17 + rank)


def train_epoch(config, run, twins, model, opt, state, bar, task) -> tuple[dict, int, bool]:
    """One epoch of optimizer steps: (summed loss parts, steps taken, stopped by max_steps)."""
    tc, epoch = config.train, state["epoch"]
    sums, n_ok, stopped = {}, 0, False
    label_w = label_weight_vector(tc, twins.schema.names)
    loader = _train_loader(config, run, twins, opt, epoch, state["batch_in_epoch"])
    try:
        for batch in loader:
            if tc.max_steps is not None and state["step"] >= tc.max_steps:
                stopped = True
                break
            if tc.augment > 0:
                batch = degrade_targets(batch, tc.augment, _augment_generator(config.run.seed, epoch,
                                                                             state["batch_in_epoch"], run.rank))
            batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
            parts = train_step(model, batch, opt.optimizer, opt.scheduler, tc, run.amp, label_w)
            state["batch_in_epoch"] += 1
            if parts is None:
                state["nonfinite"] += 1
                if state["nonfinite"] >= tc.max_nonfinite:
                    raise FloatingPointError(
                        f"{run.run_dir}: {state['nonfinite']} consecutive non-finite losses/gradients at "
                        f"step {state['step']}; lower train.lr or check the data")
                continue
            if opt.average is not None:
                opt.average.update(_raw(model), state["step"])
            state["nonfinite"], state["step"], n_ok = 0, state["step"] + 1, n_ok + 1
            sums = {k: sums.get(k, 0.0) + v for k, v in parts.items()}
            # the epoch's mean so far: one batch's loss jumps with its twins' S/N
            bar.update(task, advance=1, description=f"{config.run.name} epoch {epoch + 1}/{tc.epochs} "
                                                    f"loss {sums['loss'] / n_ok:.4f}")
    finally:
        if twins.streaming:
            loader.close()  # stops the read-ahead thread
    return sums, n_ok, stopped


def _raw(model):
    """The module under DDP / torch.compile wrappers (their state dicts carry prefixes)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def validate(config, run, twins, raw_model, opt, val_loader) -> dict:
    """Val loss parts and sigma with the weights validation uses (the average, when there is one)."""
    from pairspec.train import val_sigma

    saved = opt.average.swap_into(raw_model) if opt.average is not None else None
    try:
        label_w = label_weight_vector(config.train, twins.schema.names)  # the val loss is the train objective
        val = predict_twins(raw_model, val_loader, run.device, run.amp, config.train, label_w)
        out = {"n": val["n"]}
        if val["n"]:
            pred, _ = physical(val, twins.stats)
            out.update(val_loss=val["loss"], val_recon_loss=val["recon_loss"], val_label_loss=val["label_loss"],
                       val_sigma=val_sigma(pred, twins), state={k: v.detach().clone()
                                                                for k, v in raw_model.state_dict().items()})
        return out
    finally:
        if saved is not None:
            raw_model.load_state_dict(saved)


def run_epochs(config, run, twins, raw_model, meta, opt, state, progress: bool):
    """Epochs until train.epochs (or max_steps / time_limit_min); validation, best.pt and last.pt."""
    from pairspec.progress import Progress
    from pairspec.train import save_last, write_metrics

    tc = config.train
    model = raw_model
    if run.world > 1:
        ids = [run.device.index] if run.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=ids)
    if tc.compile:
        model = torch.compile(model)
    val_loader = _val_loader(twins, tc.batch_size, tc.num_workers)
    best = run.run_dir / "best.pt"
    if progress and run.rank == 0 and state["step"] > 0:  # say what a rerun of the same command does
        print(f"{run.run_dir}: the run is complete ({tc.epochs} of {tc.epochs} epochs); the stages after the "
              "epochs run again from best.pt" if state["epoch"] >= tc.epochs else
              f"{run.run_dir}: resuming at epoch {state['epoch'] + 1} of {tc.epochs}, step {state['step']} of "
              f"{opt.total_steps}, from last.pt", flush=True)
    with Progress(enabled=progress and run.rank == 0) as bar:
        task = bar.add_task(config.run.name, total=opt.total_steps, completed=state["step"])
        stopped, t_train = False, time.perf_counter()
        while state["epoch"] < tc.epochs and not stopped:
            epoch, t0 = state["epoch"], time.perf_counter()
            sums, n_ok, stopped = train_epoch(config, run, twins, model, opt, state, bar, task)
            if stopped:
                break
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            record = {"epoch": epoch + 1, "step": state["step"], "lr": opt.scheduler.get_last_lr()[0],
                      **{f"train_{k}": v / max(n_ok, 1) for k, v in sums.items()}}
            if run.rank == 0 and ((epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs):
                val = validate(config, run, twins, raw_model, opt, val_loader)
                if val["n"]:
                    weights = val.pop("state")
                    record |= {k: v for k, v in val.items() if k != "n"}
                    if val["val_loss"] < state["best_val"]:
                        state["best_val"] = val["val_loss"]
                        info = {"epoch": epoch + 1, "step": state["step"], "metrics": record}
                        save_checkpoint(best, weights, meta | info)
            record["time_s"] = time.perf_counter() - t0
            if run.rank == 0:
                save_last(run, raw_model, meta, opt, state)
                write_metrics(run, record)
                bar.print(epoch_line(config.run.name, tc.epochs, record, best=record.get("val_loss") == state["best_val"]))
            stopped = _time_up(t_train, tc.time_limit_min, run.world, run.device)
        if stopped and run.rank == 0:
            save_last(run, raw_model, meta, opt, state)
            if state["epoch"] < tc.epochs:  # a limit met on the last epoch's end stopped nothing
                limit = (f"train.max_steps={tc.max_steps}" if tc.max_steps is not None and state["step"] >= tc.max_steps
                         else f"train.time_limit_min={tc.time_limit_min}")
                bar.print(f"{run.run_dir}: stopped at step {state['step']} of {opt.total_steps} ({limit}; "
                          f"{state['epoch']} of {tc.epochs} epochs done); best.pt is the best so far. The same "
                          "command without the limit (or with a larger one) continues from last.pt")
    return val_loader


def epoch_line(name: str, epochs: int, record: dict, best: bool = False) -> str:
    """The one line a finished epoch prints (above the bar, or in a job's log): its mean train loss, the
    val loss and the val sigma of each label when it was validated, and its time."""
    parts = [f"{name} epoch {record['epoch']}/{epochs}", f"step {record['step']}"]
    if "train_loss" in record:
        parts.append(f"train loss {record['train_loss']:.4f}")
    if "val_loss" in record:
        parts.append(f"val loss {record['val_loss']:.4f}" + (" (best)" if best else ""))
    sigma = record.get("val_sigma") or {}
    if sigma:
        parts.append("val sigma " + " ".join(f"{k} {v:.3g}" for k, v in sigma.items()))
    parts.append(f"{record.get('time_s', 0.0):.0f} s")
    return ", ".join(parts)


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


def finish(best, raw_model, meta, val_loader, twins, run, tc, state, opt, progress: bool = False) -> None:
    """Fit the sigma calibration on the val split with the best weights and store it in best.pt; then the
    refit's mix (train.refit), the product decoder (train.decoder_labels: network) and the denoised
    spectra's per-pixel uncertainty, in that order (each stage uses the ones before it)."""
    from pairspec.train import calibrate

    if best.exists():
        model_state, best_meta = _without_product_decoder(*read_train_state(best, map_location=run.device)[:2])
        raw_model.load_state_dict(model_state)
    else:  # no validation happened (empty val split): the last (averaged) weights are the best we have
        if opt.average is not None:
            raw_model.load_state_dict(opt.average.state)
        best_meta = meta | {"epoch": state["epoch"], "step": state["step"]}
    val = predict_twins(raw_model, val_loader, run.device, run.amp, tc)
    if val["n"]:
        pred, sigma = physical(val, twins.stats)
        best_meta["calibration"] = calibrate(pred, sigma, twins)
        _warn_one_part(best_meta["calibration"], run.run_dir)
        if getattr(tc, "refit", False) and getattr(raw_model, "label_decoder_width", 0):
            best_meta["refit"] = refit_on_val(raw_model, val, pred, sigma, twins, run.device,
                                              network_calibration=best_meta["calibration"])
        if getattr(tc, "decoder_labels", "survey") == "network" and getattr(raw_model, "label_decoder_width", 0):
            _product_decoder_stage(raw_model, best_meta, twins, run, tc, progress)
        denoise_sigma_stage(raw_model, best_meta, val_loader, twins, run, tc)
    save_checkpoint(best, raw_model.state_dict(), best_meta)


def _warn_one_part(calibration: dict, run_dir) -> None:
    """Say when the val split had too few repeat pairs (two visits of one star) to split the errors into
    a visit part and a star part: catalogues then cannot average a star's error down over its visits."""
    if calibration.get("method") == "visit+star":
        return
    import warnings

    pairs = max(calibration.get("pair_count") or [0])
    warnings.warn(
        f"{run_dir}: the val split has {pairs} repeat pairs, fewer than the {calibration.get('min_count')} the "
        "sigma calibration needs to split each error into a part that averages down over a star's visits and a "
        "part common to them; star errors in catalogues will not be averaged down (CALMETH one-part). The val "
        "split is ~10 % of the stars (a hash of their ids): a larger survey fixes it.", stacklevel=2)


def denoise_sigma_stage(raw_model, best_meta, val_loader, twins, run, tc) -> None:
    """The denoised spectra's per-pixel uncertainty (pairspec predict --denoised), measured on the val twins
    through whatever makes the product now; none without a reconstruction objective."""
    if tc.recon_weight > 0:
        best_meta["denoise_sigma"] = denoise_error_profile(raw_model, val_loader, run.device, run.amp, val=twins.val)


def _without_product_decoder(model_state: dict, meta: dict) -> tuple[dict, dict]:
    """A best.pt from a finished run trained again (the same command rerun, or new post-training code)
    already holds the product decoder, which the model built from the recipe has not: drop its weights and
    its metadata, so that the stages of `finish` make it anew from the best weights."""
    if not any(k.startswith("product_decoder.") for k in model_state):
        return model_state, meta
    model_state = {k: v for k, v in model_state.items() if not k.startswith("product_decoder.")}
    meta = dict(meta, model_kwargs={k: v for k, v in meta.get("model_kwargs", {}).items() if k != "product_decoder"})
    meta.pop("product_decoder", None)
    return model_state, meta


def _product_decoder_stage(raw_model, best_meta, twins, run, tc, progress: bool, labels=None) -> None:
    """train.decoder_labels: network (pairspec.product_decoder): the second decoder, on the train twins
    (`labels`: the twins' star labels if already computed)."""
    from pairspec.product_decoder import train_product_decoder

    info = train_product_decoder(raw_model, best_meta, twins.train, run.device, tc.decoder_epochs,
                                 seed=best_meta.get("config", {}).get("run", {}).get("seed", 0), progress=progress,
                                 width=tc.decoder_width, labels=labels)
    if "skipped" not in info:
        best_meta["model_kwargs"] = dict(best_meta["model_kwargs"], product_decoder=info["width"])
    else:
        print(f"train.decoder_labels: network skipped ({info['skipped']}); the label decoder stays the denoised product",
              flush=True)
    best_meta["product_decoder"] = info
