"""What keeping freed memory in the process (startup.keep_freed_memory) saves where PyTorch computes on the CPU.

Both ways take turns, each command its own process (`SHOWDOWN_DAEMON=off`), on a TF-Flowers folder split like the
Keras comparison's (benchmarks/keras_peer.py):
- `showdown predict` of a trained EfficientNet-Lite0 head's run folder on the --photos training photos: the whole
  model in PyTorch, the images decoded in the main process (`--runtime torch --workers 0`; eager in fp32 too
  before 2026-12-07's predict in the engines), in fp32 and in the run's own precision (`--precision auto`: bf16
  where the CPU has it), the command's wall time, imports included;
- `showdown run --strategy finetune`: the fine-tune epochs' seconds (history.csv), the top blocks trained on the
  boundary cache in the run's precision.
"Default" is glibc's malloc as a process starts: the command runs with keep_freed_memory replaced by a no-op.
Each command's peak resident memory is recorded too.

    python benchmarks/kept_memory.py --photos 500 --repeats 3
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

COMMAND = """
import sys
from showdown import __main__, startup
if sys.argv[1] == "default":
    startup.keep_freed_memory = lambda: False
sys.argv[1:2] = []
__main__.console()
"""


def showdown(mode: str, *arguments: str, peaks: list | None = None) -> float:
    """Wall seconds of one command, in a process of its own; its peak resident memory (MB) appended to `peaks`."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", COMMAND, mode, *arguments], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"failed: showdown {' '.join(arguments)}\n{errors[-2000:]}")
    if peaks is not None:
        peaks.append(usage.ru_maxrss / 1024)
    return time.perf_counter() - start


def finetune_epochs(run: Path) -> list[float]:
    with open(next(run.glob("*/history.csv"))) as file:
        return [float(row["seconds"]) for row in csv.DictReader(file) if row["phase"] == "finetune"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers", help="TF-Flowers, one folder per class")
    parser.add_argument("--photos", type=int, default=500, help="training photos (val and test a quarter each)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["SHOWDOWN_DAEMON"] = "off"
    work = Path(tempfile.mkdtemp(prefix="kept-memory-"))
    data = work / "data"
    make_folder(Path(args.data), args.photos, 0, data)
    common = ["--data", str(data), "--models", "efficientnet_lite0", "--seed", "0", "--label-issues", "off",
              "--gradcam", "0", "--no-report", "--no-record", "--cache-dir", str(work / "cache")]
    showdown("kept", "run", *common, "--strategy", "head", "--out", str(work / "head"))
    predict = {precision: {"default": [], "kept": []} for precision in ("fp32", "auto")}
    epochs = {"default": [], "kept": []}
    peaks = {f"{what} {mode}": [] for what in ("predict fp32", "finetune") for mode in ("default", "kept")}
    for repeat in range(args.repeats):
        for mode in ("default", "kept") if repeat % 2 == 0 else ("kept", "default"):
            for precision, seconds in predict.items():
                seconds[mode].append(showdown(mode, "predict", str(work / "head"), str(data / "train"), "--precision",
                                              precision, "--runtime", "torch", "--workers", "0", "--format", "csv",
                                              "--output", str(work / "predictions.csv"),
                                              peaks=peaks[f"predict fp32 {mode}"] if precision == "fp32" else None))
            run = work / f"finetune-{mode}-{repeat}"
            showdown(mode, "run", *common, "--strategy", "finetune", "--epochs", "1", "--ft-epochs", "2",
                     "--out", str(run), peaks=peaks[f"finetune {mode}"])
            epochs[mode] += finetune_epochs(run)
    result = {"photos": args.photos, "predict_seconds": predict, "finetune_epoch_seconds": epochs,
              "peak_memory_mb": peaks, **machine()}
    rows = [(f"showdown predict --precision {precision}, wall", seconds) for precision, seconds in predict.items()]
    for name, seconds in [*rows, ("fine-tune epoch", epochs)]:
        default, kept = statistics.median(seconds["default"]), statistics.median(seconds["kept"])
        print(f"{name:40s} default {default:6.2f} s   kept {kept:6.2f} s   ({kept / default - 1:+.0%}; medians of "
              f"{len(seconds['kept'])})")
    for name, sizes in peaks.items():
        print(f"peak memory, {name:20s} {statistics.median(sizes):7.0f} MB (median of {len(sizes)})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
