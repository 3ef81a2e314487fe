"""What a user waits for that is not training: the CLI's start, and a re-run whose features are all cached.

Times, each in a fresh process as a user runs it, the median of --repeats runs:

  showdown --help / presets / models / runs list   (the commands that must not import torch)
  showdown run --data <TF-Flowers> --models efficientnet_lite0 --strategy head --epochs 30, with the feature cache
  filled by one untimed run before:
    - with SHOWDOWN_DAEMON=off: every run imports torch, timm, scikit-learn, ... itself;
    - as a user's re-runs go by default: the run before started this environment's daemon (showdown/daemon.py),
      which holds the imports, and each run is a child forked from it. Timed once the daemon is ready; the re-run
      made straight after the run that started it (which waits for the daemon's imports) is recorded apart.

    python benchmarks/fixed_overhead.py --data ../shared/datasets/tf_flowers --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from showdown.device import CPU, device_facts

SHOWDOWN = [sys.executable, "-m", "showdown"]
FAST = [["--help"], ["presets"], ["models"], ["runs", "list"]]


def wall(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(SHOWDOWN + args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="docs/benchmarks/fixed_overhead.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SHOWDOWN_CACHE": f"{tmp}/cache", "SHOWDOWN_DB": f"{tmp}/runs.db"}
        figures = {}
        for command in FAST:
            figures[" ".join(command)] = statistics.median(wall(command, env) for _ in range(args.repeats))
        env["SHOWDOWN_DAEMON_DIR"] = f"{tmp}/daemon"
        cold_env = {**env, "SHOWDOWN_DAEMON": "off"}
        rerun = ["run", "--data", args.data, "--models", "efficientnet_lite0", "--strategy", "head", "--epochs", "30"]
        fill = wall(rerun + ["--out", f"{tmp}/fill"], cold_env)
        cold = [wall(rerun + ["--out", f"{tmp}/cold{i}"], cold_env) for i in range(args.repeats)]
        figures["cached re-run, daemon off"] = statistics.median(cold)
        try:
            starting = wall(rerun + ["--out", f"{tmp}/starting"], env)  # imports itself, starts the daemon as it ends
            right_after = wall(rerun + ["--out", f"{tmp}/right-after"], env)  # waits for the daemon's imports
            wall(["daemon", "start"], env)  # finds it running: nothing is timed before it is ready
            warm = [wall(rerun + ["--out", f"{tmp}/warm{i}"], env) for i in range(args.repeats)]
        finally:
            wall(["daemon", "stop"], env)
        figures["cached re-run"] = statistics.median(warm)
    for name, seconds in figures.items():
        print(f"{name:<26} {seconds:6.2f} s  (median of {args.repeats})")
    print(f"{'first run':<26} {fill:6.2f} s  (fills the feature cache; not part of the medians)")
    print(f"{'run that starts the daemon':<26} {starting:6.2f} s  (then, straight after it: {right_after:.2f} s)")
    record = {"machine": device_facts(CPU), "repeats": args.repeats, "median_seconds": figures,
              "re_runs_daemon_off": cold, "re_runs": warm, "first_run": fill, "run_starting_the_daemon": starting,
              "re_run_right_after_it": right_after}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
