"""`--precision int8` against fp32 and bf16: feature fidelity on real photos and frozen-pass throughput.

EfficientNet-Lite0 with its genuine ImageNet weights (or --model), OpenVINO in each precision. Calibration: up to
300 photos of the folder, evenly spaced (as a run calibrates on its training split); fidelity is measured on
--eval other photos (every 7th, offset so none was calibrated on when the folder has enough). Throughput: one
ready batch of real preprocessed photos, the engines taking turns batch by batch (a shared machine's load falls
on all alike), median over --rounds. Prints the CPU, its int8/bf16 instruction sets (VNNI, AMX) and the load.

    python benchmarks/int8.py --photos ../shared/datasets/tf_flowers
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from showdown.data.folder import images_in
from showdown.data.images import eval_transform
from showdown.device import CPU, device_facts, has_int8_dot_products
from showdown.frozen.engines import frozen_forward
from showdown.frozen.feature_cache import FrozenPass, forward_frozen
from showdown.frozen.quantize import calibration_for, calibration_items
from showdown.models.backbones import load_backbone
from showdown.precision import autocast


def cpu() -> str:
    facts = device_facts(CPU)  # the name with family and model, and whether int8 has VNNI/AMX dot products
    return f"{facts['name']}, {os.cpu_count()} CPUs; {', '.join(facts['isa']) or 'no AVX2'}; " + \
        f"int8 dot products (VNNI/AMX): {'yes' if has_int8_dot_products() else 'no'}"


def fidelity(reference: torch.Tensor, other: torch.Tensor) -> dict:
    cosine = torch.nn.functional.cosine_similarity(other, reference, dim=1)
    relative = (other - reference).norm(dim=1) / reference.norm(dim=1)
    return {"cos_min": float(cosine.min()), "cos_median": float(cosine.median()),
            "rel_median": float(relative.median()), "rel_max": float(relative.max()),
            "rel_all": float((other - reference).norm() / reference.norm())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="../shared/datasets/tf_flowers")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--eval", type=int, default=256, help="photos the features are compared on")
    parser.add_argument("--batch", type=int, default=16, help="batch of the throughput figure (the run's)")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(cpu())
    print(f"load average before: {os.getloadavg()}")
    photos = [(path, 0) for path in images_in(Path(args.photos))]
    calibration = calibration_items(photos)
    seen = {path for path, _ in calibration}
    held_out = [item for item in photos[3::7] if item[0] not in seen][: args.eval]
    backbone = load_backbone(args.model)
    pre = backbone.preprocessing
    calibrated = calibration_for(calibration, eval_transform(pre), pre, None, args.batch)
    features = {}
    for precision in ("fp32", "bf16", "int8"):
        start = time.perf_counter()
        frozen = FrozenPass(precision=precision, batch_size=16, workers=2, runtime="openvino")
        features[precision] = forward_frozen(frozen, backbone.model, pre, held_out, calibration=calibration).features
        print(f"{precision}: {len(held_out)} photos in {time.perf_counter() - start:.1f} s (int8: calibration "
              "included)")
    for precision in ("bf16", "int8"):
        print(f"{precision} vs fp32 features: " + ", ".join(f"{k} {v:.4f}"
                                                            for k, v in fidelity(features['fp32'],
                                                                                 features[precision]).items()))
    images = torch.stack([eval_transform(pre)(_open(path)) for path, _ in held_out[: args.batch]])
    forwards, seconds = {}, {}
    with torch.inference_mode():
        for precision in ("fp32", "bf16", "int8"):
            with autocast(precision):
                forwards[precision] = frozen_forward(backbone.model, images, precision, "openvino",
                                                     calibration=calibrated if precision == "int8" else None)
            seconds[precision] = []
        for step in range(2 + args.rounds):
            for precision, forward in forwards.items():
                start = time.perf_counter()
                forward(images)
                if step >= 2:
                    seconds[precision].append(time.perf_counter() - start)
    ips = {precision: args.batch / statistics.median(times) for precision, times in seconds.items()}
    print(f"throughput (OpenVINO, batch {args.batch}, median of {args.rounds}, interleaved): " +
          ", ".join(f"{p} {v:.1f} img/s" for p, v in ips.items()) +
          f"; int8/fp32 {ips['int8'] / ips['fp32']:.2f}x, int8/bf16 {ips['int8'] / ips['bf16']:.2f}x")
    print(f"load average after: {os.getloadavg()}")


def _open(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


if __name__ == "__main__":
    main()
