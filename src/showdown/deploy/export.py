"""Export a trained model to ONNX, TorchScript or TFLite, with its class names and preprocessing inside the file.

The exported graph outputs class probabilities, so every runtime gives the same numbers as `showdown predict`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from showdown.deploy.trained import EXPORT_SUFFIXES, METADATA_KEY, choose_entry
from showdown.errors import ConfigError, ModelError, flag_or_keyword
from showdown.fileio import atomic_path, check_output_file
from showdown.models.onnx_graph import OnnxExportError, onnx_graph
from showdown.models.saving import load_model
from showdown.run_schema import MODEL_INFO, MODEL_WEIGHTS

FORMATS = {fmt: suffixes[0] for fmt, suffixes in EXPORT_SUFFIXES.items()}  # the suffix export writes by default
QUANTIZE = ("int8",)  # TFLite only: full-integer post-training quantisation (export_tflite.py)


class Probabilities(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).softmax(1)


def export_model(model_path: str | Path, fmt: str, out: str | Path | None = None,
                 model_name: str | None = None, quantize: str | None = None) -> Path:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
    if quantize is not None and (fmt != "tflite" or quantize not in QUANTIZE):
        raise ConfigError(flag_or_keyword(f"--quantize {quantize}: only --format tflite --quantize int8",
                                          f"quantize={quantize!r}: only fmt='tflite', quantize='int8'")
                          + " is supported")
    if out is not None:
        check_output_file(str(out), f"model{FORMATS[fmt]}", flag_or_keyword("--output", "output"))
        if Path(out).suffix not in EXPORT_SUFFIXES[fmt]:  # predict knows a file's kind by its suffix
            raise ConfigError(flag_or_keyword(f"--output {out}: --format {fmt}", f"output {str(out)!r}: {fmt!r}")
                              + f" writes a {' or '.join(EXPORT_SUFFIXES[fmt])} file")
    path = Path(model_path)
    if path.is_dir():
        folder = choose_entry(path, model_name)
    elif path.name in (MODEL_WEIGHTS, MODEL_INFO) and path.is_file():  # a saved model's own file: its entry folder
        folder = path.parent
    else:
        raise ModelError(f"{path} {'is not' if path.exists() else 'does not exist; give'} a run folder or an entry "
                         "folder")
    model, info = load_model(folder)
    suffix = f"-{quantize}" if quantize else ""
    out = Path(out) if out else folder / f"model{suffix}{FORMATS[fmt]}"
    metadata = json.dumps({"name": info.name, "classes": info.classes, "preprocessing": info.preprocessing})
    wrapped = Probabilities(model).eval()
    example = torch.zeros(2, *info.preprocessing["input_size"])
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            _export_onnx(wrapped, example, tmp, metadata)
        elif fmt == "tflite":
            from showdown.deploy.export_tflite import (
                export_tflite,  # litert-torch is an optional extra
            )

            export_tflite(wrapped, info, folder, tmp, metadata, quantize)
        else:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream, widely deployed
                traced = torch.jit.trace(wrapped, example)
                torch.jit.save(traced, str(tmp), _extra_files={f"{METADATA_KEY}.json": metadata})
    return out


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, metadata: str) -> None:
    import onnx

    try:
        onnx_graph(model, example, path)
    except OnnxExportError as exc:
        raise ModelError(f"this model cannot be exported to ONNX ({exc}); try "
                         + flag_or_keyword("--format torchscript", "'torchscript'")) from exc
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata
    onnx.save(graph, str(path))
