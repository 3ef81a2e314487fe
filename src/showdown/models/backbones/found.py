"""What a weights file or weights package yields, as one value. Its own module, below every reader that makes one
(files.py, keras_import.py, tflite.py, loader.py), so none of them imports another to name it."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FoundWeights:
    state_dict: dict[str, torch.Tensor]
    preprocessing: dict = field(default_factory=dict)  # what these weights expect, over timm's defaults
    timm_kwargs: dict = field(default_factory=dict)  # what the architecture needs to match them
    timm_name: str | None = None  # the architecture they need, when not the backbone's own (Keras's networks)
