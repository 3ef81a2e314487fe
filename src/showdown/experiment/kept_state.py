"""What a run sets in its process for its own work, given back when it ends, so that a notebook that runs it is left
as it was: the warning filters (data/images.py's, which a decoding pass needs), the global random generators (a
run seeds Python's, NumPy's and torch's at every epoch, for RandAugment, dropout and the initialisation of its
heads), the CUDA settings device.prepare turns on (cuDNN's autotuner, TF32 matmuls) and torch's default dtype
(float32 inside: a notebook's float64 made the models' weights doubles, which the run's inputs are not), and the
levels of the loggers --quiet mutes."""
from __future__ import annotations

import contextlib
import logging
import random

import numpy as np
import torch

from showdown.data.images import decoding_quietly

QUIET_LOGGERS = ("showdown", "timm")  # their INFO lines (cache hits, weights loaded) are not what --quiet prints


def mute_info_logs(quiet: bool) -> None:
    """With `quiet` (--quiet) where the process's logging shows INFO (a notebook's basicConfig): showdown's and
    timm's own lines held to warnings and errors until process_state_kept gives their levels back."""
    for name in QUIET_LOGGERS if quiet else ():
        if logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
            logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def process_state_kept():
    python, numpy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    matmul = torch.backends.cuda.matmul
    benchmark, fp32 = torch.backends.cudnn.benchmark, getattr(matmul, "fp32_precision", None)
    dtype, levels = torch.get_default_dtype(), {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    torch.set_default_dtype(torch.float32)
    try:
        with decoding_quietly():
            yield
    finally:
        torch.set_default_dtype(dtype)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.backends.cudnn.benchmark = benchmark
        if fp32 is not None and matmul.fp32_precision != fp32:  # only where it changed (older torch lacks it)
            matmul.fp32_precision = fp32
