"""Feature-extraction throughput at 224 px against the CPU's peak, per engine of the frozen layers.

Two figures per model and engine (PyTorch in fp32 and, on CPUs with native bf16, bf16; ONNX Runtime in fp32;
OpenVINO in the same precisions as PyTorch when it is installed): the model alone on a ready batch (compute
only, through `frozen_forward` as `showdown run` calls it; the engines take turns batch by batch, so a shared
machine's load falls on all of them alike) and the whole pipeline over real photos (decode + resize in
DataLoader workers + forward), as `showdown run` does it. `--compute-only` skips the pipeline. Models without
weights here (DINOv2, ConvNeXt offline) run randomly initialised: the arithmetic is the same.

Peak: cores x clock x FLOPs per cycle per core, per precision, from lscpu's flags (the clock from lscpu's max
MHz, else /proc/cpuinfo's MHz). Per core and cycle we assume two FMA pipes:
  fp32 FMA:   2 x 8 lanes (AVX2, and AVX-512 on Zen 4, whose 512-bit ops are double-pumped 256-bit ones;
              16 lanes with native AVX-512) x 2 FLOPs = 32 (64) fp32 FLOPs
  bf16 dot product (AVX512-BF16, VDPBF16PS): twice the fp32 figure, two bf16 pairs per fp32 lane = 64 (128)
A row's fraction of peak is against its precision's peak (fp32 rows against the fp32 FMA peak). An image
costs 2 x GMACs GFLOPs (PyTorch's FLOP counter, attention included), so peak images/s = peak / (2 x GMACs).

    python benchmarks/extraction.py --photos ../shared/datasets/tf_flowers
    python benchmarks/extraction.py --models efficientnet_lite0,dinov2_vits14,convnext_tiny --compute-only
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import torch

from showdown.data.folder import images_in
from showdown.frozen.engines import frozen_forward, openvino_installed
from showdown.frozen.feature_cache import FrozenPass, forward_frozen
from showdown.models.backbones import load_backbone
from showdown.precision import autocast, bf16_supported
from showdown.reporting.bench import gmacs


def cpu_peak() -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    field = lambda name: (re.search(rf"^{name}:\s*(.+)$", text, re.M) or [None, ""])[1].strip()  # noqa: E731
    flags = set(field("Flags").split())
    cores = torch.get_num_threads()
    mhz = float(field("CPU max MHz") or field("CPU MHz") or _cpuinfo_mhz() or 2500.0)
    model = field("Model name")
    zen4 = field("Vendor ID") == "AuthenticAMD" and field("CPU family") == "25" and "avx512f" in flags
    if "avx512f" in flags:
        fp32, unit = (32, "AVX-512 (double-pumped on 256-bit FMA units)") if zen4 else (64, "AVX-512")
    else:
        fp32, unit = (32, "AVX2") if "avx2" in flags else (16, "SSE")
    per_cycle = {"fp32": fp32, "bf16": 2 * fp32 if "avx512_bf16" in flags else fp32}
    units = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
             if f in flags]
    return {"cpu": model, "family": field("CPU family"), "model": field("Model"), "cores": cores, "mhz": mhz,
            "vector_units": units, "unit": unit, "flops_per_cycle": per_cycle,
            "peak_gflops": {p: cores * mhz / 1000 * n for p, n in per_cycle.items()},
            "native_bf16": bf16_supported()}


def _cpuinfo_mhz() -> float | None:
    match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text(), re.M) \
        if Path("/proc/cpuinfo").is_file() else None
    return float(match[1]) if match else None


def compute_ips(model: torch.nn.Module, input_size, engines: list[tuple[str, str]], batch: int, rounds: int,
                warmup: int = 2) -> dict[tuple[str, str], tuple[float, float]]:
    """(images/s, share of the cores received) of each (runtime, precision) on one ready batch: medians over
    `rounds`, the engines taking turns. The share is the process's CPU seconds over wall seconds x threads: on a
    shared machine the engines get a fraction of the cores, and % of peak is also given per core-second received.
    That figure is rough: spinning threads count as received (it errs low), and a core clocked above the nominal
    MHz the peak assumes, or CPU time a hypervisor does not account, makes it err high (it can pass 100 %)."""
    model = model.eval().to(memory_format=torch.channels_last)
    images = torch.randn(batch, *input_size).contiguous(memory_format=torch.channels_last)
    forwards, seconds = {}, {engine: [] for engine in engines}
    shares = {engine: [] for engine in engines}
    with torch.inference_mode():
        for runtime, precision in engines:
            with autocast(precision):
                forwards[runtime, precision] = frozen_forward(model, images, precision, runtime)
        for step in range(warmup + rounds):
            for (runtime, precision), forward in forwards.items():
                with autocast(precision):
                    start, cpu = time.perf_counter(), time.process_time()
                    forward(images)
                    wall = time.perf_counter() - start
                    if step >= warmup:
                        seconds[runtime, precision].append(wall)
                        shares[runtime, precision].append((time.process_time() - cpu) / wall / torch.get_num_threads())
    return {engine: (batch / statistics.median(times), min(1.0, statistics.median(shares[engine])))
            for engine, times in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v2,dinov2_vits14,convnext_tiny")
    parser.add_argument("--image-size", type=int, default=224)
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
    load = {"start": os.getloadavg()}
    print(f"{peak['cpu']} (family {peak['family']}, model {peak['model']}; {', '.join(peak['vector_units'])}): "
          f"{peak['cores']} threads x {peak['mhz']:.0f} MHz, {peak['unit']}")
    for precision, per_cycle in peak["flops_per_cycle"].items():
        print(f"  {precision} peak: x {per_cycle} FLOPs/cycle = {peak['peak_gflops'][precision]:.0f} GFLOP/s")
    photos = [] if args.compute_only else [(p, 0) for p in images_in(Path(args.photos))][: args.images]
    precisions = ["fp32", "bf16"] if peak["native_bf16"] else ["fp32"]
    runtimes = [r for r in args.runtimes.split(",") if r != "openvino" or openvino_installed()]
    engines = [(runtime, precision) for runtime in runtimes for precision in precisions
               if not (runtime == "onnxruntime" and precision == "bf16")]  # ONNX Runtime runs fp32 only
    rows = []
    for name in args.models.split(","):
        backbone = load_backbone(name, weights_dir=args.weights_dir, allow_random_init=True,
                                 image_size=args.image_size)
        size = tuple(backbone.preprocessing.input_size)
        macs = gmacs(backbone.model, size)
        compute = compute_ips(backbone.model, size, engines, args.batch, args.rounds)
        for runtime, precision in engines:
            pipeline = None
            if photos:  # the path `showdown run` takes with --runtime RUNTIME --precision PRECISION
                start = time.perf_counter()
                forward_frozen(FrozenPass(precision=precision, batch_size=16, workers=args.workers, runtime=runtime),
                               backbone.model, backbone.preprocessing, photos)
                pipeline = len(photos) / (time.perf_counter() - start)
            (ips, share), peak_ips = compute[runtime, precision], peak["peak_gflops"][precision] / (2 * macs)
            rows.append({"model": name, "weights": backbone.source, "input_px": size[-1], "runtime": runtime,
                         "precision": precision, "gmacs": macs,
                         "batch": args.batch, "compute_ips": ips, "pipeline_ips": pipeline, "peak_ips": peak_ips,
                         "fraction_of_peak": ips / peak_ips, "cpu_share": share,
                         "fraction_of_received_peak": ips / (peak_ips * share)})
    print(f"{'model':20s} {'runtime':12s} {'prec':5s} {'GMACs':>6s} {'compute img/s':>14s} {'pipeline img/s':>15s} "
          f"{'peak img/s':>11s} {'% of peak':>9s} {'CPU share':>9s} {'% of received':>13s}")
    for r in rows:
        pipeline = f"{r['pipeline_ips']:.1f}" if r["pipeline_ips"] else "-"
        print(f"{r['model']:20s} {r['runtime']:12s} {r['precision']:5s} {r['gmacs']:6.3f} {r['compute_ips']:14.1f} "
              f"{pipeline:>15s} {r['peak_ips']:11.0f} {100 * r['fraction_of_peak']:8.1f}% {r['cpu_share']:9.2f} "
              f"{100 * r['fraction_of_received_peak']:12.1f}%")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    load["end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at the start {load['start']}, at the end {load['end']}")
    Path(args.json).write_text(json.dumps({"peak": peak, "load_average": load, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
