"""Exported files as Predictors: ONNX in ONNX Runtime, TorchScript in PyTorch, TFLite in LiteRT's interpreter,
each with the class names and preprocessing `showdown export` wrote into it (its tl-showdown metadata entry),
checked, so that a damaged or edited entry is one line naming the file."""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from showdown.data.preprocessing import Preprocessing
from showdown.deploy.litert_quiet import stderr_lines_dropped
from showdown.deploy.predictor import Predictor
from showdown.deploy.trained import METADATA_KEY, read_tflite_metadata
from showdown.errors import ConfigError, ModelError, one_line
from showdown.models.backbones.tflite import not_tflite
from showdown.precision import autocast


def _metadata(text: str | None, path: Path) -> dict:
    if not text:
        raise ModelError(f"{path} carries no tl-showdown metadata (classes, preprocessing); export it with "
                         "`showdown export`")
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"{path}: its tl-showdown metadata is damaged ({one_line(exc)}); export it again") from exc
    missing = [key for key in ("name", "classes", "preprocessing") if not isinstance(info, dict) or key not in info]
    if missing:
        raise ModelError(f"{path}: its tl-showdown metadata lacks {', '.join(missing)}; export it again")
    classes = info["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes):
        raise ModelError(f"{path}: its tl-showdown metadata's classes are not a list of names; export it again")
    try:
        info["preprocessing"] = Preprocessing.from_dict(info["preprocessing"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # not a mapping, or of the wrong fields
        raise ModelError(f"{path}: its tl-showdown metadata's preprocessing is damaged ({one_line(exc)}); "
                         "export it again") from exc
    return info


def _exported(info: dict, forward: Callable, path: Path, precision: str, engine: str) -> Predictor:
    """An exported file's Predictor, its forward checked to give a score for each class its metadata names (an
    edited metadata entry is one line, not an IndexError in the middle of the rows)."""
    classes = info["classes"]

    def checked(images):
        probs = forward(images)
        if probs.shape[-1] != len(classes):
            raise ModelError(f"{path} gives {probs.shape[-1]} class scores, and its tl-showdown metadata names "
                             f"{len(classes)} classes; export it again")
        return probs

    return Predictor(info["name"], classes, info["preprocessing"], checked, precision, engine)


def open_onnx(path: Path) -> Predictor:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a bad file
        # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from PATH failed:Protobuf parsing failed.": the end
        said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{path} is not a valid ONNX model: {said.rpartition(' failed:')[2].strip()}") from exc
    info = _metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
    input_name = session.get_inputs()[0].name

    def forward(images):
        return session.run(None, {input_name: images.numpy().astype(np.float32)})[0]

    return _exported(info, forward, path, "fp32", "ONNX Runtime")


def open_torchscript(path: Path, device: torch.device, precision: str) -> Predictor:
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as exc:  # its first sentence: the rest is torch's guess about checkpoints
        raise ModelError(f"{path} is not a TorchScript model: {str(exc).splitlines()[0].split('. ')[0]}") from exc
    info = _metadata(extra[f"{METADATA_KEY}.json"], path)

    def forward(images):
        with torch.inference_mode(), autocast(precision, device.type):
            return module(images.to(device)).float().cpu().numpy()  # exported models output probabilities

    return _exported(info, forward, path, precision, "PyTorch")


def open_tflite(path: Path) -> Predictor:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ConfigError(f"{path.name}: running a .tflite file needs LiteRT: pip install 'tl-showdown[tflite]'") \
            from None

    if why := not_tflite(path):
        raise ModelError(why)
    try:
        text = read_tflite_metadata(path)
        with stderr_lines_dropped():
            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
    except Exception as exc:  # its identifier is right: the flatbuffer's offsets point past its end, or anywhere
        raise ModelError(f"{path} is a damaged TFLite model (cut short or overwritten); export it again") from exc
    info = _metadata(text, path)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def forward(images):
        rows = []
        for image in images.permute(0, 2, 3, 1).numpy():  # the file takes NHWC, one image at a time
            interpreter.set_tensor(source["index"], _quantized(image[None], source))
            interpreter.invoke()
            out = interpreter.get_tensor(target["index"])
            scale, zero = target["quantization"]
            rows.append((out.astype(np.float32) - zero) * scale if scale else out.astype(np.float32))
        return np.concatenate(rows)

    precision = "fp32" if source["dtype"] == np.float32 else "int8"
    return _exported(info, forward, path, precision, "LiteRT")


def _quantized(array: np.ndarray, detail: dict) -> np.ndarray:
    """A float input as the tensor wants it: as is, or int8/uint8 with the tensor's scale and zero point."""
    if detail["dtype"] == np.float32:
        return array.astype(np.float32)
    scale, zero = detail["quantization"]
    limits = np.iinfo(detail["dtype"])
    return np.clip(np.round(array / scale + zero), limits.min, limits.max).astype(detail["dtype"])
