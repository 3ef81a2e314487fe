"""A model ready to classify images, whatever it was (a run folder's model, an exported file): the one value
`showdown predict` and `showdown explain` take."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from showdown.data.images import eval_transform
from showdown.data.preprocessing import Preprocessing


@dataclass
class Predictor:
    """A model ready to classify images: `transform` turns each image into what `forward` takes in batches."""
    name: str
    classes: list[str]
    preprocessing: Preprocessing
    forward: Callable  # a batch of transformed images -> probabilities as a numpy array
    precision: str = "fp32"  # what the forward computes in (an exported file: what it was exported in)
    engine: str = "PyTorch"  # what runs the forward, named in predict's summary line
    transform: Callable | None = None  # PIL image -> tensor; None: the eval transform (normalised floats)
    pin_memory: bool = False  # batches decoded into page-locked memory, for a copy to a GPU beside the next batch

    def __post_init__(self):
        if self.transform is None:
            self.transform = eval_transform(self.preprocessing)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.forward(images)
