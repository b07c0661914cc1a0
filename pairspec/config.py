"""Run configuration: frozen dataclasses, filled from a recipe YAML that only overrides fields.

An unknown key at any level is a ConfigError naming the key and the file; a value of the wrong type
is a ConfigError naming the key, the file, the expected type and the value. Relative paths in a
recipe (data.store, run.out_dir) are resolved against the CURRENT WORKING DIRECTORY at load time,
not against the recipe's folder, so `pairspec train recipes/demo.yaml` run from the repository root
finds the demo store under `demo/` there. URLs (anything with "://") are left as they are.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class RunSection:
    name: str = "tsn"
    out_dir: str = ""  # the run's folder; "" means runs/<name> under the working directory
    seed: int = 0


@dataclass(frozen=True)
class DataSection:
    store: str = ""  # required: the pair store path or fsspec URL
    mode: str = "loo"  # twin target: "loo" leave-one-out coadd, "coadd" survey combined, "direct"
    min_visits: int = 2
    labels: tuple[str, ...] | None = None  # subset of the store schema names; None = all
    max_stars: int | None = None
    val_split: str = "val"
    stream: bool = False  # stream train twins from the store (bounded memory) instead of holding them all
    shuffle_buffer: int = 4096  # streaming: twins held in the shuffle buffer (plus one chunk being read)
    stream_chunk_stars: int = 64  # streaming: stars read at a time (one chunk)
    stream_val_twins: int = 2048  # streaming: cap on the in-memory validation twins


@dataclass(frozen=True)
class ModelSection:
    preset: str = "tsn_tiny"
    patch_size: int | None = None  # None = the preset's value
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None  # must divide embed_dim
    drop_path: float = 0.0
    embed: str = "conv"  # patch embedding: "conv" (one map shared by every patch) or "local" (one per patch)
    # labels from the label token ("token"), one token per label ("per_label") or a map of every token ("flat")
    label_head: str = "token"
    decoder_depth: int = 0  # transformer blocks between the encoder and the reconstruction head
    linear_readout: int = 0  # rank of a linear readout of every patch token added to the label means (0 = off)
    readout_detach: bool = False  # the readout's gradient does not reach the encoder (a probe trained alongside)
    readout_hidden: int = 0  # a hidden GELU layer of this width in the readout (0 = linear); needs linear_readout
    label_decoder: int = 0  # reconstruct from the labels with an MLP of this width (0 = from the tokens)
    ridge_path: bool = False  # add a fixed ridge regression of the pixels (fitted on the train twins) to the label means


@dataclass(frozen=True)
class TrainSection:
    epochs: int = 10
    batch_size: int = 64  # GLOBAL batch: split evenly over DDP ranks
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.05
    recon_weight: float = 1.0
    label_weight: float = 1.0
    label_loss: str = "nll"  # "nll", "beta_nll" (with beta_nll), "mse_var" (MSE mean, variance on detached residuals)
    beta_nll: float = 0.5
    recon_loss: str = "mse"  # "mse" (ivar-weighted mean square) or "chi2" (chi^2 per pixel against the target)
    # per-label multipliers of the label loss, e.g. {mg_fe: 3}; labels not named keep 1 (docs/recipes.md)
    label_weights: dict[str, float] | None = None
    augment: float = 0.0  # fraction of each batch's inputs replaced by its target degraded to a visit's S/N
    ema: float = 0.0  # decay of an exponential moving average of the weights (0 = off); validation uses it
    # after training, refit the val labels through the label decoder and keep a per-label/S/N-bin mix of the
    # network's and the refitted labels, which prediction then applies (pairspec.refit; needs model.label_decoder)
    refit: bool = True
    # what the denoised product's decoder learns from: "survey" (the label decoder trained with the network,
    # on the survey's labels) or "network" (after the epochs, a second decoder learns the network's own
    # star-level labels for decoder_epochs epochs: pairspec.product_decoder; needs model.label_decoder)
    decoder_labels: str = "survey"
    decoder_epochs: int = 30
    decoder_width: int | None = None  # that decoder's hidden width (None = model.label_decoder's)
    init_from: str | None = None  # checkpoint to start from (fine-tuning); its model must match
    grad_clip: float = 1.0  # 0 = off
    device: str = "auto"  # auto, cpu, cuda, cuda:1 ...
    bf16: bool | str = "auto"  # auto = on for CUDA, off on CPU
    compile: bool = False
    num_workers: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (schedule unchanged)
    time_limit_min: float | None = None  # stop at the first epoch end after this many minutes (schedule unchanged)
    eval_every: int = 1  # epochs between validations
    resume: bool = True
    max_nonfinite: int = 20  # consecutive skipped (non-finite) steps before giving up


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) if self.run.out_dir else Path("runs") / self.run.name


CHOICES = {
    ("data", "mode"): ("loo", "coadd", "direct"),
    ("data", "val_split"): ("train", "val", "test"),
    ("train", "bf16"): (True, False, "auto"),
    ("train", "label_loss"): ("nll", "beta_nll", "mse_var"),
    ("train", "recon_loss"): ("mse", "chi2"),
    ("train", "decoder_labels"): ("survey", "network"),
    ("model", "embed"): ("conv", "local"),
    ("model", "label_head"): ("token", "flat", "per_label"),
}
PATH_FIELDS = (("data", "store"), ("run", "out_dir"), ("train", "init_from"))
# value rules: (section, field) -> (test of a non-None value, what it must be)
RULES = {
    ("run", "name"): (lambda v: bool(v.strip()), "a non-empty name"),
    ("data", "min_visits"): (lambda v: v >= 1, ">= 1"),
    ("data", "labels"): (lambda v: len(v) >= 1 and len(set(v)) == len(v), "a non-empty list of distinct label names"),
    ("data", "max_stars"): (lambda v: v >= 1, ">= 1 (or null for all)"),
    ("data", "shuffle_buffer"): (lambda v: v >= 1, ">= 1"),
    ("data", "stream_chunk_stars"): (lambda v: v >= 1, ">= 1"),
    ("data", "stream_val_twins"): (lambda v: v >= 1, ">= 1"),
    ("model", "patch_size"): (lambda v: v >= 1, ">= 1 pixels"),
    ("model", "embed_dim"): (lambda v: v >= 1, ">= 1"),
    ("model", "depth"): (lambda v: v >= 1, ">= 1"),
    ("model", "num_heads"): (lambda v: v >= 1, ">= 1"),
    ("model", "drop_path"): (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("model", "decoder_depth"): (lambda v: v >= 0, ">= 0"),
    ("model", "linear_readout"): (lambda v: v >= 0, ">= 0"),
    ("model", "readout_hidden"): (lambda v: v >= 0, ">= 0"),
    ("model", "label_decoder"): (lambda v: v >= 0, ">= 0"),
    ("train", "epochs"): (lambda v: v >= 1, ">= 1"),
    ("train", "decoder_epochs"): (lambda v: v >= 1, ">= 1"),
    ("train", "decoder_width"): (lambda v: v >= 1, ">= 1 (or null: the label decoder's width)"),
    ("train", "batch_size"): (lambda v: v >= 1, ">= 1"),
    ("train", "lr"): (lambda v: v > 0, "> 0"),
    ("train", "weight_decay"): (lambda v: v >= 0, ">= 0"),
    ("train", "warmup_frac"): (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("train", "min_lr_frac"): (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("train", "recon_weight"): (lambda v: v >= 0, ">= 0"),
    ("train", "label_weight"): (lambda v: v >= 0, ">= 0"),
    ("train", "label_weights"): (lambda v: len(v) >= 1 and all(w >= 0 and math.isfinite(w) for w in v.values()),
                                 "a non-empty mapping of label name to a weight >= 0"),
    ("train", "beta_nll"): (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("train", "augment"): (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("train", "ema"): (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("train", "grad_clip"): (lambda v: v >= 0, ">= 0 (0 = off)"),
    ("train", "num_workers"): (lambda v: v >= 0, ">= 0"),
    ("train", "max_steps"): (lambda v: v >= 1, ">= 1 (or null)"),
    ("train", "time_limit_min"): (lambda v: v > 0, "> 0 minutes (or null)"),
    ("train", "eval_every"): (lambda v: v >= 1, ">= 1"),
    ("train", "max_nonfinite"): (lambda v: v >= 1, ">= 1"),
    ("train", "device"): (lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                          "auto, cpu, cuda or cuda:N"),
}


def load_recipe(path, overrides: typing.Iterable[str] = ()) -> RunConfig:
    """Recipe YAML (+ "section.field=value" overrides) -> RunConfig."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such recipe")
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a recipe file (recipes/*.yaml are examples)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file, so not a recipe ({err.reason} at byte {err.start})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    config = from_dict(raw, source=str(path))
    return apply_overrides(config, overrides, source=f"{path} (--set override)")


def apply_overrides(config: RunConfig, overrides: typing.Iterable[str], source: str = "--set override") -> RunConfig:
    """Apply "section.field=value" strings (value parsed as YAML) with the same checks as a recipe."""
    import yaml

    raw = to_dict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2:
            raise ConfigError(f"override {item!r}: expected section.field=value, e.g. train.epochs=3")
        if parts[0] not in raw:
            raise ConfigError(f"override {item!r}: unknown key {parts[0]!r}; sections: {', '.join(raw)}")
        try:
            raw[parts[0]][parts[1]] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            problem = str(getattr(err, "problem", None) or err).strip()
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote text, "
                              "write lists as [a, b]") from err
    return from_dict(raw, source=source)


def from_dict(raw: dict, source: str = "<dict>") -> RunConfig:
    """Nested dict -> RunConfig, checking every key and type."""
    sections = {}
    hints = typing.get_type_hints(RunConfig)
    for name, value in raw.items():
        if name not in hints:
            raise ConfigError(f"{source}: unknown key {name!r}; sections: {', '.join(hints)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name!r} must be a mapping of fields, got {value!r}")
        sections[name] = _build_section(hints[name], name, value, source)
    config = RunConfig(**sections)
    _check_whole(config, source)
    return config


def _check_whole(config: RunConfig, source: str) -> None:
    """Rules between fields (each field's own rules ran in _build_section)."""
    t, m = config.train, config.model
    if t.recon_weight == 0 and t.label_weight == 0:
        raise ConfigError(f"{source}: train.recon_weight and train.label_weight are both 0: nothing to learn")
    if m.embed_dim is not None and m.num_heads is not None and m.embed_dim % m.num_heads:
        raise ConfigError(f"{source}: model.num_heads {m.num_heads} does not divide model.embed_dim {m.embed_dim}")
    if t.decoder_labels == "network" and not m.label_decoder:
        raise ConfigError(f"{source}: train.decoder_labels: network trains a second label decoder for the denoised "
                          "product and needs model.label_decoder > 0 (its width)")
    if t.decoder_labels == "network" and config.data.stream:
        raise ConfigError(f"{source}: train.decoder_labels: network reads the train twins in memory after the epochs; "
                          "with data.stream set it to survey (the label decoder then makes the denoised product)")
    from pairspec.models.presets import model_names

    if m.preset not in model_names():
        raise ConfigError(f"{source}: model.preset {m.preset!r} is unknown; presets: {', '.join(model_names())}")


def _build_section(cls, section: str, raw: dict, source: str):
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        where = f"{section}.{key}"
        if key not in hints:
            raise ConfigError(f"{source}: unknown key {where!r}; {section} fields: {', '.join(hints)}")
        value = _coerce(value, hints[key], where, source)
        choices = CHOICES.get((section, key))
        if choices is not None and value not in choices:
            raise ConfigError(f"{source}: {where} must be one of {choices}, got {value!r}")
        rule = RULES.get((section, key))
        if rule is not None and value is not None and not rule[0](value):
            raise ConfigError(f"{source}: {where} must be {rule[1]}, got {value!r}")
        if (section, key) in PATH_FIELDS and value and "://" not in value:
            value = str(Path(value).expanduser().resolve())  # relative to the working directory
        values[key] = value
    return cls(**values)


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value, hint, where: str, source: str):
    """Check `value` against a field type (int, float, str, bool, tuple[str, ...], unions)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: {where} must be {_type_name(hint)}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
    elif origin is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
            return {k: float(v) for k, v in value.items()}
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads 2e-3 without a dot as a string; it is plainly a number here.
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{source}: {where} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    if typing.get_origin(hint) is dict:
        return "a mapping of names to numbers"
    return hint.__name__


def to_dict(config: RunConfig) -> dict:
    """Plain nested dict (tuples as lists) -- YAML/JSON/torch.save friendly."""
    out = dataclasses.asdict(config)
    for section in out.values():
        for key, value in section.items():
            if isinstance(value, tuple):
                section[key] = list(value)
    return out


# What may change when a run is resumed: where things are and how the work is run, not what is learned.
RESUMABLE_CHANGES = {("run", "name"), ("run", "out_dir"), ("data", "store"), ("train", "resume"),
                     ("train", "device"), ("train", "bf16"), ("train", "compile"), ("train", "num_workers"),
                     ("train", "max_steps"), ("train", "time_limit_min"), ("train", "eval_every")}


def recipe_changes(config: RunConfig, saved_yaml) -> list[str]:
    """'section.field: old -> new' for every field where `config` differs from the resolved recipe saved
    in a run folder (config.yaml), other than RESUMABLE_CHANGES. Fields the saved file lacks (a run of an
    older pairspec) count as their defaults."""
    import yaml

    saved = yaml.safe_load(Path(saved_yaml).read_text()) or {}
    now = yaml.safe_load(yaml.safe_dump(to_dict(config), sort_keys=False))
    default = yaml.safe_load(yaml.safe_dump(to_dict(RunConfig()), sort_keys=False))
    changes = []
    for section, fields in now.items():
        for key, value in fields.items():
            if (section, key) in RESUMABLE_CHANGES:
                continue
            old = (saved.get(section) or {}).get(key, default[section][key])
            if old != value:
                changes.append(f"{section}.{key}: {old!r} -> {value!r}")
    return changes


def save_resolved(config: RunConfig, path) -> Path:
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path
