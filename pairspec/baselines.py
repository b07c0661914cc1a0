"""Baselines TSN is compared against, as recipe variants that train.train runs like any other recipe:
the direct-regression network, the linear (ridge) baseline and the TSN ablations. The visit-level
pipeline baseline (an emulator fitted to each visit) is survey-specific: the survey's package provides
it (`pairspec.surveys.visit_fitter`).
"""

from __future__ import annotations

import dataclasses

# --- recipe variants trained through train.train ---------------------------------------------


def _replace_path(obj, path: str, value):
    """dataclasses.replace along a dotted path ("train.recon_weight") of frozen dataclasses."""
    head, _, rest = path.partition(".")
    if not hasattr(obj, head):
        raise AttributeError(f"config has no field {path!r} ({type(obj).__name__})")
    new = _replace_path(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: new})


def _rename(cfg, suffix: str):
    """Give a variant its own run name and output folder, derived from the base's."""
    from pathlib import Path

    for name_field in ("name", "run.name"):
        try:
            base = _get_path(cfg, name_field)
        except AttributeError:
            continue
        cfg = _replace_path(cfg, name_field, f"{base}-{suffix}")
        break
    for dir_field in ("out_dir", "run.out_dir", "train.out_dir"):
        try:
            base = _get_path(cfg, dir_field)
        except AttributeError:
            continue
        if base:  # "" means "derived from the run name", which was renamed above
            path = Path(base)
            cfg = _replace_path(cfg, dir_field, str(path.parent / f"{path.name}-{suffix}"))
        break
    return cfg


def _get_path(obj, path: str):
    for part in path.split("."):
        if not hasattr(obj, part):
            raise AttributeError(path)
        obj = getattr(obj, part)
    return obj


def baseline_recipes(base_config) -> dict:
    """Recipe variants of a TSN RunConfig: {"direct", "ridge", "tsn_no_recon", "tsn_coadd_target"}.

    direct: regression from the visit with no twin target and no reconstruction (astroNN-style);
    ridge: the linear baseline (pairspec.models.ridge) fitted on the same twins;
    tsn_no_recon: TSN without the reconstruction loss; tsn_coadd_target: TSN whose target is the
    survey's combined spectrum (contains the input visit, so its noise is correlated).
    """
    # without a reconstruction loss a decoder (model.decoder_depth, model.label_decoder) would be dead weight: none.
    # direct also trains without a weight average (train.ema): measured at demo scale (2 seeds), the
    # average made it worse in every label (log g 0.78 -> 1.12 dex), and a weakened baseline flatters TSN
    variants = {
        "direct": {"data.mode": "direct", "train.recon_weight": 0.0, "model.decoder_depth": 0,
                   "model.label_decoder": 0, "train.ema": 0.0},
        "ridge": {"model.preset": "ridge"},
        "tsn_no_recon": {"train.recon_weight": 0.0, "model.decoder_depth": 0, "model.label_decoder": 0},
        "tsn_coadd_target": {"data.mode": "coadd"},
    }
    out = {}
    for name, changes in variants.items():
        cfg = base_config
        for path, value in changes.items():
            cfg = _replace_path(cfg, path, value)
        out[name] = _rename(cfg, name.replace("_", "-"))
    return out
