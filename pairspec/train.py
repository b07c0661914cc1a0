"""Train TwinSpecNet (or the ridge baseline) from a RunConfig: CPU, one GPU, or many GPUs under torchrun.

Run folder (config.run_dir): config.yaml (resolved recipe), metrics.jsonl (one JSON per epoch),
last.pt (every epoch, with optimizer/scheduler/rng state for resume) and best.pt (lowest val loss,
with the sigma calibration fitted on the val split after training).

`train` reads as its stages: setup_run (rank, device, autocast) -> load_twins (train and val twins,
label subset and statistics) -> build_model (preset, init_from) -> Optimisation (AdamW, schedule, weight
average) -> resume_state -> run_epochs (train_epoch, validate, checkpoints) -> finish (calibration).
The step-level levers (loss, augmentation, EMA) live in pairspec.train_steps.

Batches: each epoch draws one permutation of the train twins from (seed, epoch); global batch b is
perm[b*G:(b+1)*G] and DDP rank r takes the r-th slice of it, so a DDP run sees exactly the batches
of a single-process run with the same global batch_size G. Resume restarts inside an epoch if the
run was stopped there (max_steps). With data.stream the train twins are not held in memory
(pairspec.stream.TwinStream; label statistics from the store's star labels, a capped in-memory val set).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from pairspec.calibration import fit_calibration
from pairspec.checkpoint import read_train_state, save_checkpoint
from pairspec.config import (
    ConfigError,
    RunConfig,
    recipe_changes,
    save_resolved,
    to_dict,
)
from pairspec.metrics import robust_std
from pairspec.train_steps import (  # noqa: F401 - re-exported: tests and benchmarks use them from here
    WeightAverage,
    degrade_targets,
    epoch_batches,
    lr_factor,
    make_optimizer,
    physical,
    predict_twins,
    train_step,
)


@dataclasses.dataclass
class RunContext:
    rank: int
    world: int
    device: torch.device
    amp: object  # a context-manager factory: bf16 autocast or nullcontext
    own_group: bool
    run_dir: Path


@dataclasses.dataclass
class Twins:
    train: object  # TwinData (in memory) or TwinStream (data.stream)
    val: object  # TwinData
    schema: object
    grid: object
    stats: object
    n_train: int
    n_pix: int
    streaming: bool


# ---- stage 1: where and how ---------------------------------------------------------------------

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
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device is {setting}, but torch finds no CUDA device here: set train.device=auto "
                         "(or cpu)")
    if setting == "cuda" and world > 1:
        setting = f"cuda:{local_rank}"
    return torch.device(setting)


def setup_run(config: RunConfig, forced=None) -> RunContext:
    rank, world, local_rank, own_group = _setup_distributed(config, forced)
    tc = config.train
    if tc.batch_size % world:
        raise ValueError(f"train.batch_size {tc.batch_size} is not divisible by {world} DDP ranks")
    device = _device(tc.device, local_rank, world)
    use_bf16 = tc.bf16 is True or (tc.bf16 == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    return RunContext(rank, world, device, amp, own_group, config.run_dir)


# ---- stage 2: the twins -------------------------------------------------------------------------

def _prep_device(config: RunConfig):
    """Where the twins' continuum normalisation runs: this rank's GPU when training on CUDA (the torch
    backend of pairspec.preprocess, data.normalizer), else None (numpy)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _device(config.train.device, int(os.environ.get("LOCAL_RANK", "0")), world)
    return device if device.type == "cuda" else None


def _open(config: RunConfig):
    from pairspec.store import open_store

    if not config.data.store:
        raise ValueError("data.store is empty: set it in the recipe or with --set data.store=PATH")
    return open_store(config.data.store)


def _load_data(config: RunConfig):
    """-> (train TwinData, val TwinData, store schema, grid). Tests replace this hook."""
    from pairspec import data

    store = _open(config)
    kw = dict(mode=config.data.mode, min_visits=config.data.min_visits, max_stars=config.data.max_stars,
              device=_prep_device(config))
    return (data.TwinData(store, "train", **kw), data.TwinData(store, config.data.val_split, **kw),
            store.schema, store.grid)


