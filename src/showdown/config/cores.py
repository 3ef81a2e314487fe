"""The CPU cores this process may use, and the image-decoding workers `--workers` asks for (`run` and `predict`)."""
from __future__ import annotations

import os

WORKERS_RULE = "a whole number from 0, or auto"  # --workers of `run` and `predict`


def workers_valid(text: str) -> bool:
    """Whether `text` is a --workers value (WORKERS_RULE); isdecimal, not isdigit: int() refuses '²'."""
    return text == "auto" or text.isdecimal()


def auto_workers(processes: int = 1) -> int:
    """`--workers auto`: this machine's usable cores shared among its `processes` (torchrun's on it), at most 8 each."""
    return max(1, min(8, usable_cores() // processes))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as under taskset or a SLURM allocation); where the
    system cannot say (macOS has no sched_getaffinity), all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
