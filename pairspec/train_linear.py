"""`model.preset: ridge`: the linear baseline fitted in closed form on the same twins TSN trains on
(pairspec.models.ridge), saved as a checkpoint that predict, evaluate --compare and LabelPredictor read
like any other; its sigma comes from the same two-part calibration on the val split."""

from __future__ import annotations

import numpy as np
import torch

from pairspec.checkpoint import save_checkpoint
from pairspec.config import save_resolved, to_dict


def fit_linear(config, run, twins):
    from pairspec.models.ridge import RidgeLabelModel, fit_ridge
    from pairspec.train import _version, adapter_options, calibrate
    from pairspec.train_loop import _val_loader
    from pairspec.train_steps import physical, predict_twins

    if twins.streaming:
        raise ValueError("model.preset ridge needs the train twins in memory: set data.stream: false")
    if run.world > 1:
        raise ValueError("model.preset ridge runs in one process (it is a closed-form fit), not under torchrun")
    stats = twins.stats
    mean, std = np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)
    y = (np.asarray(twins.train.labels, np.float64) - mean) / std
    y_val = (np.asarray(twins.val.labels, np.float64) - mean) / std
    W, b, alphas = fit_ridge(twins.train.x[:, 0], y, twins.val.x[:, 0], y_val)
    model = RidgeLabelModel(twins.n_pix, len(twins.schema))
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(W))
        model.linear.bias.copy_(torch.from_numpy(b))
    model = model.to(run.device)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(config, run.run_dir / "config.yaml")
    meta = dict(preset="ridge", model_class="ridge", model_kwargs={"n_pix": twins.n_pix, "n_labels": len(twins.schema)},
                config=to_dict(config), schema=twins.schema.to_dict(), grid=twins.grid.to_dict(),
                label_stats=stats.to_dict(), label_names=twins.schema.names, label_units=twins.schema.units,
                label_lo=np.asarray(stats.lo).tolist(), label_hi=np.asarray(stats.hi).tolist(),
                n_model_pix=twins.n_pix, n_parameters=int(W.size + b.size), pairspec_version=_version(),
                calibration=None, ridge_alpha=alphas, epoch=0, step=0, adapter_options=adapter_options(config))
    val = predict_twins(model, _val_loader(twins, 256, 0), run.device, run.amp, config.train)
    if val["n"]:
        pred, sigma = physical(val, stats)
        meta["calibration"] = calibrate(pred, sigma, twins)
        meta["metrics"] = {"val_sigma": dict(zip(twins.schema.names, np.nanstd(pred - twins.val.labels, 0).tolist()))}
    best = run.run_dir / "best.pt"
    save_checkpoint(best, model.state_dict(), meta)
    return best
