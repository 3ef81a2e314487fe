"""Where a cached re-run's seconds go, phase by phase, as `showdown daemon` runs it.

Imports what commands use once (as the daemon does), runs the cached TF-Flowers head re-run once to fill the
cache, then forks a child per re-run, like the daemon's children, and times the functions named in PHASES inside
it. Phases nest (a fit is inside its entry's training) and Grad-CAM runs beside the entry's files, so the rows do not
add up to the total. Prints each phase's median over --repeats children:

    python benchmarks/rerun_phases.py --data ../shared/datasets/tf_flowers --repeats 6
"""
from __future__ import annotations

import argparse
import collections
import functools
import importlib
import json
import os
import statistics
import sys
import tempfile
import time

from showdown.daemon import import_what_commands_use
from showdown.startup import heavy_imports

PHASES = ["experiment.entry.train_entry", "experiment.context.fit", "training.loop.run_epoch",
          "training.loop.save_checkpoint", "experiment.entry.build_model", "experiment.entry.explain_entry",
          "experiment.entry.write_entry", "experiment.entry.classification_metrics", "experiment.runner._load",
          "experiment.runner.load_dataset", "experiment.runner.check_leakage", "experiment.runner.write_run_start",
          "experiment.label_issues.find_issues", "experiment.runner._finish"]


def _timed(seconds: collections.Counter) -> None:
    """Wrap every phase where its callers look it up (PHASES names the module that calls it by that name),
    adding its wall time to `seconds`."""
    for phase in PHASES:
        module_name, name = phase.rsplit(".", 1)
        module = importlib.import_module(f"showdown.{module_name}")
        function = getattr(module, name)

        @functools.wraps(function)
        def timed(*args, _function=function, _phase=phase, **kwargs):
            start = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                seconds[_phase] += time.perf_counter() - start
        setattr(module, name, timed)


def _child(argv: list[str], report: int) -> None:
    from showdown.cli import main

    seconds: collections.Counter = collections.Counter()
    _timed(seconds)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    start = time.perf_counter()
    main(argv)
    seconds["total"] = time.perf_counter() - start
    os.write(report, (json.dumps(seconds) + "\n").encode())
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    os.environ.update(SHOWDOWN_CACHE=f"{tmp}/cache", SHOWDOWN_DB=f"{tmp}/runs.db")
    with heavy_imports():
        import_what_commands_use()
    rerun = ["run", "--data", args.data, "--models", "efficientnet_lite0", "--strategy", "head", "--epochs", "30"]
    read, write = os.pipe()
    for i in range(args.repeats + 1):  # the first fills the cache
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _child(rerun + ["--out", f"{tmp}/run{i}"], write)
        os.waitpid(pid, 0)
    os.close(write)
    runs = [json.loads(line) for line in os.fdopen(read).read().splitlines()][1:]
    for phase in ["total", *PHASES]:
        values = [run.get(phase, 0.0) for run in runs]
        print(f"{phase:40s} {statistics.median(values):6.3f} s  ({' '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