def _load_stream(config: RunConfig):
    """-> (train TwinStream, val TwinData capped at data.stream_val_twins, store schema, grid). Tests
    replace this hook."""
    from pairspec import data, stream

    d = config.data
    store = _open(config)
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
    err = getattr(twins, "label_err", None)
    if dataclasses.is_dataclass(twins):
        extra = {} if err is None else {"label_err": err[:, cols]}
        return dataclasses.replace(twins, labels=twins.labels[:, cols], **extra)
    twins = copy.copy(twins)
    twins.labels = twins.labels[:, cols]
    if err is not None:
        twins.label_err = err[:, cols]
    return twins


def _select_labels(train0, val0, schema0, names: list[str], streaming: bool):
    """(train, val, schema, label stats) with only the label columns `names` of the store's `schema0`;
    always taken from the twins as loaded, so a second selection replaces the first."""
    from pairspec import data

    cols = None if list(names) == list(schema0.names) else [schema0.index(n) for n in names]
    schema = schema0 if cols is None else schema0.subset(list(names))
    val = _with_labels(val0, cols)
    if streaming:  # a TwinStream: stats from the store's star labels, no spectra
        train0.label_cols = cols
        return train0, val, schema, train0.label_stats()
    train = _with_labels(train0, cols)
    return train, val, schema, data.compute_label_stats(train.labels)


def load_twins(config: RunConfig, run: RunContext) -> Twins:
    streaming = config.data.stream
    train0, val0, schema0, grid = (_load_stream if streaming else _load_data)(config)
    asked = config.data.labels
    if asked is not None:
        missing = [n for n in asked if n not in schema0.names]
        if missing:
            raise ValueError(f"{config.data.store}: data.labels asks for {missing}, which the store does not hold; "
                             f"it holds {schema0.names}")
    names = list(schema0.names if asked is None else asked)
    train_twins, val_twins, schema, stats = _select_labels(train0, val0, schema0, names, streaming)
    if streaming:
        n_train, n_pix = train_twins.n_twins, train_twins.n_pix
        if len(train_twins.chunks) < run.world:
            raise ValueError(f"{config.data.store}: {len(train_twins.chunks)} star chunks for {run.world} DDP ranks; "
                             "lower data.stream_chunk_stars")
    else:
        n_train, n_pix = len(train_twins), int(train_twins.x.shape[-1])
    if n_train // config.train.batch_size == 0:
        raise ValueError(f"{config.data.store}: {n_train} train twins, fewer than train.batch_size "
                         f"{config.train.batch_size}")
    no_label = [n for n, v in zip(schema.names, np.asarray(stats.lo)) if not np.isfinite(v)]
    if no_label and asked is not None:
        raise ValueError(f"{config.data.store}: no train twin has a value for {no_label}; "
                         "drop them from data.labels")
    if no_label:  # "all labels": all the store has values for
        keep = [n for n in schema.names if n not in no_label]
        if not keep:
            raise ValueError(f"{config.data.store}: no train twin has a value for any label {schema.names}")
        warnings.warn(f"{config.data.store}: training {len(keep)} of the store's {len(schema.names)} labels; no train "
                      f"twin has a value for {', '.join(no_label)} (set data.labels to choose)", stacklevel=2)
        train_twins, val_twins, schema, stats = _select_labels(train0, val0, schema0, keep, streaming)
    from pairspec.train_steps import label_weight_vector

    label_weight_vector(config.train, schema.names)  # a label_weights name the run does not train: say so now
    if len(val_twins) == 0 and run.rank == 0:
        warnings.warn(f"{config.data.store}: the val split has no twins (a store of few stars?): best.pt will be "
                      "the last epoch's weights, not the best, and its sigmas stay the network's own, uncalibrated "
                      "(pairspec info shows calibration: None)", stacklevel=2)
    return Twins(train_twins, val_twins, schema, grid, stats, n_train, n_pix, streaming)


