"""Backbones: every one a timm model, whatever its weight source."""
from showdown.models.backbones.loader import Backbone, build_architecture, load_backbone
from showdown.models.backbones.registry import (
    SHORT_NAMES,
    BackboneSpec,
    resolve_backbone,
)

__all__ = ["Backbone", "BackboneSpec", "SHORT_NAMES", "build_architecture", "load_backbone", "resolve_backbone"]
