"""A frozen pass with each batch started before the one before it ends, against one batch at a time.

`showdown run`'s frozen pass (feature_cache.forward_frozen: the loader's workers decoding, OpenVINO's streams
computing) over TF-Flowers photos through the frozen MobileNetV2 of the Keras comparison (the TFLite file's
weights), at the precision `auto` picks here. Two ways take turns, each pass with a new engine (the compiled model
read from OpenVINO's cache, as in a run) and no feature cache:

  run ahead          as shipped: engines.in_order starts each batch on one of two sets of infer requests while
                     the other set still runs, and fetches the next batch meanwhile
  one at a time      each batch started and waited for before the next is fetched (what runs did before)

    python benchmarks/run_ahead.py --photos 750 --repeats 5
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from showdown.device import CPU, device_facts
from showdown.frozen import feature_cache
from showdown.frozen.frozen_pass import FrozenPass
from showdown.models.backbones import load_backbone
from showdown.precision import resolve_precision

CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def one_at_a_time(forward, jobs):
    for tag, images in jobs:
        yield tag, forward(images)


def photos(folder: Path, count: int) -> list[tuple[Path, int]]:
    """`count` photos, the classes taking turns."""
    per_class = [[(path, label) for path in sorted((folder / name).glob("*.jpg"))]
                 for label, name in enumerate(CLASSES)]
    return [item for turn in itertools.zip_longest(*per_class) for item in turn if item is not None][:count]


def arguments(doc: str) -> argparse.Namespace:
    """The flags of the frozen-pass benchmarks (this one, pixel_inputs.py)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers")
    parser.add_argument("--weights-dir", default="../shared/weights/mobilenet-tflite")
    parser.add_argument("--photos", type=int, default=750)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def taking_turns(args: argparse.Namespace, ways: dict[str, Callable[[], None]]) -> dict[str, torch.Tensor]:
    """Frozen passes over the photos, the ways taking turns (each a function that sets feature_cache up for it),
    each with a new engine and no feature cache; prints each way's median. Returns each way's features."""
    items = photos(Path(args.data), args.photos)
    backbone = load_backbone("mobilenet_v2", weights_dir=args.weights_dir)
    precision = resolve_precision("auto")
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    features = {}
    for _ in range(args.repeats + 1):  # the first round warms the caches and is not counted
        for way, set_up in ways.items():
            set_up()
            frozen = FrozenPass(precision=precision, runtime="auto", device=CPU, workers=args.workers)
            start = time.perf_counter()
            features[way] = feature_cache.forward_frozen(frozen, backbone.model, backbone.preprocessing, items,
                                                         name="mobilenet_v2").features
            seconds[way].append(time.perf_counter() - start)
    facts = device_facts(CPU)
    print(f"{len(items)} photos, {precision}, engine {frozen.engine}, {args.workers} workers; {facts['name']}, "
          f"{facts['cores']} cores, {' '.join(facts['isa'])}")
    for way, values in seconds.items():
        kept = values[1:]
        print(f"{way:14s} {statistics.median(kept):.2f} s median ({', '.join(f'{v:.2f}' for v in kept)})")
    return features


def main() -> None:
    args = arguments(__doc__)
    shipped = feature_cache.in_order
    ways = {"run ahead": shipped, "one at a time": one_at_a_time}
    # the module's name for it, swapped for each pass
    taking_turns(args, {way: lambda runner=runner: setattr(feature_cache, "in_order", runner)
                        for way, runner in ways.items()})
    feature_cache.in_order = shipped


if __name__ == "__main__":
    main()
