"""The engine that runs frozen parts of a network: PyTorch (traced and frozen), ONNX Runtime or OpenVINO.

A frozen backbone is a fixed function, so any engine that computes it faster is fair game. ONNX Runtime and
OpenVINO run the same ONNX graph (`models/onnx_graph.py`, dynamic batch axis, so the last partial batch needs
nothing special); OpenVINO is an optional extra (`pip install 'tl-showdown[openvino]'`), imported only when used.

`auto` (`resolve_runtime`): OpenVINO whenever the `openvino` package is installed, in fp32 and in bf16;
without it, ONNX Runtime in fp32 and PyTorch's bf16 autocast in bf16. Measured on the 2-core Zen 4 box here
(AVX512-BF16; EfficientNet-Lite0, 224 px, batch 32, compute only, the engines taking turns batch by batch:
`benchmarks/extraction.py --compute-only`; the box was shared, load average 4.4 to 5.7, so the ratios are
the figure): PyTorch fp32 16.5 img/s, ONNX Runtime fp32 36.0, OpenVINO fp32 46.3 (1.3x ONNX Runtime; on a
quieter day 132 vs 99 img/s, and 1.2x for MobileNetV2); PyTorch bf16 autocast 20.3, OpenVINO bf16 89.9 (4.4x).
OpenVINO's fp32 features agree with PyTorch's within 1e-5; its bf16 features are about as close to fp32 as
autocast's (tests/frozen/test_openvino.py).

Vision transformers need nothing special: the TorchScript exporter at opset 17 writes timm's fused attention
(`scaled_dot_product_attention`) as MatMul, Softmax, MatMul, and the class token's broadcast over the batch as
Shape/Expand, so the batch axis stays dynamic; a ViT built for its input size (models/backbones/input_size.py)
has no position-embedding resampling in its graph. A whole DINOv2 ViT-S/14 or ConvNeXt-T and a ViT's frozen
bottom (`TokenStem` and blocks, frozen/boundary.py) agree with PyTorch within 1e-4 in both engines
(tests/frozen/test_speed_paths.py); throughput at 224 px in docs/performance.md.

How OpenVINO runs (its streams, batches started before the last one ends) and keeps what it compiled is in
openvino_engine.py. The ONNX export before it is kept in the cache folder, keyed by the model's code and weights
(graph_cache.py), so a re-run skips both.

A model an engine cannot take falls to the next one, with one log line per model (no traceback): OpenVINO ->
ONNX Runtime (in fp32; it runs nothing else) -> PyTorch; a model the ONNX exporter cannot express runs in
PyTorch. The cache key holds the engine chosen, not the one fallen back to (the same model falls back the same
way every time).

`--precision int8` runs in OpenVINO only: the graph is quantised by NNCF on calibration images first
(frozen/quantize.py); a graph it cannot take runs in PyTorch in fp32, with the same one log line.
"""
from __future__ import annotations

import importlib.util
import itertools
import logging
import tempfile
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from showdown.data.images import eval_transform
from showdown.data.pixels import pixels_path
from showdown.data.preprocessing import Preprocessing
from showdown.errors import ConfigError, one_line
from showdown.frozen import openvino_engine, quantize
from showdown.frozen.graph_cache import cached_graph
from showdown.models.onnx_graph import OnnxExportError, onnx_graph

log = logging.getLogger(__name__)

