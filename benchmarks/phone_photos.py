"""Feature extraction over 12-megapixel phone-sized photos, with JPEG draft decoding on and off.

Makes N 4000x3000 JPEGs (quality 90) by upscaling real TF-Flowers photos (the demo photos when TF-Flowers is
absent), with a little luma noise so the files are as large as a phone's (~3 MB, not the ~0.6 MB of a smooth
upscale; --noise 0 for plain upscales). Then times, with draft decoding on (the default) and off
(SHOWDOWN_FULL_DECODE=1, i.e. every JPEG decoded at full size):

  loader    decode + preprocess in the DataLoader workers only (no network)
  pipeline  the project's extract_features (cache off): decode + preprocess + EfficientNet-Lite0 at 224 px in
            the engine `showdown run` picks, batches of FEATURE_BATCH, as a run extracts its features, with
            the run's one engine build (ONNX export and compile, overlapped with the first decodes) included;
            also shown without that build's time

    python benchmarks/phone_photos.py --images 200 --noise 0
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from showdown.data.folder import images_in
from showdown.data.images import FULL_DECODE_ENV, eval_transform, image_loader
from showdown.data.sources import demo_path
from showdown.device import CPU, device_facts
from showdown.frozen.engines import resolve_runtime
from showdown.frozen.feature_cache import FEATURE_BATCH, FrozenPass, extract_features
from showdown.models.backbones import load_backbone

PHONE = (4000, 3000)


def make_photos(sources: list[Path], count: int, folder: Path, noise: float) -> list[Path]:
    rng = np.random.default_rng(0)
    step = max(1, len(sources) // count)  # spread over the classes
    chosen = [sources[(i * step) % len(sources)] for i in range(count)]
    paths = []
    for i, source in enumerate(chosen):
        with Image.open(source) as small:
            big = small.convert("RGB").resize(PHONE, Image.BICUBIC)
        if noise:
            grain = rng.normal(0, noise, (PHONE[1], PHONE[0], 1)).astype(np.float32)
            big = Image.fromarray((np.asarray(big, dtype=np.float32) + grain).clip(0, 255).astype(np.uint8))
        paths.append(folder / f"{i:04d}.jpg")
        big.save(paths[-1], quality=90)
    return paths


def timed(full: bool, work) -> float:
    """Seconds `work()` takes, with every JPEG decoded at full size when `full` (workers inherit the switch)."""
    if full:
        os.environ[FULL_DECODE_ENV] = "1"
    else:
        os.environ.pop(FULL_DECODE_ENV, None)
    try:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start
    finally:
        os.environ.pop(FULL_DECODE_ENV, None)


def write_record(path: Path, key: str, entry: dict) -> None:
    """Adds `entry` under `key` to the JSON file at `path`, keeping the other settings' entries."""
    record = json.loads(path.read_text()) if path.exists() else {}
    record[key] = entry
    path.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="photos to make and extract")
    parser.add_argument("--photos", default="../shared/datasets/tf_flowers", help="the photos to upscale")
    parser.add_argument("--noise", type=float, default=8.0, help="luma noise (8-bit levels, std) added")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights-dir", default="../shared/weights/mobilenet-tflite")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--runtime", default="auto", help="auto: as `showdown run` picks it")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timings per mode; the best is kept")
    parser.add_argument("--json", default="docs/benchmarks/phone_photos.json",
                        help="where the figures go, one entry per --noise (other entries kept)")
    args = parser.parse_args()
    photos_dir = Path(args.photos)
    sources = images_in(photos_dir) if photos_dir.is_dir() else []
    if not sources:
        print(f"{photos_dir} not found: upscaling the demo photos")
        sources = images_in(demo_path())
    folder = Path(tempfile.mkdtemp(prefix="phone-photos-"))
    try:
        start = time.perf_counter()
        paths = make_photos(sorted(sources), args.images, folder, args.noise)
        megabytes = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        print(f"{len(paths)} photos {PHONE[0]}x{PHONE[1]} q90, {megabytes:.1f} MB each on average "
              f"(made in {time.perf_counter() - start:.0f} s)")
        items = [(p, 0) for p in paths]
        backbone = load_backbone(args.model, weights_dir=args.weights_dir, allow_random_init=True)
        runtime = resolve_runtime(args.runtime, args.precision)
        transform = eval_transform(backbone.preprocessing)

        def loader():
            for _ in image_loader(items, transform, batch_size=FEATURE_BATCH, workers=args.workers):
                pass

        def pipeline():
            # a new run, which builds its engine once: timed here as well
            extract_features(FrozenPass(args.precision, runtime, workers=args.workers), backbone, items)

        warm_up = FrozenPass(args.precision, runtime, workers=args.workers)
        extract_features(warm_up, backbone, items[:FEATURE_BATCH])  # imports, first export
        one = FrozenPass(args.precision, runtime, batch_size=1)  # one image: the engine build, ~all of it
        setup = timed(False, lambda: extract_features(one, backbone, items[:1]))
        rows = {}
        for _ in range(args.repeats):
            for full in (True, False):
                for name, work in (("loader", loader), ("pipeline", pipeline)):
                    seconds = timed(full, work)
                    key = ("full" if full else "draft", name)
                    rows[key] = min(rows.get(key, seconds), seconds)
        print(f"{args.model} {backbone.preprocessing.side} px, {args.precision} {runtime}, {args.workers} workers, "
              f"batch {FEATURE_BATCH}; draft decodes to a shorter side >= {transform.decode_side} px")
        print(f"{'decode':8s} {'loader img/s':>13s} {'pipeline img/s':>15s} {'without setup':>14s}  "
              f"(engine build: {setup:.1f} s per run)")
        for mode in ("full", "draft"):
            n, loader_s, pipeline_s = len(items), rows[mode, "loader"], rows[mode, "pipeline"]
            print(f"{mode:8s} {n / loader_s:13.1f} {n / pipeline_s:15.1f} {n / max(pipeline_s - setup, 1e-9):14.1f}")
        print(f"draft / full: loader {rows['full', 'loader'] / rows['draft', 'loader']:.2f}x, "
              f"pipeline {rows['full', 'pipeline'] / rows['draft', 'pipeline']:.2f}x")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        write_record(Path(args.json), f"noise {args.noise:g}", {
            "machine": device_facts(CPU),
            "photos": len(items), "megabytes_per_photo": round(megabytes, 2), "model": args.model,
            "precision": args.precision, "runtime": runtime, "workers": args.workers, "batch": FEATURE_BATCH,
            "repeats": args.repeats, "engine_build_s": round(setup, 3),
            "img_per_s": {f"{mode} {name}": round(len(items) / seconds, 1) for (mode, name), seconds in rows.items()},
            "load_average": [round(x, 2) for x in os.getloadavg()]})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