# ---- stage 3: the model -------------------------------------------------------------------------

def model_kwargs_of(config: RunConfig, n_pix: int, n_labels: int) -> dict:
    """TwinSpecNet's keyword arguments for the recipe's model section (its preset, then the fields it sets)."""
    from pairspec.models import preset_kwargs

    m = config.model
    return preset_kwargs(m.preset, n_pix, n_labels, patch_size=m.patch_size, embed_dim=m.embed_dim, depth=m.depth,
                         num_heads=m.num_heads, drop_path=m.drop_path, embed=m.embed, label_head=m.label_head,
                         decoder_depth=m.decoder_depth, ridge_path=m.ridge_path, linear_readout=m.linear_readout,
                         readout_detach=m.readout_detach, readout_hidden=m.readout_hidden,
                         label_decoder=m.label_decoder)


def build_model(config: RunConfig, run: RunContext, twins: Twins):
    """(model on the device, checkpoint meta). train.init_from loads matching weights of a checkpoint."""
    from pairspec.models import TwinSpecNet, count_parameters

    m = config.model
    model_kwargs = model_kwargs_of(config, twins.n_pix, len(twins.schema))
    torch.manual_seed(config.run.seed)
    model = TwinSpecNet(**model_kwargs)
    if config.train.init_from:
        _init_from(model, config.train.init_from, twins.grid)
    elif m.ridge_path:
        model.set_ridge(*_ridge_fit(config, twins))
    meta = dict(preset=m.preset, model_class="tsn", model_kwargs=model_kwargs, config=to_dict(config),
                schema=twins.schema.to_dict(), grid=twins.grid.to_dict(), label_stats=twins.stats.to_dict(),
                label_names=twins.schema.names, label_units=twins.schema.units,
                label_lo=np.asarray(twins.stats.lo).tolist(), label_hi=np.asarray(twins.stats.hi).tolist(),
                n_model_pix=twins.n_pix, n_parameters=count_parameters(model), pairspec_version=_version(),
                calibration=None, adapter_options=adapter_options(config), train_twins=int(twins.n_train))
    return model.to(run.device), meta


def adapter_options(config: RunConfig) -> dict:
    """The survey-adapter options the training store was ingested with (its provenance), so predict reads
    single files the same way; {} when the store records none (or is not a store, as in tests)."""
    try:
        from pairspec.store import open_store

        return dict(open_store(config.data.store).provenance.get("adapter_options") or {})
    except Exception:  # noqa: BLE001 - provenance is a convenience; its absence must not stop training
        return {}


