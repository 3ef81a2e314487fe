"""`showdown bench`: what each backbone costs on this machine, measured, not copied from a paper.

Per backbone (as a feature extractor, the way the showdown uses it): parameters, size on disk, GMACs at its
input size, latency at batch 1 (median over repeated runs after warm-up) and throughput at batch 32, in fp32
and bf16 with PyTorch, and in fp32 with ONNX Runtime as the peer figure. With `--device cuda` (or mps) PyTorch
runs on the GPU, in fp32, bf16 and fp16, and every timed run ends with a device synchronisation (GPU kernels
run asynchronously: without it only the launch would be timed); the exported-graph engines are CPU engines.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from showdown.config.run_config import RunConfig
from showdown.device import CPU, describe, device_facts, prepare, resolve_device
from showdown.fileio import new_run_dir, write_csv, write_json
from showdown.frozen.engines import frozen_forward, graph_forward, openvino_installed
from showdown.models.backbones import load_backbone, resolve_backbone
from showdown.precision import autocast, bf16_supported, cuda_bf16, resolve_precision
from showdown.reporting.tables import render
from showdown.run_schema import BENCH_CSV, BENCH_JSON

THROUGHPUT_BATCH = 32
COLUMNS = [("model", "model", "{}"), ("runtime", "runtime", "{}"), ("precision", "precision", "{}"),
           ("input_px", "input", "{}"), ("params_m", "params M", "{:.2f}"), ("size_mb", "size MB", "{:.1f}"),
           ("gmacs", "GMACs", "{:.2f}"), ("latency_ms", "latency ms (bs 1)", "{:.1f}"),
           ("throughput_ips", "images/s (bs 32)", "{:.1f}")]


def gmacs(model: torch.nn.Module, input_size) -> float:
    """Multiply-accumulates of one image, counted by PyTorch's own FLOP counter (FLOPs / 2).

    The counter has no formula for the CPU's fused attention kernel: timm's attention layers run unfused while
    counting (the same matmuls and softmax), else a ViT-S/14 at 224 px would count 5.5 GMACs instead of 6.1."""
    fused = [m for m in model.modules() if getattr(m, "fused_attn", False) is True]
    counter = FlopCounterMode(display=False)
    try:
        for module in fused:
            module.fused_attn = False
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_size))
    finally:
        for module in fused:
            module.fused_attn = True
    return counter.get_total_flops() / 2 / 1e9


def size_mb(model: torch.nn.Module) -> float:
    """The weights as a safetensors file, in MB (10^6 bytes)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return path.stat().st_size / 1e6


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _median_seconds(run, repeats: int, warmup: int = 3, device: torch.device = CPU) -> float:
    for _ in range(warmup):  # on a GPU also the kernel selection (cudnn.benchmark) and the caching allocator
        run()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_torch(model: torch.nn.Module, input_size, precision: str, repeats: int,
               device: torch.device = CPU) -> tuple[float, float]:
    """(latency ms at batch 1, images/s at batch 32) through the same path feature extraction uses."""
    model = model.eval().to(device, memory_format=torch.channels_last)
    results = []
    for batch, runs in ((1, repeats), (THROUGHPUT_BATCH, max(3, repeats // 10))):
        images = torch.randn(batch, *input_size, device=device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(precision, device.type):
            forward = frozen_forward(model, images, precision, "torch")
            results.append(_median_seconds(partial(forward, images), runs, device=device))
    return results[0] * 1000, THROUGHPUT_BATCH / results[1]


def time_graph(model: torch.nn.Module, input_size, engine: str, precision: str, repeats: int) -> tuple[float, float]:
    """(latency ms at batch 1, images/s at batch 32) of the exported graph in ONNX Runtime or OpenVINO."""
    forward = graph_forward(model, torch.zeros(1, *input_size), precision, engine)
    results = []
    for batch, runs in ((1, repeats), (THROUGHPUT_BATCH, max(3, repeats // 10))):
        images = torch.randn(batch, *input_size)
        results.append(_median_seconds(partial(forward, images), runs))
    return results[0] * 1000, THROUGHPUT_BATCH / results[1]


def bench_backbone(backbone, *, precisions=("fp32", "bf16"), onnx: bool = True, repeats: int = 30,
                   device: torch.device = CPU) -> list[dict]:
    model, input_size = backbone.model.eval().cpu(), tuple(backbone.preprocessing.input_size)
    # pool_stages and features say which network was timed: with --pool-stages, the one the head was trained on.
    common = {"model": backbone.spec.name, "input_px": input_size[1], "pool_stages": backbone.pool_stages,
              "features": backbone.num_features,
              "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "size_mb": size_mb(model),
              "gmacs": gmacs(model, input_size), "weights": backbone.source, "device": device.type}
    rows = []
    for precision in precisions:
        latency, throughput = time_torch(model, input_size, precision, repeats, device)
        rows.append({**common, "runtime": "torch", "precision": precision, "latency_ms": latency,
                     "throughput_ips": throughput,
                     "native_bf16": bf16_supported() if precision == "bf16" and device.type == "cpu" else None})
    model.cpu()  # the exported-graph engines below are CPU engines
    graphs = [("onnxruntime", "fp32")]  # ONNX Runtime runs fp32 only; OpenVINO, when present, is what auto picks
    graphs += [("openvino", precision) for precision in precisions] if openvino_installed() else []
    for engine, precision in graphs if onnx and device.type == "cpu" else []:
        latency, throughput = time_graph(model, input_size, engine, precision, repeats)
        rows.append({**common, "runtime": engine, "precision": precision, "latency_ms": latency,
                     "throughput_ips": throughput})
    return rows


def format_bench(rows: list[dict]) -> str:
    body = [[fmt.format(row[key]) for key, _, fmt in COLUMNS] for row in rows]
    return render([title for _, title, _ in COLUMNS], body, right=set(range(3, len(COLUMNS))))


def default_precisions(device: torch.device = CPU) -> tuple[str, ...]:
    """On the CPU bf16 only where it runs natively (emulated bf16 is ~20x slower and says nothing useful); on a
    GPU fp32, fp16, and bf16 where native (compute capability 8.0 and later)."""
    if device.type == "cuda":
        return ("fp32", "bf16", "fp16") if cuda_bf16(device) else ("fp32", "fp16")
    if device.type == "mps":
        return ("fp32", "fp16")
    return ("fp32", "bf16") if bf16_supported() else ("fp32",)


def bench_models(models: list[str], config: RunConfig, run_dir: Path, *, precisions=None,
                 onnx: bool = True, repeats: int = 30, echo=print) -> list[dict]:
    """Measure every model on config.device; bench.csv and bench.json land in `run_dir`."""
    device = resolve_device(config.device)
    prepare(device)  # cuDNN's autotuner: the warm-up runs of each timing pick the convolutions
    precisions = precisions or default_precisions(device)
    rows = []
    for name in models:
        backbone = load_backbone(name, **config.backbone_options(name))
        echo(f"bench {name} ({backbone.preprocessing.input_size[1]} px) ...")
        rows += bench_backbone(backbone, precisions=precisions, onnx=onnx, repeats=repeats, device=device)
    machine = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "native_bf16": bf16_supported(),
               "device": device_facts(device)}
    write_json(run_dir / BENCH_JSON, {"machine": machine, "rows": rows})
    write_csv(run_dir / BENCH_CSV, rows)
    echo("")
    echo(f"device: {describe(device)}")
    echo(format_bench(rows))
    if not bf16_supported() and device.type == "cpu":
        echo("note: this CPU has no native bf16 (AVX512-BF16 / AMX): " + (
            "the bf16 rows are emulated and slower than fp32" if "bf16" in precisions
            else "bf16 skipped (--precision fp32,bf16 forces it)"))
    return rows


def run_bench(args) -> list[dict]:
    models = args.models or RunConfig().models
    for name in models:
        resolve_backbone(name)
    # Checked as `showdown run` checks the same options (input size range, --out not a file), before any work.
    config = RunConfig(models=models, weights_dir=args.weights_dir, allow_random_init=args.allow_random_init,
                       image_size=args.image_size, out=args.out, device=args.device).validate()
    device = resolve_device(config.device)
    precisions = tuple(args.precisions or default_precisions(device))
    for precision in precisions:
        resolve_precision(precision, device)  # fp16 on the CPU is a one-line error
    run_dir = new_run_dir(config.out, "bench")
    rows = bench_models(models, config, run_dir, precisions=precisions, onnx=args.onnx, repeats=args.repeats)
    print(f"run folder: {run_dir}")
    return rows
