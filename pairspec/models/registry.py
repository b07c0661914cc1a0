"""Build the model a checkpoint describes: its meta["model_class"] ("tsn", the default, or "ridge") and
meta["model_kwargs"]."""

from __future__ import annotations


def build_model(meta: dict):
    kind = meta.get("model_class", "tsn")
    kwargs = dict(meta["model_kwargs"])
    if kind == "ridge":
        from pairspec.models.ridge import RidgeLabelModel

        return RidgeLabelModel(**kwargs)
    if kind != "tsn":
        raise ValueError(f"unknown model class {kind!r} (this pairspec knows tsn and ridge)")
    from pairspec.models.tsn import TwinSpecNet

    return TwinSpecNet(**kwargs)
