"""Backbones: every one a timm model, whatever its weight source.

The registry of short names imports no timm, so `showdown models` starts at once; the loader (timm, torch) is
imported on first use of its names.
"""
from showdown.models.backbones.registry import SHORT_NAMES, BackboneSpec, resolve_backbone

__all__ = ["Backbone", "BackboneSpec", "SHORT_NAMES", "build_architecture", "load_backbone", "resolve_backbone",
           "weights_missing"]
_LOADER = ("Backbone", "build_architecture", "load_backbone", "weights_missing")


def __getattr__(name: str):
    if name in _LOADER:
        from showdown.models.backbones import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
