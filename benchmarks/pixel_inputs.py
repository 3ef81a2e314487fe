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

from run_ahead import arguments, taking_turns  # the same photos and passes as the run-ahead benchmark
from showdown.frozen import feature_cache


def main() -> None:
    args = arguments(__doc__)
    shipped = feature_cache.pixels_path
    ways = {"pixels": shipped, "floats": lambda preprocessing: None}  # None: the float path
    # the module's name for it, swapped for each pass
    features = taking_turns(args, {way: lambda path=path: setattr(feature_cache, "pixels_path", path)
                                   for way, path in ways.items()})
    feature_cache.pixels_path = shipped
    gap = (features["pixels"] - features["floats"]).abs()
    print(f"features, pixels against floats: max |difference| {gap.max():.2e}, mean {gap.mean():.2e} "
          f"(largest feature {features['floats'].abs().max():.2f})")


if __name__ == "__main__":
    main()
