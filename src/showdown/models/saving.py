"""Save a trained classifier as safetensors plus a JSON sidecar, and load it back without pickle."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save

from showdown.config.strategy import SMALL_CNN_MODEL
from showdown.errors import ModelError
from showdown.fileio import write_bytes_atomic, write_json
from showdown.models.backbones import build_architecture
from showdown.models.classifier import Head, ImageClassifier
from showdown.models.small_cnn import SmallCNN


def save_model(model: ImageClassifier, directory: Path, info: dict) -> None:
    """info: classes, backbone, timm_kwargs, weights_source, preprocessing, head (in_features, hidden, ...)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # loads without a GPU
    # serialised in memory: a full disk is then an OSError with its errno (fileio), not safetensors' own error
    write_bytes_atomic(directory / "model.safetensors", save(state, metadata={"format": "tl-showdown/1"}),
                       "the trained model")
    write_json(directory / "model.json", info)


def load_model(directory: Path) -> tuple[ImageClassifier, dict]:
    sidecar, weights = directory / "model.json", directory / "model.safetensors"
    if not sidecar.is_file() or not weights.is_file():
        raise ModelError(f"{directory} holds no saved model (model.safetensors + model.json)")
    info = json.loads(sidecar.read_text())
    if info["backbone"] == SMALL_CNN_MODEL:
        backbone = SmallCNN()
    else:
        backbone = build_architecture(info["backbone"], info["timm_kwargs"], info.get("pool_stages", 0),
                                      info.get("timm_name"))
    head_cfg = info["head"]
    head = Head(head_cfg["in_features"], len(info["classes"]), head_cfg["hidden"], head_cfg["dropout"],
                head_cfg["batch_norm"])
    model = ImageClassifier(backbone, head, info.get("tta", "none"))
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), info
