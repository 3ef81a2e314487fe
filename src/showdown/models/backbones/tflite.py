"""Import a quantised TFLite MobileNet into the matching timm float architecture.

The file's convolutions come in the same order as timm's `mobilenetv2_100` / `mobilenetv1_100` convolutions
(stem, blocks, head conv; logits as a 1x1 conv). Each weight is de-quantised ((q - zero_point) * scale,
per tensor or per channel), moved from TFLite's OHWI (depthwise 1HWC) to PyTorch's OIHW, and the folded
batch norm becomes its BN layer set to identity-plus-bias. TF pads 'SAME', so the timm model is built
with pad_type='same'. Input scaling comes from the file's input quantisation, not from a guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from showdown.errors import ModelError
from showdown.models.backbones.found import FoundWeights
from showdown.models.backbones.registry import BackboneSpec

# TFLite tensor types (schema TensorType) -> numpy dtypes of their raw buffers.
_DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8, 7: np.int16, 4: np.int64}
_WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
# The MobileNet v1 embedding extractor has no classifier; its top ships as a separate file beside it.
_V1_HEAD_FILE = "mobilenet_quant_v1_224_head_layers.tflite"


@dataclass
class Layer:
    op: str
    weight: np.ndarray  # float32, PyTorch layout (OIHW, or (out, in) for fully connected)
    bias: np.ndarray | None


def _dequantize(tensor, raw: np.ndarray) -> np.ndarray:
    quant = tensor.Quantization()
    values = raw.astype(np.float32)
    if quant is None or quant.ScaleLength() == 0:
        return values
    scale = quant.ScaleAsNumpy().astype(np.float32)
    zero = quant.ZeroPointAsNumpy().astype(np.float32) if quant.ZeroPointLength() else np.zeros_like(scale)
    if scale.size > 1:  # per channel along the quantised dimension
        shape = [1] * values.ndim
        shape[quant.QuantizedDimension()] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (values - zero) * scale


def _tensor(model, graph, index: int) -> np.ndarray:
    tensor = graph.Tensors(index)
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(data, int) or tensor.Type() not in _DTYPES:
        raise ModelError(f"TFLite tensor '{tensor.Name().decode()}' has no constant data this importer can read")
    raw = np.frombuffer(data.tobytes(), dtype=_DTYPES[tensor.Type()]).reshape(tensor.ShapeAsNumpy())
    return _dequantize(tensor, raw)


TFLITE_IDENTIFIER = b"TFL3"  # a TFLite flatbuffer's file identifier, at bytes 4-8


def not_tflite(path: Path) -> str | None:
    """Why `path` is no TFLite file by its first 8 bytes (read as a flatbuffer, a foreign file gives unpacking
    arithmetic), None where it may be one."""
    with open(path, "rb") as file:
        if file.read(8)[4:] != TFLITE_IDENTIFIER:
            return (f"{path} is not a TFLite model (no {TFLITE_IDENTIFIER.decode()} identifier: another kind of file, "
                    "or the start of the file is damaged)")
    return None


DAMAGED_TFLITE = "is a damaged TFLite file (cut short or overwritten); fetch it again"


def read_tflite(path: Path) -> tuple[list[Layer], tuple[float, float]]:
    """The weight layers in graph order, and the input quantisation (scale, zero point)."""
    if why := not_tflite(path):
        raise ModelError(why)
    try:  # a flatbuffer is read where its offsets point: a damaged one fails anywhere in the walk, in any way
        return _read_tflite(path)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path} {DAMAGED_TFLITE}") from exc


def _read_tflite(path: Path) -> tuple[list[Layer], tuple[float, float]]:
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    if graph is None:  # bytes that parse as an empty flatbuffer (zeros, a truncated download)
        raise ModelError(f"{path} is not a readable TFLite file (not a TFLite flatbuffer: it holds no graph)")
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    layers = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        if name not in _WEIGHT_OPS:
            continue
        weight = _tensor(model, graph, op.Inputs(1))
        bias = _tensor(model, graph, op.Inputs(2)) if op.InputsLength() > 2 and op.Inputs(2) >= 0 else None
        if name == "CONV_2D":
            weight = weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        elif name == "DEPTHWISE_CONV_2D":
            weight = weight.transpose(3, 0, 1, 2)  # 1HWC -> C1HW
        layers.append(Layer(name, np.ascontiguousarray(weight), bias))
    quant = graph.Tensors(graph.Inputs(0)).Quantization()
    if quant is None or quant.ScaleLength() == 0:
        raise ModelError(f"{path} has a float input; only quantised MobileNet TFLite files are supported")
    return layers, (float(quant.ScaleAsNumpy()[0]), float(quant.ZeroPointAsNumpy()[0]))


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, batch-norm name) in forward order: each timm conv is followed by its BN."""
    pairs, pending = [], None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            pending = name
        elif isinstance(module, nn.BatchNorm2d) and pending:
            pairs.append((pending, name))
            pending = None
    return pairs


def tflite_sources(path: Path) -> list[Path]:
    """The files `import_tflite(path)` reads: the file, and the v1 extractor's head file beside it."""
    head_file = path.parent / _V1_HEAD_FILE
    return [path, head_file] if "embedding_extractor" in path.name and head_file.is_file() else [path]


def import_tflite(path: Path, spec: BackboneSpec) -> FoundWeights:
    layers, (scale, zero_point) = read_tflite(path)
    head_file = path.parent / _V1_HEAD_FILE
    if "embedding_extractor" in path.name and head_file.is_file():
        layers += read_tflite(head_file)[0]
    last = layers[-1].weight.shape if layers else None
    has_logits = last is not None and last[0] == 1001 and last[-1] in (1, last[1])
    classifier = layers.pop() if has_logits else None
    kwargs = {"pad_type": "same", "num_classes": classifier.weight.shape[0] if classifier else 0}
    model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    pairs = _conv_bn_pairs(model)
    if len(pairs) != len(layers):
        raise ModelError(f"{path.name} has {len(layers)} convolutions, {spec.timm_name} has {len(pairs)}: "
                         f"not the same architecture")
    state = model.state_dict()
    for (conv, bn), layer in zip(pairs, layers):
        target = state[f"{conv}.weight"]
        if tuple(target.shape) != layer.weight.shape:
            raise ModelError(f"{path.name}: layer for {conv} has shape {layer.weight.shape}, "
                             f"{spec.timm_name} expects {tuple(target.shape)}")
        state[f"{conv}.weight"] = torch.from_numpy(layer.weight)
        eps = model.get_submodule(bn).eps
        channels = target.shape[0]
        state[f"{bn}.weight"] = torch.ones(channels)
        state[f"{bn}.bias"] = torch.from_numpy(layer.bias) if layer.bias is not None else torch.zeros(channels)
        state[f"{bn}.running_mean"] = torch.zeros(channels)
        state[f"{bn}.running_var"] = torch.full((channels,), 1.0 - eps)  # sqrt(var + eps) == 1
    if classifier is not None:
        state["classifier.weight"] = torch.from_numpy(classifier.weight.reshape(classifier.weight.shape[0], -1))
        state["classifier.bias"] = torch.from_numpy(classifier.bias)
    preprocessing = {
        # real input = scale * (pixel - zero_point), i.e. timm's (pixel/255 - mean) / std
        "mean": (zero_point / 255,) * 3, "std": (1 / (scale * 255),) * 3,
        "input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.875,
    }
    return FoundWeights(state, preprocessing, kwargs)