def _ridge_fit(config: RunConfig, twins: Twins):
    """(W, b) of the closed-form ridge on the train twins (pairspec.models.ridge), strength chosen on val.
    Streaming: on the twins of up to RIDGE_STREAM_STARS train stars, read once into memory."""
    from pairspec.models.ridge import fit_ridge

    train_twins = twins.train
    if twins.streaming:
        from pairspec import data

        stars = np.concatenate(train_twins.chunks)
        stars = stars[:: max(1, -(-stars.size // RIDGE_STREAM_STARS))]  # evenly through the store
        train_twins = _with_labels(data.TwinData(_open(config), "train", mode=config.data.mode, stars=np.sort(stars)),
                                   getattr(twins.train, "label_cols", None))
    mean, std = np.asarray(twins.stats.mean, np.float64), np.asarray(twins.stats.std, np.float64)
    W, b, _ = fit_ridge(train_twins.x[:, 0], (np.asarray(train_twins.labels, np.float64) - mean) / std,
                        twins.val.x[:, 0], (np.asarray(twins.val.labels, np.float64) - mean) / std)
    return W, b


RIDGE_STREAM_STARS = 4000


INIT_FROM_MIN_SHARE = 0.5  # below this share of the parameters copied, init_from warns


def _init_from(model, path, grid=None) -> None:
    """Copy every weight of checkpoint `path` whose name and shape match (fine-tuning: a new label set
    keeps its fresh head); an error when nothing matches (another architecture). Says how much was copied,
    and warns when the checkpoint was trained on another wavelength grid (another survey)."""
    state, meta, _ = read_train_state(path)
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"{path}: train.init_from: no weight of this checkpoint fits the model "
                         f"(its model: {meta.get('model_kwargs')})")
    own.update(matched)
    model.load_state_dict(own)
    n_own = sum(v.numel() for v in own.values())
    n_copied = sum(v.numel() for v in matched.values())
    print(f"train.init_from: {len(matched)} of {len(own)} weight tensors ({n_copied / max(n_own, 1):.0%} of the "
          f"parameters) copied from {path}; the rest start fresh", flush=True)
    if n_copied < INIT_FROM_MIN_SHARE * n_own:  # another model size: fine-tuning in name only
        warnings.warn(f"{path}: train.init_from copied only {n_copied / max(n_own, 1):.0%} of the parameters: the "
                      f"checkpoint is another model ({meta.get('preset', '?')}, {meta.get('model_kwargs', {}).get('embed_dim', '?')} "
                      "wide), so this run trains mostly from scratch; use a checkpoint of the recipe's model.preset",
                      stacklevel=2)
    if grid is not None and meta.get("grid") is not None and meta["grid"] != grid.to_dict():
        warnings.warn(f"{path}: train.init_from: this checkpoint was trained on another wavelength grid "
                      f"({meta['grid'].get('npix')} pixels, {meta.get('schema', {}).get('survey', '?')}) than the "
                      f"store's ({grid.npix} pixels): only the weights of matching shape carry over", stacklevel=2)


# ---- stage 4: optimisation ----------------------------------------------------------------------

class Optimisation:
    """AdamW with warmup + cosine decay over epochs x steps_per_epoch steps, and the weight average."""

    def __init__(self, config: RunConfig, model, twins: Twins):
        tc = config.train
        self.steps_per_epoch = twins.n_train // tc.batch_size
        self.total_steps = tc.epochs * self.steps_per_epoch
        self.optimizer = make_optimizer(model, tc.lr, tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, tc.warmup_frac, tc.min_lr_frac))
        self.average = WeightAverage(model, tc.ema) if tc.ema > 0 else None


def resume_state(config: RunConfig, run: RunContext, model, opt: Optimisation, meta: dict | None = None) -> dict:
    """The loop's position: from the run's last.pt when it resumes (the same recipe, and the same train
    twins: `meta` of this run's model says how many), else from the start."""
    state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_val": float("inf"), "nonfinite": 0}
    last = run.run_dir / "last.pt"
    if config.train.resume and last.exists():
        saved = run.run_dir / "config.yaml"
        changes = recipe_changes(config, saved) if saved.exists() else []
        if changes:  # resuming would mix two recipes in one model, and config.yaml would then describe neither
            raise ConfigError(f"{run.run_dir} holds a run of another recipe ({'; '.join(changes)}): set "
                              "train.resume=false to start it over there, or give this recipe its own "
                              "run.out_dir")
        try:
            model_state, last_meta, saved = read_train_state(last, map_location=run.device)
        except ValueError as err:  # cut short by a crash mid-write, or damaged since
            raise ConfigError(f"{err}; to start the run over, set train.resume=false") from err
        before, now = last_meta.get("train_twins"), (meta or {}).get("train_twins")
        if before is not None and now is not None and before != now:
            # data.store may move (a copy on another disk) but not change: the weights learned from other stars
            raise ConfigError(f"{run.run_dir} holds a run trained on {before} train twins; data.store "
                              f"{config.data.store} gives {now}: it is another store, or one ingested into since. "
                              "Set train.resume=false to start over there, or give this run its own run.out_dir")
        model.load_state_dict(model_state)
        opt.optimizer.load_state_dict(saved["optimizer"])
        opt.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"].cpu())
        if run.device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), run.device)
        if opt.average is not None and "ema" in saved:
            opt.average.state = {k: v.to(run.device) for k, v in saved["ema"].items()}
        state.update({k: saved[k] for k in state})
    elif run.rank == 0:
        _clear_run(run.run_dir, config.train.resume)
    if run.rank == 0:
        save_resolved(config, run.run_dir / "config.yaml")
    return state


