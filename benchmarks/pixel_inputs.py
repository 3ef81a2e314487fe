"""A frozen pass fed uint8 pixels (normalised inside the graph) against one fed the eval transform's floats.

`showdown run`'s frozen pass (feature_cache.forward_frozen) over TF-Flowers photos through the frozen MobileNetV2
of the Keras comparison (the TFLite file's weights), at the precision `auto` picks here, with the engine `auto`
picks. Two ways take turns, each pass with a new engine (the graph and compiled model read from the cache, as in a
run) and no feature cache:

  pixels     as shipped: the loader's workers resize and crop each photo to uint8 pixels, and the graph's first
             module normalises the batch (data/pixels.py)
  floats     the workers run the whole eval transform, ToTensor and Normalize included, and hand over float32
             (what runs did before)

It also prints how far apart the two ways' features are.

    python benchmarks/pixel_inputs.py --photos 750 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from run_ahead import photos  # the same photos as the run-ahead benchmark
from showdown.device import CPU, device_facts
from showdown.frozen import feature_cache
from showdown.frozen.frozen_pass import FrozenPass
from showdown.models.backbones import load_backbone
from showdown.precision import resolve_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers")
    parser.add_argument("--weights-dir", default="../shared/weights/mobilenet-tflite")
    parser.add_argument("--photos", type=int, default=750)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    items = photos(Path(args.data), args.photos)
    backbone = load_backbone("mobilenet_v2", weights_dir=args.weights_dir)
    precision = resolve_precision("auto")
    shipped = feature_cache.pixels_path
    ways = {"pixels": shipped, "floats": lambda preprocessing: None}  # None: the float path
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    features = {}
    for _ in range(args.repeats + 1):  # the first round warms the caches and is not counted
        for way, path in ways.items():
            feature_cache.pixels_path = path  # the module's name for it, swapped for each pass
            frozen = FrozenPass(precision=precision, runtime="auto", device=CPU, workers=args.workers)
            start = time.perf_counter()
            features[way] = feature_cache.forward_frozen(frozen, backbone.model, backbone.preprocessing, items,
                                                         name="mobilenet_v2").features
            seconds[way].append(time.perf_counter() - start)
    feature_cache.pixels_path = shipped
    facts = device_facts(CPU)
    print(f"{len(items)} photos, {precision}, engine {frozen.engine}, {args.workers} workers; {facts['name']}, "
          f"{facts['cores']} cores, {' '.join(facts['isa'])}")
    for way, values in seconds.items():
        kept = values[1:]
        print(f"{way:8s} {statistics.median(kept):.2f} s median ({', '.join(f'{v:.2f}' for v in kept)})")
    gap = (features["pixels"] - features["floats"]).abs()
    print(f"features, pixels against floats: max |difference| {gap.max():.2e}, mean {gap.mean():.2e} "
          f"(largest feature {features['floats'].abs().max():.2f})")


if __name__ == "__main__":
    main()
