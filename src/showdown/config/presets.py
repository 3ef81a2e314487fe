"""Ready-made experiments: YAML files in the package that any flag can override; --quick shrinks them."""
from __future__ import annotations

from importlib import resources

import yaml

from showdown.errors import ConfigError

# --quick: a subset of images, few epochs, small images, so a preset finishes in minutes on 2 CPU cores.
# 112 px: a multiple of the 14- and 16-pixel patches of the ViTs (DINOv2, CLIP, DeiT), which take no other size.
QUICK = {"epochs": 2, "ft_epochs": 1, "max_per_class": 20, "image_size": 112}


def _files():
    return sorted((p for p in resources.files("showdown").joinpath("presets").iterdir() if p.name.endswith(".yaml")),
                  key=lambda p: p.name)


def list_presets() -> dict[str, str]:
    return {p.name.removesuffix(".yaml"): yaml.safe_load(p.read_text()).get("description", "") for p in _files()}


def load_preset(name: str) -> dict:
    for path in _files():
        if path.name == f"{name}.yaml":
            values = yaml.safe_load(path.read_text())
            values.pop("description", None)
            return values
    raise ConfigError(f"unknown preset '{name}'; `showdown presets` lists them ({', '.join(list_presets())})")
