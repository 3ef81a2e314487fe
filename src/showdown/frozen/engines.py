"""The engine that runs frozen parts of a network: PyTorch (traced and frozen) or ONNX Runtime.

A frozen backbone is a fixed function, so any engine that computes it faster is fair game. Measured on the
2-core AVX2 machines here, ONNX Runtime extracts EfficientNet-Lite0 features about twice as fast as PyTorch's
fp32 CPU path (docs/performance.md); on CPUs with native bf16, PyTorch's bf16 autocast is the fast path.
`auto` picks ONNX Runtime for fp32 and PyTorch for bf16.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from showdown.errors import ConfigError
from showdown.models.onnx_graph import OnnxExportError, one_line, onnx_graph

log = logging.getLogger(__name__)
_fallen_back: set[str] = set()  # models already reported as running in PyTorch instead of ONNX Runtime


def resolve_runtime(requested: str, precision: str) -> str:
    if requested == "onnxruntime" and precision == "bf16":
        raise ConfigError("--runtime onnxruntime runs fp32 only; use --precision fp32 or --runtime torch")
    if requested == "auto":
        return "onnxruntime" if precision == "fp32" else "torch"
    return requested


def onnx_session(model: torch.nn.Module, example: torch.Tensor):
    """`model` exported to ONNX (input "image", dynamic batch) and opened in ONNX Runtime on the CPU."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        onnx_graph(model.eval(), example, path, output="features")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def frozen_graph(model: torch.nn.Module, example: torch.Tensor, precision: str):
    """A traced, frozen copy of a frozen model: conv+BN folded, oneDNN kernels; about 1.7x eager speed on CPU.

    Only in fp32: bf16 runs through autocast in eager mode. Falls back to eager if tracing fails.
    """
    if precision != "fp32":
        return model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
    except Exception as exc:  # any tracing failure only costs speed
        log.info("tracing %s failed (%s); running eagerly", type(model).__name__, exc)
        return model


def frozen_forward(model: torch.nn.Module, example: torch.Tensor, precision: str, runtime: str,
                   name: str = "the frozen layers") -> Callable[[torch.Tensor], torch.Tensor]:
    """A function images -> outputs computing the frozen `model` with the chosen engine (call it under
    inference_mode and the precision's autocast). `name` says which model a fallback note is about."""
    if runtime == "onnxruntime":
        try:
            session = onnx_session(model, example[:1].contiguous())
        except Exception as exc:  # a model ONNX cannot express, or ONNX Runtime cannot run, still runs in PyTorch
            if name not in _fallen_back:  # one line per model, not one per split
                _fallen_back.add(name)
                reason = str(exc) if isinstance(exc, OnnxExportError) else one_line(exc)
                log.warning("ONNX export of %s failed (%s); running it in PyTorch", name, reason)
        else:
            def run(images: torch.Tensor) -> torch.Tensor:
                (out,) = session.run(None, {"image": images.contiguous().numpy()})
                return torch.from_numpy(out)
            return run
    return frozen_graph(model, example, precision)