ENGINE_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Engines:
    """What one run built (frozen_pass.FrozenPass holds it): the forwards, per model, so a run's splits share one
    ONNX export and one compile (about 1 s each); the models already reported as running in another engine than
    the one chosen (one line per model, not one per split); and the engine each model's forward ended up in."""

    built: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    fallen_back: set[str] = field(default_factory=set)
    ran: dict[str, str] = field(default_factory=dict)  # model name -> the engine (a runtime's name) it runs in


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(requested: str, precision: str, device_type: str = "cpu") -> str:
    """The engine `requested` ("auto" or a name) means at `precision` on the device; never "auto". ONNX Runtime
    and OpenVINO are CPU engines here: on a GPU the frozen layers run in PyTorch."""
    if device_type != "cpu":
        if requested not in ("auto", "torch"):
            raise ConfigError(f"--runtime {requested} runs on the CPU; with --device {device_type} use --runtime "
                              "auto or torch (the frozen layers then run in PyTorch on the GPU)")
        return "torch"
    if precision == "int8":  # OpenVINO alone runs the quantised graph
        if requested not in ("auto", "openvino"):
            raise ConfigError(f"--precision int8 runs in OpenVINO; use --runtime auto or openvino, not {requested}")
        quantize.check_available()
        return "openvino"
    if requested == "onnxruntime" and precision == "bf16":
        raise ConfigError("--runtime onnxruntime runs fp32 only; use --precision fp32 or --runtime torch")
    if requested == "openvino" and not openvino_installed():
        raise ConfigError("--runtime openvino needs the openvino package: pip install 'tl-showdown[openvino]', "
                          "or use --runtime auto")
    if requested == "auto":
        if openvino_installed():
            return "openvino"
        return "onnxruntime" if precision == "fp32" else "torch"
    return requested


def _export(model: torch.nn.Module, example: torch.Tensor, folder: Path) -> Path:
    """`model` as ONNX (input "image", dynamic batch), traced in fp32 even under a bf16 autocast."""
    path = folder / "model.onnx"
    with torch.autocast("cpu", enabled=False):
        onnx_graph(model.eval(), example, path, output="features")
    return path


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_forward(model: torch.nn.Module, example: torch.Tensor, precision: str, engine: str) -> Forward:
    """`model` exported to ONNX and opened in `engine` ("onnxruntime" or "openvino"), with no fallback: the
    exact call feature extraction makes, for `showdown bench` to time."""
    with tempfile.TemporaryDirectory() as folder:
        return _OPENERS[engine](_export(model, example, Path(folder)), precision)


