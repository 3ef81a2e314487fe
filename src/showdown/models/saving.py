"""Save a trained classifier as safetensors plus a JSON sidecar, and load it back without pickle."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from showdown.config.strategy import SMALL_CNN_MODEL
from showdown.errors import ModelError, one_line
from showdown.fileio import write_bytes_atomic, write_json
from showdown.models.backbones import build_architecture
from showdown.models.classifier import Head, ImageClassifier
from showdown.models.small_cnn import SmallCNN
from showdown.run_schema import MODEL_INFO, MODEL_WEIGHTS, ModelInfo


def save_model(model: ImageClassifier, directory: Path, info: ModelInfo) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # loads without a GPU
    # serialised in memory: a full disk is then an OSError with its errno (fileio), not safetensors' own error
    write_bytes_atomic(directory / MODEL_WEIGHTS, save(state, metadata={"format": "tl-showdown/1"}),
                       "the trained model")
    write_json(directory / MODEL_INFO, info.to_dict())


def load_model(directory: Path) -> tuple[ImageClassifier, ModelInfo]:
    sidecar, weights = directory / MODEL_INFO, directory / MODEL_WEIGHTS
    if not sidecar.is_file() or not weights.is_file():
        raise ModelError(f"{directory} holds no saved model ({MODEL_WEIGHTS} + {MODEL_INFO})")
    try:
        info = ModelInfo.from_dict(json.loads(sidecar.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not JSON, or not a model's description
        raise ModelError(f"{sidecar} is damaged ({one_line(exc)}); train the model again or restore the file") from exc
    if info.backbone == SMALL_CNN_MODEL:
        backbone = SmallCNN()
    else:
        backbone = build_architecture(info.backbone, info.timm_kwargs, info.pool_stages, info.timm_name)
    head = Head(info.head.in_features, len(info.classes), info.head.hidden, info.head.dropout, info.head.batch_norm)
    model = ImageClassifier(backbone, head, info.tta)
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as exc:  # safetensors' own error for a cut or foreign file; torch's RuntimeError for a mismatch
        raise ModelError(f"{weights} is damaged or does not match {MODEL_INFO} ({one_line(exc)}); train the model "
                         "again or restore the file") from exc
    # bytes overwritten inside the tensors load all the same; NaN in them gives NaN, or (through OpenVINO's clamps)
    # plausible-looking scores
    if not all(torch.isfinite(tensor).all() for tensor in state.values() if tensor.is_floating_point()):
        raise ModelError(f"{weights} holds NaN or infinite weights: it is damaged; train the model again or restore "
                         "the file")
    return model.eval(), info
