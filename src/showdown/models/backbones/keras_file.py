"""Read the tensors of a Keras weights file with h5py, never running anything from it.

Three layouts hold the same tensors:
- Keras 2 / legacy HDF5 (`save_weights('x.h5')`, `model.save('x.h5')`, the files Keras caches in
  ~/.keras/models): a group per layer whose attribute `weight_names` lists paths such as
  `conv1/kernel:0` (Keras 3 writes `conv1/kernel`); a full model nests them under `model_weights`.
- Keras 3 `.weights.h5`: `layers/<class name>/vars/0, 1, ...` (the layer's name an attribute of `vars`),
  the variables by position only.
- Keras 3 `.keras`: a zip holding that `model.weights.h5` beside `config.json`.
Each layer comes back as {kernel, bias, gamma, beta, moving_mean, moving_variance: array}. The saved
model's configuration (JSON, in full-model files only) is read for its input size and nothing else.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from showdown.errors import ModelError

# Keras 3 stores variables by position; their meaning follows from the layer's kind, told by the shapes.
_BN_4 = ("gamma", "beta", "moving_mean", "moving_variance")
_BN_3 = ("beta", "moving_mean", "moving_variance")  # BatchNormalization(scale=False), as in InceptionV3


@dataclass
class KerasWeights:
    layers: dict[str, dict[str, np.ndarray]]  # layer name -> its variables by canonical name
    input_size: int | None  # the saved model's input side, when the file records it


def read_keras_weights(path: Path) -> KerasWeights:
    import h5py

    try:
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json")) if "config.json" in archive.namelist() else None
                data = archive.read("model.weights.h5")
            with h5py.File(io.BytesIO(data), "r") as f:
                layers = _read(f)
        else:
            with h5py.File(path, "r") as f:
                text = f.attrs.get("model_config")
                config = json.loads(text) if text is not None else None
                layers = _read(f)
    except KeyError as exc:  # h5py: a layer names a weight the file does not hold
        raise ModelError(f"{path} lacks a weight one of its layers names ({str(exc).splitlines()[0][:160]})") from exc
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not a readable Keras weights file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]})") from exc
    if not layers:
        raise ModelError(f"{path} holds no Keras layer weights")
    return KerasWeights(layers, _input_side(config))


def _read(f) -> dict[str, dict[str, np.ndarray]]:
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" in root.attrs:
        return _read_legacy(root)
    if "layers" in root:
        layers: dict[str, dict[str, np.ndarray]] = {}
        _read_v3(root["layers"], layers)
        return layers
    raise KeyError("neither 'layer_names' (HDF5 weights) nor 'layers' (Keras 3 weights)")


def _read_legacy(root) -> dict[str, dict[str, np.ndarray]]:
    layers: dict[str, dict[str, np.ndarray]] = {}
    for group_name in _strings(root.attrs["layer_names"]):
        group = root[group_name]
        for weight_name in _strings(group.attrs.get("weight_names", [])):
            # 'conv1/kernel:0', or 'mobilenet_1.00_224/conv1/kernel:0' inside a nested model
            *_, layer, variable = weight_name.split("/")
            _put(layers, layer, _canonical(variable.split(":")[0]), np.asarray(group[weight_name]))
    return layers


def _read_v3(group, layers: dict) -> None:
    """Walk `layers/...` (nested models nest their own `layers`); a group with `vars` is a layer. Groups are
    named after the layer's class (conv2d_7); the layer's own name is an attribute of its `vars`."""
    for key, child in group.items():
        if "vars" in child and len(child["vars"]):
            name = _strings([child["vars"].attrs.get("name", key)])[0]
            arrays = [np.asarray(child["vars"][str(i)]) for i in range(len(child["vars"]))]
            for variable, array in zip(_positional_names(name, arrays), arrays):
                _put(layers, name, variable, array)
        if "layers" in child:
            _read_v3(child["layers"], layers)


def _positional_names(layer: str, arrays: list[np.ndarray]) -> tuple[str, ...]:
    dims = [a.ndim for a in arrays]
    if dims in ([4], [2]):
        return ("kernel",)
    if dims in ([4, 1], [2, 1]):
        return ("kernel", "bias")
    if dims == [1] * 4:
        return _BN_4
    if dims == [1] * 3:
        return _BN_3
    raise ModelError(f"Keras layer '{layer}' has variables of shapes {[a.shape for a in arrays]}, "
                     "which no convolution, dense or batch-norm layer has")


def _canonical(variable: str) -> str:
    return "kernel" if variable == "depthwise_kernel" else variable


def _put(layers: dict, layer: str, variable: str, array: np.ndarray) -> None:
    if variable in layers.setdefault(layer, {}):
        raise ModelError(f"Keras layer '{layer}' appears twice in the file (two models inside one?)")
    layers[layer][variable] = array.astype(np.float32)


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _input_side(config) -> int | None:
    """The square input side of the saved model's InputLayer, if the configuration gives one."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "InputLayer":
                inner = node.get("config", {})
                shape = inner.get("batch_shape") or inner.get("batch_input_shape") or []
                if len(shape) == 4 and shape[1] and shape[1] == shape[2]:
                    return int(shape[1])
                return None
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None
