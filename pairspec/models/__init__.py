"""Models: TwinSpecNet and its size presets (`create_model("tsn_tiny", n_pix, n_labels)`), and the linear
(ridge) baseline with the same interface. Names resolve lazily, so `import pairspec.models.presets`
(recipe checks) does not import torch."""

from __future__ import annotations

_EXPORTS = {
    "TwinSpecNet": "pairspec.models.tsn", "count_flops": "pairspec.models.tsn",
    "count_parameters": "pairspec.models.tsn", "create_model": "pairspec.models.tsn",
    "list_presets": "pairspec.models.tsn", "preset_kwargs": "pairspec.models.tsn",
    "RidgeLabelModel": "pairspec.models.ridge", "PRESETS": "pairspec.models.presets",
    "model_names": "pairspec.models.presets", "build_model": "pairspec.models.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        from importlib import import_module

        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
