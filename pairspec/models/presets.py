"""Size presets of TwinSpecNet (a timm-like registry) and the other model kinds, without importing torch:
recipes are checked against these names when they are loaded."""

PRESETS: dict[str, dict] = {
    # CPU tests and the demo
    "tsn_tiny": dict(embed_dim=64, depth=2, num_heads=2, patch_size=32),
    # the CPU demo: ~2x tiny's cost, clearly better labels on ~500-star surveys (measured, docs/recipes.md)
    "tsn_mini": dict(embed_dim=96, depth=3, num_heads=2, patch_size=32),
    # a laptop / single small GPU
    "tsn_small": dict(embed_dim=192, depth=6, num_heads=3, patch_size=16),
    # full surveys on a GPU
    "tsn_base": dict(embed_dim=384, depth=12, num_heads=8, patch_size=16),
}

# Models that are not TwinSpecNet presets: the linear baseline (pairspec/models/ridge.py).
OTHER_MODELS = ("ridge",)


def model_names() -> list[str]:
    """Every name model.preset accepts."""
    return sorted(PRESETS) + list(OTHER_MODELS)
