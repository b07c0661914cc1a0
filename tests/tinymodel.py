"""A tiny TSN checkpoint (random weights, 2 labels) on fake_survey.MODEL_GRID, for predict tests that need a
real model (subprocesses, Dask workers) rather than a fake predictor."""

from __future__ import annotations

import numpy as np
from fake_survey import MODEL_GRID

from pairspec import data
from pairspec.checkpoint import save_checkpoint
from pairspec.models import create_model, preset_kwargs
from pairspec.surveys.apogee.layout import APOGEE_CORE_SCHEMA

SCHEMA = APOGEE_CORE_SCHEMA.subset(["teff", "logg"])


def make_checkpoint(path, seed: int = 0, grid=MODEL_GRID):
    import torch

    n_pix = data.model_pixels(grid).size
    kwargs = preset_kwargs("tsn_tiny", n_pix, 2, depth=1)
    torch.manual_seed(seed)
    model = create_model("tsn_tiny", **kwargs)
    stats = data.LabelStats(mean=np.array([5000.0, 3.0], np.float32), std=np.array([500.0, 1.0], np.float32),
                            lo=np.array([3500.0, 0.5], np.float32), hi=np.array([7000.0, 5.0], np.float32))
    meta = dict(preset="tsn_tiny", model_kwargs=kwargs, config={}, schema=SCHEMA.to_dict(), grid=grid.to_dict(),
                label_stats=stats.to_dict(), label_names=SCHEMA.names, label_lo=[3500.0, 0.5],
                label_hi=[7000.0, 5.0], n_model_pix=n_pix, calibration=None, pairspec_version="test",
                epoch=1, step=10, n_parameters=1)
    save_checkpoint(path, model.state_dict(), meta)
    return path
