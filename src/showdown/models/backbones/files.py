"""Read a user's weights file safely: safetensors, a PyTorch checkpoint with weights_only=True, a TFLite
MobileNet, or Keras HDF5 / .keras weights (read with h5py, nothing in them is run). The last two are imported
once and then read from the cache folder (imported.py)."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file

from showdown.errors import ModelError
from showdown.models.backbones import efficientnet_lite
from showdown.models.backbones.found import FoundWeights
from showdown.models.backbones.imported import cached_import
from showdown.models.backbones.registry import BackboneSpec


def load_weights_file(path: Path, spec: BackboneSpec) -> FoundWeights:
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        from showdown.models.backbones.tflite import (
            import_tflite,  # needs the TFLite reader only when used
            tflite_sources,
        )

        return cached_import(tflite_sources(path), spec, lambda: import_tflite(path, spec))
    if suffix in {".h5", ".hdf5", ".keras"}:
        from showdown.models.backbones.keras_import import (
            import_keras,  # needs h5py only when used
        )

        return cached_import([path], spec, lambda: import_keras(path, spec))
    if suffix == ".safetensors":
        try:
            return FoundWeights(load_file(str(path)))
        except Exception as exc:
            raise ModelError(f"{path} is not a readable safetensors file ({exc})") from exc
    if suffix in {".pth", ".pt", ".bin", ".ckpt"}:
        state = _unwrap(load_torch_checkpoint(path))
        # EfficientNet-PyTorch's layout (the efficientnet-lite packages' own file): timm's keys, their scaling
        return (spec.package and efficientnet_lite.found_weights(state, spec.timm_name, spec.timm_kwargs)) or \
            FoundWeights(state)
    raise ModelError(f"unsupported weights file type '{suffix}' for {path}: use .safetensors, .pth, .tflite, "
                     "or Keras .h5 / .keras")


def load_torch_checkpoint(path: Path):
    """torch.load that never runs code from the file: a pickle needing arbitrary objects is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(
            f"{path} needs arbitrary code to load and was refused (only plain tensors are accepted); "
            "re-save it as a state dict or safetensors"
        ) from exc
    except Exception as exc:
        raise ModelError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__})") from exc


def _unwrap(checkpoint) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual training-checkpoint wrappers around one."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ModelError("the weights file does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}
