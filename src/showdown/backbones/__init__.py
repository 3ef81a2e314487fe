"""Backbones: every one a timm model, whatever its weight source."""
from .loader import Backbone, build_architecture, load_backbone
from .registry import SHORT_NAMES, BackboneSpec, resolve_backbone

__all__ = ["Backbone", "BackboneSpec", "SHORT_NAMES", "build_architecture", "load_backbone", "resolve_backbone"]
