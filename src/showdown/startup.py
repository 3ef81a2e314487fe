"""The garbage collector around the heavy imports of a command (torch, timm, scikit-learn, matplotlib).

Those imports leave ~500 000 long-lived objects (modules, classes, functions, docstrings). Python's cyclic
garbage collector walks every one of them at each full collection: several times while they are being imported
and again when the interpreter exits, about 2 s of a 4-second start on the 2-core CPU. `heavy_imports()` keeps
the collector off while they are imported, then moves every object alive into the permanent generation
(`gc.freeze`), which collections skip. Objects created afterwards (the run's models, tensors, figures) are
collected as before. This is the pattern the `gc` documentation gives for a process that forks (DataLoader
workers), where it also keeps the frozen objects' memory pages shared.

`without_optional_imports()`: timm's `timm.utils` imports Weights & Biases whenever it is installed (for a
logging helper showdown never calls), 1.0-2.2 s of a run's start on the 2-core CPU (`python -X importtime`;
docs/performance.md). While the command's modules load, `wandb` reads as not installed; afterwards it imports as
usual, so `--track wandb` (reporting/trackers.py) still gets it.

`stacks_on_sigusr1()`: `kill -USR1 PID` prints where a run that seems stuck is (every thread's stack, on stderr),
and the run goes on: the first thing to look at when a job on a cluster hangs.
"""
from __future__ import annotations

import contextlib
import faulthandler
import gc
import io
import signal
import sys

# Imported by libraries showdown uses (timm) for features showdown does not use; see the module docstring.
UNUSED_IMPORTS = ("wandb",)


# Whether this process froze its imports. Not gc.get_freeze_count(): that counts the frozen objects one by one, 60 ms
# for the ~900,000 a `showdown run` imports (in every command the daemon forks).
_frozen: list[bool] = []


@contextlib.contextmanager
def heavy_imports():
    """Wrap the imports of a command; the first time in a process, what is alive afterwards is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        with without_optional_imports():
            yield
    finally:
        if enabled:
            gc.enable()
        if not _frozen:  # once per process: a second command in it (tests, the daemon's children) finds it done
            gc.freeze()
            _frozen.append(True)


@contextlib.contextmanager
def without_optional_imports():
    """`import wandb` (UNUSED_IMPORTS) raises ImportError inside, unless it was imported already."""
    hidden = [name for name in UNUSED_IMPORTS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # what the import system reads as "not installed"
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def stacks_on_sigusr1() -> None:
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no SIGUSR1 (Windows); stderr not a file (captured)
        pass
