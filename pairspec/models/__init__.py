"""TwinSpecNet and its size presets. `create_model("tsn_tiny", n_pix, n_labels)`."""

from pairspec.models.tsn import (
    PRESETS,
    TwinSpecNet,
    count_flops,
    count_parameters,
    create_model,
    list_presets,
    preset_kwargs,
)

__all__ = [
    "PRESETS",
    "TwinSpecNet",
    "count_flops",
    "count_parameters",
    "create_model",
    "list_presets",
    "preset_kwargs",
]
