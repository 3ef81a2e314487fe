"""What a backbone's weights expect of an image, as one typed, immutable value.

Produced once per backbone (timm's data config with the weights' own overrides, models/backbones/loader.py),
adapted by functions that return a new value (`whole_image` for thumbnails), saved with a trained model as JSON,
and read back with `Preprocessing.from_dict`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int, int]  # (channels, height, width) the network takes
    interpolation: str = "bicubic"  # resize filter
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN  # normalisation of pixels scaled to 0..1
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    crop_pct: float = 0.875  # resize to side / crop_pct, then centre-crop to side (1.0: the whole image)
    crop_mode: str = "center"

    @classmethod
    def from_dict(cls, values: Mapping) -> Preprocessing:
        """From timm's data config or a saved model.json (lists become tuples; other keys are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {key: tuple(value) if isinstance(value, list | tuple) else value
                for key, value in values.items() if key in known}
        if "mean" in kept:
            kept["mean"] = tuple(float(v) for v in kept["mean"])
        if "std" in kept:
            kept["std"] = tuple(float(v) for v in kept["std"])
        return cls(**kept)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def side(self) -> int:
        return self.input_size[-1]

    def whole_image(self) -> Preprocessing:
        """The same without the centre crop: the whole image is resized to the input size."""
        return dataclasses.replace(self, crop_pct=1.0)
