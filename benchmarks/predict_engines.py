"""`showdown predict` of a run folder: its model in the frozen layers' engine, fed 8-bit pixels, against PyTorch.

Each command is its own process (`SHOWDOWN_DAEMON=off`), the ways taking turns, on the --photos training photos of
a TF-Flowers folder split like the Keras comparison's (benchmarks/keras_peer.py). The run folder is an
EfficientNet-Lite0 head trained on that folder (untimed). The ways, each in fp32 and in the run's own precision
(`--precision auto`: bf16 where the CPU has it natively):

  torch, no workers   `--runtime torch --workers 0`: PyTorch, the images decoded in the main process (the
                      defaults before predict ran in the engines; PyTorch's fp32 was eager then, traced now)
  torch, workers      `--runtime torch`: PyTorch, decoding workers
  engine              the defaults (`--runtime auto --workers auto`): OpenVINO where installed, batches run ahead

The engine's ONNX graph and compiled model come from the cache, as on every predict of a run folder after its
first: one untimed predict fills it. The first predict's export and compile are timed once, from an empty cache.
Every way's top class and top probability are compared with PyTorch fp32's (`--runtime torch --workers 0`) on every
photo.

    python benchmarks/predict_engines.py --photos 1000 --repeats 3
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keras_peer import machine, make_folder

WAYS = {"torch, no workers": ["--runtime", "torch", "--workers", "0"], "torch, workers": ["--runtime", "torch"],
        "engine": []}


def showdown(*arguments: str, cache: Path) -> float:
    """Wall seconds of one command in a process of its own, imports included."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "showdown", *arguments], capture_output=True, text=True,
                          env={**os.environ, "SHOWDOWN_DAEMON": "off", "SHOWDOWN_CACHE": str(cache)})
    if done.returncode:
        sys.exit(f"failed: showdown {' '.join(arguments)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def top(path: Path) -> dict[str, tuple[str, float]]:
    with open(path, newline="") as file:
        return {row["path"]: (row["class1"], float(row["prob1"])) for row in csv.DictReader(file)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers", help="TF-Flowers, one folder per class")
    parser.add_argument("--photos", type=int, default=1000, help="photos to predict (the run's training photos)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="predict-engines-"))
    data, run, cache = work / "data", work / "run", work / "cache"
    make_folder(Path(args.data), args.photos, 0, data)
    showdown("run", "--data", str(data), "--models", "efficientnet_lite0", "--strategy", "head", "--seed", "0",
             "--label-issues", "off", "--gradcam", "0", "--no-report", "--no-record", "--out", str(run), cache=cache)

    def predict(way: str, precision: str, into: Path, cache_folder: Path = cache) -> float:
        return showdown("predict", str(run), str(data / "train"), "--precision", precision, "--format", "csv",
                        "--output", str(into), *WAYS[way], cache=cache_folder)

    reference = work / "reference.csv"
    predict("torch, no workers", "fp32", reference)
    first = {precision: predict("engine", precision, work / "first.csv", work / f"empty-{precision}")
             for precision in ("fp32", "auto")}
    seconds = {f"{way}, {precision}": [] for precision in ("fp32", "auto") for way in WAYS}
    agreement = {}
    for repeat in range(args.repeats):
        for name in seconds if repeat % 2 == 0 else reversed(seconds):
            way, precision = name.rsplit(", ", 1)
            output = work / f"{name.replace(', ', '-').replace(' ', '-')}.csv"
            seconds[name].append(predict(way, precision, output))
            ours, theirs = top(output), top(reference)
            agreement[name] = {"same_top_class": sum(ours[p][0] == theirs[p][0] for p in theirs), "photos": len(theirs),
                               "max_top_probability_difference": max(abs(ours[p][1] - theirs[p][1]) for p in theirs)}
    for name, values in seconds.items():
        same = agreement[name]
        print(f"{name:28s} {statistics.median(values):6.2f} s median ({', '.join(f'{v:.2f}' for v in values)}); "
              f"top class as PyTorch fp32's on {same['same_top_class']}/{same['photos']}, top probability within "
              f"{same['max_top_probability_difference']:.4f}")
    for precision, value in first.items():
        print(f"engine, {precision}, first predict (export and compile): {value:.2f} s")
    print(json.dumps({"photos": args.photos, "seconds": seconds, "first_engine_predict": first,
                      "agreement_with_pytorch_fp32": agreement, **machine()}))


if __name__ == "__main__":
    main()
