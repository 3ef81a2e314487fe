"""A PyTorch module as an ONNX graph: what `showdown export` writes, `showdown bench` times and the ONNX Runtime
engine for frozen layers runs.

Two things the stock TorchScript-based exporter gets in the way of:
- adaptive average pooling to a size that does not divide the input (timm's VGG pools a 4x4 map *up* to 7x7 for
  its 7x7 pre-logits convolution at 128 px) has no ONNX operator. At a fixed input size it is a fixed linear map
  along each spatial axis, so it is written as two MatMuls with constant matrices (exact, not approximated);
- a failed export prints the whole TorchScript graph to the terminal. Export runs with the output captured,
  and a failure is one `OnnxExportError` line.
"""
from __future__ import annotations

import functools
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from showdown.errors import one_line
from showdown.fileio import descriptors_redirected

ONNX_OPSET = 17


class OnnxExportError(RuntimeError):
    """The exporter could not express the model; the message is one line."""


def onnx_graph(model: nn.Module, example: torch.Tensor, path: Path, output: str = "probabilities") -> None:
    """`model` as an ONNX file with input "image" and a dynamic batch axis (spatial size fixed by `example`)."""
    _register_adaptive_avg_pool()
    try:
        with _output_captured(), warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated in favour of torch.export, which needs onnxscript;
            # it handles these CNNs well and keeps the dependency list short.
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["image"], output_names=[output],
                              dynamic_axes={"image": {0: "batch"}, output: {0: "batch"}})
    except Exception as exc:  # the exporter raises many types; each means "this model cannot be expressed"
        raise OnnxExportError(one_line(exc)) from exc


@contextmanager
def _output_captured():
    """Swallow what C++ code writes to file descriptors 1 and 2 (redirecting sys.stdout/stderr is not enough)."""
    with tempfile.TemporaryFile() as sink, descriptors_redirected((1, 2), sink):
        yield


def pooling_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) matrix of adaptive average pooling along one axis, with PyTorch's window bounds."""
    matrix = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@functools.cache  # once per process
def _register_adaptive_avg_pool() -> None:
    from torch.onnx import symbolic_helper, symbolic_opset9

    def adaptive_avg_pool2d(g, image, output_size):
        sizes = symbolic_helper._get_tensor_sizes(image)
        out = symbolic_helper._parse_arg(output_size, "is")
        height, width = (sizes or [None] * 4)[2:4]
        if height is None or width is None or (height % out[0] == 0 and width % out[1] == 0):
            return symbolic_opset9.adaptive_avg_pool2d(g, image, output_size)  # stock: (Global)AveragePool
        rows = g.op("Constant", value_t=pooling_matrix(height, out[0]))  # (out_h, H) @ (N, C, H, W)
        cols = g.op("Constant", value_t=pooling_matrix(width, out[1]).T.contiguous())  # ... @ (W, out_w)
        return g.op("MatMul", g.op("MatMul", rows, image), cols)

    torch.onnx.register_custom_op_symbolic("aten::adaptive_avg_pool2d", adaptive_avg_pool2d, ONNX_OPSET)
