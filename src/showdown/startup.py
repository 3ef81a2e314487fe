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

`keep_freed_memory()`: glibc's malloc gives a freed block over its mmap threshold (128 KiB at first, raised as
blocks are freed, never above 32 MiB) back to the kernel, and trims the top of its heap. A CPU forward or training
step at batch 32 has activations of 50-150 MB: each batch then gets fresh pages, which the kernel zeroes (270,000
page faults, 1 GB, per MobileNetV2 forward at 224 px). Up to half of `showdown predict`'s CPU time was the kernel's
(docs/performance.md, "Memory the kernel zeroed"). Taking every block from the heap and never trimming it lets the
next batch reuse what the last freed. `give_back_freed_memory` returns the heap's free pages to the kernel after
each entry of a run (experiment/entry.py), so a run of several models does not hold the largest one's memory,
fragmented, to its end. Not after each epoch: that gave back the whole gain (docs/performance.md). A command
calls `keep_freed_memory` through `heavy_imports`; the Python API leaves the allocator of the user's process as
it is.

`stacks_on_sigusr1()`: `kill -USR1 PID` prints where a run that seems stuck is (every thread's stack, on stderr),
and the run goes on: the first thing to look at when a job on a cluster hangs.

`end_on_sigterm()`: SIGTERM (`kill`, `timeout`, a SLURM job at its time limit) ends a command as Ctrl-C does: its
bar and log file closed, one line saying where the finished work is and how to go on, exit status 143.
"""
from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import gc
import io
import os
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
            keep_freed_memory()
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


# mallopt(3) parameters, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
MALLOC_SETTINGS = {M_MMAP_MAX: 0,  # blocks from the heap (glibc still maps memory where the heap cannot grow)
                   M_TRIM_THRESHOLD: 2**31 - 1}  # never give the heap's top back: the next batch reuses it


# The C library's malloc_trim, once keep_freed_memory() kept freed memory in this process (and its forks).
_trim: list = []


def keep_freed_memory() -> bool:
    """Keep the memory of freed tensors in the process for the next batch (see the module docstring); whether the
    C library took the settings (glibc does; musl, macOS and Windows have no mallopt and keep their allocators)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # no mallopt; Windows cannot open the process itself
        return False
    kept = all([mallopt(parameter, value) == 1 for parameter, value in MALLOC_SETTINGS.items()])
    if kept and not _trim:
        _trim.append(trim)
    return kept


def give_back_freed_memory() -> None:
    """The heap's free pages back to the kernel (after each entry of a run, and at its end): those keep_freed_memory
    kept, and in the Python API's process, whose allocator is left as it was, the free pages glibc did not trim."""
    if not _trim:
        try:
            _trim.append(ctypes.CDLL(None).malloc_trim)
        except (OSError, AttributeError, TypeError):  # not glibc: nothing to give back this way
            _trim.append(lambda _pad: 0)
    _trim[0](0)


def stacks_on_sigusr1() -> None:
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no SIGUSR1 (Windows); stderr not a file (captured)
        pass


def end_on_sigterm() -> None:
    """SIGTERM raises errors.Terminated (a KeyboardInterrupt) in the main thread; a second one ends the process at
    once. Left as it is where the caller ignores SIGTERM, off the main thread (signal handlers live there), and under
    torchrun, whose agent ends its workers with SIGTERM and would wait its grace period for one blocked in a
    collective."""
    from showdown.errors import Terminated

    def terminate(_number, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    if "LOCAL_RANK" in os.environ or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, terminate)
