"""Survey adapters and their registry (entry-point group "pairspec.surveys")."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

# Built-in adapters, so the registry works from a source checkout without installed metadata.
_BUILTIN = {"apogee": "pairspec.surveys.apogee:ApogeeDR17Adapter"}


def available() -> list[str]:
    names = set(_BUILTIN)
    names.update(ep.name for ep in entry_points(group="pairspec.surveys"))
    return sorted(names)


def get_adapter(name: str, **options):
    """Instantiate the adapter registered as `name` (case-insensitive) with its options."""
    key = name.lower()
    eps = {ep.name: ep for ep in entry_points(group="pairspec.surveys")}
    if key in eps:
        cls = eps[key].load()
    elif key in _BUILTIN:
        mod, attr = _BUILTIN[key].split(":")
        cls = getattr(import_module(mod), attr)
    else:
        raise KeyError(f"unknown survey {name!r}; available: {', '.join(available())}")
    return cls(**options)