def _clear_run(run_dir, resume: bool) -> None:
    """A run that starts over removes what an earlier run left in its folder: its metrics, its checkpoints
    (an old best.pt came back as this run's result when this one never validated; a last.pt would make a
    rerun resume the old weights under this run's config.yaml) and checkpoint files a kill left mid-write."""
    old = [p for p in (run_dir / "best.pt", run_dir / "last.pt") if p.exists()]
    for path in [run_dir / "metrics.jsonl", *old, *run_dir.glob(".*.pt.*.tmp")]:
        path.unlink(missing_ok=True)
    if old:
        why = "train.resume=false" if not resume else "no last.pt to resume from"
        print(f"{run_dir}: {why}: the earlier run's {' and '.join(p.name for p in old)} removed; training starts "
              "over", flush=True)


# ---- the whole run ------------------------------------------------------------------------------

def train(config: RunConfig, progress: bool = True, _distributed=None) -> Path:
    """Train (or resume) the run described by `config`; returns the best checkpoint's path.

    Under torchrun (WORLD_SIZE > 1) this is one DDP rank; only rank 0 writes files. `_distributed=False`
    forces a single-process run whatever the environment says. model.preset "ridge" fits the linear
    baseline in closed form instead (pairspec.models.ridge).
    """
    run = setup_run(config, _distributed)
    try:
        twins = load_twins(config, run)
        if config.model.preset == "ridge":
            from pairspec.train_linear import fit_linear

            return fit_linear(config, run, twins)
        model, meta = build_model(config, run, twins)
        opt = Optimisation(config, model, twins)
        state = resume_state(config, run, model, opt, meta)
        from pairspec.train_loop import finish, run_epochs

        val_loader = run_epochs(config, run, twins, model, meta, opt, state, progress)
        best = run.run_dir / "best.pt"
        if run.rank == 0:
            finish(best, model, meta, val_loader, twins, run, config.train, state, opt, progress=progress)
        return best
    finally:
        if run.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                if run.own_group:
                    dist.destroy_process_group()


def calibrate(pred, sigma, twins) -> dict:
    """The sigma calibration (pairspec.calibration) of val predictions against the val twins' labels."""
    return fit_calibration(pred, sigma, twins.val.labels, snr=np.asarray(twins.val.snr),
                           star=np.asarray(twins.val.star_index), label_names=twins.schema.names,
                           label_err=getattr(twins.val, "label_err", None))


def val_sigma(pred, twins) -> dict:
    return dict(zip(twins.schema.names, robust_std(pred - twins.val.labels).tolist()))


def write_metrics(run: RunContext, record: dict) -> None:
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def save_last(run: RunContext, model, meta, opt: Optimisation, state: dict) -> None:
    train_state = {"optimizer": opt.optimizer.state_dict(), "scheduler": opt.scheduler.state_dict(),
                   "torch_rng": torch.get_rng_state(), **state}
    if run.device.type == "cuda":  # drop_path draws on the GPU generator
        train_state["cuda_rng"] = torch.cuda.get_rng_state(run.device)
    if opt.average is not None:
        train_state["ema"] = opt.average.state
    info = {"epoch": state["epoch"], "step": state["step"]}
    save_checkpoint(run.run_dir / "last.pt", model.state_dict(), meta | info, train_state)


def _version() -> str:
    from pairspec import __version__

    return __version__


def __getattr__(name: str):
    # step-level names kept importable from pairspec.train (benchmarks, older scripts)
    if name == "_physical":
        return physical
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