def _onnxruntime_forward(path: Path, precision: str) -> Forward:
    session = _ort_session(path)

    def run(images: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(None, {"image": images.contiguous().numpy()})
        return torch.from_numpy(out)
    return run


def in_order(forward: Forward, jobs: Iterable[tuple[Any, torch.Tensor]]) -> Iterator[tuple[Any, torch.Tensor]]:
    """(tag, forward(images)) for each (tag, images) of `jobs`, in order; an engine that can start a batch before
    the last one ends (OpenVINO's, `openvino_engine.Streams.in_order`) does."""
    ahead = getattr(forward, "in_order", None)
    if ahead is not None:
        yield from ahead(jobs)
        return
    for tag, images in jobs:
        yield tag, forward(images)


_OPENERS = {"onnxruntime": _onnxruntime_forward, "openvino": openvino_engine.forward}


def _open(engine: str, path: Path, precision: str, calibration: quantize.Calibration | None) -> Forward:
    """The graph at `path` in `engine`; in int8, quantised on `calibration` first (frozen/quantize.py)."""
    if precision != "int8":
        return _OPENERS[engine](path, precision)
    if calibration is None:
        raise ValueError("int8 needs calibration images")
    return openvino_engine.forward(quantize.int8_model(openvino_engine.core(), path, calibration), "int8")


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


@dataclass(eq=False)
class InputStage:
    """A module put before a frozen model, turning the loader's batches into the model's input (data/pixels.py,
    data/thumbnails.py), and what it is built from: its part of the key of a built forward."""
    module: torch.nn.Module
    key: Hashable


def photo_inputs(preprocessing: Preprocessing, key: Hashable) -> tuple[Callable, InputStage | None, torch.Tensor]:
    """(the loader's transform, the stage a frozen graph starts with, an example batch on the CPU) for photos:
    resized and cropped to 8-bit pixels that the graph normalises (data/pixels.py), or, where the eval transform has
    other steps, its normalised floats and no stage. `key` is the stage's part of a built forward's key."""
    pixels = pixels_path(preprocessing)
    if pixels is None:
        return eval_transform(preprocessing), None, torch.zeros(1, *preprocessing.input_size)
    transform, normalized = pixels
    return transform, InputStage(normalized, key), torch.zeros(1, *preprocessing.input_size, dtype=torch.uint8)


def frozen_forward(model: torch.nn.Module, example: torch.Tensor, precision: str, runtime: str,
                   name: str = "the frozen layers", calibration: quantize.Calibration | None = None,
                   engines: Engines | None = None, stage: InputStage | None = None) -> Forward:
    """A function images -> outputs computing the frozen `model` with the chosen engine (call it under
    inference_mode and the precision's autocast), on the device of `example`; with a `stage`, of
    `stage.module` then `model`, as one graph. `name` says which model a fallback note is about; `calibration`,
    the images int8 is calibrated on (needed for int8 only); `engines`, the run's built forwards, reused when the
    same model asks again (default: build afresh). PyTorch gets its inputs channels-last (oneDNN's and cuDNN's
    fast layout); the graph engines take them as they come (NCHW), without a round trip through channels-last."""
    runtime = resolve_runtime(runtime, precision, example.device.type)
    engines = engines if engines is not None else Engines()
    # by the model alone: the Sequential with its stage is made anew each time
    built = engines.built.setdefault(model, {})
    key = (precision, runtime, example.dtype, tuple(example.shape[1:]), _weights_state(model),
           calibration.key if calibration else None, stage.key if stage else None)
    if stage is not None:
        model = torch.nn.Sequential(stage.module.to(example.device), model).eval()  # tracing freezes eval only
    if example.device.type != "cpu":
        return _channels_last(model)  # eager on the GPU, under autocast
    if key not in built:
        found = _graph_forward(model, example[:1].contiguous(), precision, runtime, name, calibration,
                               engines.fallen_back) if runtime != "torch" else None
        forward, engines.ran[name] = found or (None, "torch")
        if forward is None:
            traced = frozen_graph(model, example.contiguous(memory_format=torch.channels_last), precision)
            if traced is model:  # nothing built (eager); kept, it would keep the model alive through `built`
                return _channels_last(model)
            forward = _channels_last(traced)
        built.clear()  # an older state of the weights is never asked for again
        built[key] = forward
    return built[key]


def _channels_last(forward: Forward) -> Forward:
    return lambda images: forward(images.contiguous(memory_format=torch.channels_last))


def _weights_state(model: torch.nn.Module) -> tuple:
    """Where the model's tensors live and how often each was changed in place (optimizer steps and
    load_state_dict bump a tensor's version): a forward built for one state is not reused after another."""
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))


def _graph_forward(model: torch.nn.Module, example: torch.Tensor, precision: str, runtime: str,
                   name: str, calibration: quantize.Calibration | None,
                   fallen_back: set[str]) -> tuple[Forward, str] | None:
    """(the model in `runtime` or, where that fails, the next graph engine; that engine); None: run it in PyTorch."""
    engines = [runtime] + (["onnxruntime"] if runtime == "openvino" and precision == "fp32" else [])
    failures, forward = [], None
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = cached_graph(model, example, Path(folder), _export)
        except Exception as exc:  # a model ONNX cannot express
            reason = str(exc) if isinstance(exc, OnnxExportError) else one_line(exc)
            failures.append(f"ONNX export of {name} failed ({reason})")
            engines = []
        for engine in engines:
            try:  # compiled while the file exists, tried on one image so a failure shows here, not mid-split
                candidate = _open(engine, path, precision, calibration)
                candidate(example)
            except Exception as exc:  # not installed, an operator it lacks, a compile or run failure
                failures.append(f"{ENGINE_NAMES[engine]} cannot run {name} ({one_line(exc)})")
            else:
                forward = candidate
                break
    if failures and name not in fallen_back:  # one line per model, not one per split
        fallen_back.add(name)
        fallback = ENGINE_NAMES[engine] if forward is not None else ENGINE_NAMES["torch"]
        log.warning("%s; running it in %s", "; ".join(failures), fallback)
    return (forward, engine) if forward is not None else None
