"""Self-describing TSN checkpoints: weights plus everything needed to use them.

File layout (torch.save of plain Python types and tensors only, so loading uses weights_only=True
and never unpickles arbitrary objects):

    {"format": "pairspec-tsn", "format_version": 1,
     "model_state": state_dict,
     "meta": {preset, model_kwargs, config, schema, grid, label_stats, calibration, label_names,
              label_units, label_lo, label_hi, n_model_pix, n_parameters, pairspec_version,
              epoch, step, metrics},
     "train_state": {optimizer, scheduler, epoch, batch_in_epoch, step, best_val, rng} (last.pt)}
"""

from __future__ import annotations

import os
from pathlib import Path

FORMAT = "pairspec-tsn"
FORMAT_VERSION = 1


def plain(obj):
    """numpy arrays/scalars -> lists/Python numbers, recursively (weights_only-safe)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(path, model_state: dict, meta: dict, train_state: dict | None = None) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves a half-written checkpoint."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_state": model_state,
               "meta": plain(meta)}
    if train_state is not None:
        payload["train_state"] = train_state
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two savers never share one
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb+") as fh:  # on disk before the rename, so a power cut cannot leave a torn file
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _read(path, map_location="cpu") -> dict:
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a checkpoint file")
    try:
        # weights_only: plain types and tensors only; a pickle that would build any other object (and so
        # could run code) is refused by torch before anything of it executes
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError, KeyError, IndexError,
            TypeError, AttributeError, UnicodeDecodeError, MemoryError) as err:
        # torch raises all of these for a truncated, text or foreign file (a text file: KeyError)
        raise ValueError(f"{path}: not a readable pairspec checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pairspec TSN checkpoint (format {payload.get('format')!r})"
                         if isinstance(payload, dict) else f"{path}: not a pairspec TSN checkpoint")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {payload['format_version']} is newer than this "
                         f"pairspec reads ({FORMAT_VERSION}); upgrade pairspec")
    if not isinstance(payload.get("meta"), dict) or not isinstance(payload.get("model_state"), dict):
        raise ValueError(f"{path}: a pairspec checkpoint without its 'meta' or 'model_state' (damaged)")
    return payload


def read_meta(path) -> dict:
    """The checkpoint's metadata dict (no model built)."""
    return _read(path)["meta"]


def read_train_state(path, map_location="cpu") -> tuple[dict, dict, dict | None]:
    """(model_state, meta, train_state or None) for resuming a run."""
    payload = _read(path, map_location)
    return payload["model_state"], payload["meta"], payload.get("train_state")


def load_checkpoint(path, map_location="cpu"):
    """-> (TwinSpecNet in eval mode with the saved weights, meta dict)."""
    from pairspec.models.registry import build_model

    payload = _read(path, map_location)
    meta = payload["meta"]
    try:
        model = build_model(meta)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: the checkpoint's model description cannot be built ({err})") from err
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the saved model description ({err})") from err
    return model.eval(), meta
