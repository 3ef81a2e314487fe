"""What a weights file or weights package yields, and where it came from, as values. Their own module, below every
reader that makes one (files.py, keras_import.py, tflite.py, loader.py), so none of them imports another to name
it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from showdown.fileio import file_stamp


@dataclass
class FoundWeights:
    state_dict: dict[str, torch.Tensor]
    preprocessing: dict = field(default_factory=dict)  # what these weights expect, over timm's defaults
    timm_kwargs: dict = field(default_factory=dict)  # what the architecture needs to match them
    timm_name: str | None = None  # the architecture they need, when not the backbone's own (Keras's networks)


# kind -> how the run record and the log show it; the texts are those of the run folders written so far
_SHOWN = {
    "file": "file {}",  # an explicit weights file, or one in the weights directory
    "package": "package {}",  # an installed package that ships them
    "keras": "Keras cache {}",  # a file in Keras's weight cache
    "hf_cache": "Hugging Face cache ({})",  # timm's weights in the Hugging Face hub cache, read offline
    "hub": "timm hub {}",  # fetched by timm from the hub
    "random": "random init ({})",  # no weights; location says why
}


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's weights came from: `kind` (a key of _SHOWN) and `location` (path, package, repo id, hub
    name; why, for random init). str() is the display text of the run record; `stamp()` keys the feature cache
    (a random init is keyed by its tensors instead: frozen/weights_key.py)."""

    kind: str
    location: str

    def __post_init__(self):
        if self.kind not in _SHOWN:
            raise ValueError(f"unknown weight source kind {self.kind!r}")

    def __str__(self) -> str:
        return _SHOWN[self.kind].format(self.location)

    @property
    def pretrained(self) -> bool:
        return self.kind != "random"

    @property
    def path(self) -> Path | None:
        """The weights file on disk, for the kinds that read one by path."""
        return Path(self.location) if self.kind in ("file", "keras") else None

    def stamp(self) -> str:
        """Size and mtime of an explicit weights file, so replacing the file invalidates cached features ('' for
        the other kinds, as the feature cache has always keyed them)."""
        path = Path(self.location)
        return file_stamp(path) if self.kind == "file" and path.is_file() else ""


RANDOM_NO_PRETRAINED = WeightSource("random", "--no-pretrained")
RANDOM_NONE_FOUND = WeightSource("random", "no weights found")
RANDOM_SCRATCH = WeightSource("random", "trained from scratch")
