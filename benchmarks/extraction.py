"""Feature-extraction throughput at 224 px against the CPU's peak, per engine of the frozen layers.

Two figures per model and engine (PyTorch in fp32 and, on CPUs with native bf16, bf16; ONNX Runtime in fp32;
OpenVINO in the same precisions as PyTorch when it is installed): the model alone on a ready batch (compute
only, through `frozen_forward` as `showdown run` calls it; the engines take turns batch by batch, so a shared
machine's load falls on all of them alike) and the whole pipeline over real photos (decode + resize in
DataLoader workers + forward), as `showdown run` does it. `--compute-only` skips the pipeline.

Peak: cores x clock x FLOPs per cycle per core, from lscpu. Per core and cycle we assume two FMA pipes:
  AVX-512 BF16 (VDPBF16PS):  2 x 16 fp32 lanes x 2 bf16 pairs x 2 FLOPs = 128 bf16 FLOPs (64 on Zen 4,
                             whose 512-bit ops are double-pumped 256-bit ones)
  AVX2 / AVX-512 fp32 FMA:   2 x 8 (or 16) lanes x 2 FLOPs = 32 (or 64) fp32 FLOPs
An image costs 2 x GMACs GFLOPs, so peak images/s = peak FLOP/s / (2 x GMACs).

    python benchmarks/extraction.py --photos ../shared/datasets/tf_flowers
    python benchmarks/extraction.py --models efficientnet_lite0 --compute-only --json /tmp/extraction.json
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
from pathlib import Path

import torch

from showdown.data.folder import images_in
from showdown.frozen.engines import frozen_forward, openvino_installed
from showdown.frozen.feature_cache import forward_frozen
from showdown.models.backbones import load_backbone
from showdown.precision import autocast, bf16_supported
from showdown.reporting.bench import gmacs


def cpu_peak() -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    field = lambda name: (re.search(rf"^{name}:\s*(.+)$", text, re.M) or [None, ""])[1].strip()  # noqa: E731
    flags = set(field("Flags").split())
    cores = torch.get_num_threads()
    mhz = float(field("CPU max MHz") or field("CPU MHz") or 0) or 2500.0
    model = field("Model name")
    zen4 = "AMD" in model and "avx512_bf16" in flags
    if "avx512_bf16" in flags:
        per_cycle, kind = (64 if zen4 else 128), "bf16 (AVX512-BF16)"
    elif "avx512f" in flags:
        per_cycle, kind = (32 if zen4 else 64), "fp32 (AVX-512 FMA)"
    else:
        per_cycle, kind = 32, "fp32 (AVX2 FMA)"
    return {"cpu": model, "cores": cores, "mhz": mhz, "flops_per_cycle": per_cycle, "kind": kind,
            "peak_gflops": cores * mhz / 1000 * per_cycle, "native_bf16": bf16_supported()}


def compute_ips(model: torch.nn.Module, input_size, engines: list[tuple[str, str]], batch: int, rounds: int,
                warmup: int = 2) -> dict[tuple[str, str], float]:
    """Images/s of each (runtime, precision) on one ready batch: median over `rounds`, the engines taking turns."""
    model = model.eval().to(memory_format=torch.channels_last)
    images = torch.randn(batch, *input_size).contiguous(memory_format=torch.channels_last)
    forwards, seconds = {}, {engine: [] for engine in engines}
    with torch.inference_mode():
        for runtime, precision in engines:
            with autocast(precision):
                forwards[runtime, precision] = frozen_forward(model, images, precision, runtime)
        for step in range(warmup + rounds):
            for (runtime, precision), forward in forwards.items():
                with autocast(precision):
                    start = time.perf_counter()
                    forward(images)
                    if step >= warmup:
                        seconds[runtime, precision].append(time.perf_counter() - start)
    return {engine: batch / statistics.median(times) for engine, times in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v2")
    parser.add_argument("--weights-dir", default="../shared/weights/mobilenet-tflite")
    parser.add_argument("--photos", default="../shared/datasets/tf_flowers", help="images for the pipeline figure")
    parser.add_argument("--images", type=int, default=512, help="photos through the pipeline")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="batch of the compute figure")
    parser.add_argument("--rounds", type=int, default=10, help="timed batches per engine (compute figure)")
    parser.add_argument("--runtimes", default="torch,onnxruntime,openvino",
                        help="engines to time (openvino is left out when not installed)")
    parser.add_argument("--compute-only", action="store_true", help="skip the pipeline figure")
    parser.add_argument("--json", default="docs/benchmarks/extraction.json")
    args = parser.parse_args()
    peak = cpu_peak()
    print(f"{peak['cpu']}: {peak['cores']} threads x {peak['mhz']:.0f} MHz x {peak['flops_per_cycle']} "
          f"{peak['kind']} FLOPs/cycle = {peak['peak_gflops']:.0f} GFLOP/s peak")
    photos = [] if args.compute_only else [(p, 0) for p in images_in(Path(args.photos))][: args.images]
    precisions = ["fp32", "bf16"] if peak["native_bf16"] else ["fp32"]
    runtimes = [r for r in args.runtimes.split(",") if r != "openvino" or openvino_installed()]
    engines = [(runtime, precision) for runtime in runtimes for precision in precisions
               if not (runtime == "onnxruntime" and precision == "bf16")]  # ONNX Runtime runs fp32 only
    rows = []
    for name in args.models.split(","):
        backbone = load_backbone(name, weights_dir=args.weights_dir)
        size = tuple(backbone.preprocessing.input_size)
        macs = gmacs(backbone.model, size)
        peak_ips = peak["peak_gflops"] / (2 * macs)
        compute = compute_ips(backbone.model, size, engines, args.batch, args.rounds)
        for runtime, precision in engines:
            pipeline = None
            if photos:  # the path `showdown run` takes with --runtime RUNTIME --precision PRECISION
                start = time.perf_counter()
                forward_frozen(backbone.model, backbone.preprocessing, photos, precision=precision, batch_size=16,
                               workers=args.workers, runtime=runtime)
                pipeline = len(photos) / (time.perf_counter() - start)
            ips = compute[runtime, precision]
            rows.append({"model": name, "runtime": runtime, "precision": precision, "gmacs": macs,
                         "batch": args.batch, "compute_ips": ips, "pipeline_ips": pipeline, "peak_ips": peak_ips,
                         "fraction_of_peak": ips / peak_ips})
    print(f"{'model':20s} {'runtime':12s} {'prec':5s} {'GMACs':>6s} {'compute img/s':>14s} {'pipeline img/s':>15s} "
          f"{'peak img/s':>11s} {'% of peak':>9s}")
    for r in rows:
        pipeline = f"{r['pipeline_ips']:.1f}" if r["pipeline_ips"] else "-"
        print(f"{r['model']:20s} {r['runtime']:12s} {r['precision']:5s} {r['gmacs']:6.3f} {r['compute_ips']:14.1f} "
              f"{pipeline:>15s} {r['peak_ips']:11.0f} {100 * r['fraction_of_peak']:8.1f}%")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"peak": peak, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
