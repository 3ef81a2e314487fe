"""How one run's frozen layers run, and what they built and counted, as one value.

Every frozen pass of a run (features, boundary activations, label-issue features) shares the same settings: the
precision, the engine, the device, the loader's workers, the batch size and the feature cache folder. Passing them
as one `FrozenPass` instead of six loose arguments keeps the call sites short and the settings from drifting apart.
It also holds what a run accumulates: the forwards it built (`engines.Engines`: one export and one compile per
model, shared by its splits), the cache entries the disk refused (each said once), and the counts the run reports
in summary.json. One per run, carried by `RunContext`: nothing outlives the run at module level, so a second run
in the same process (a notebook, the tests) starts as a new process would.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from showdown.device import CPU
from showdown.frozen.engines import Engines, resolve_runtime

# Measured on the 2-core CPU: batches of 8-16 images run ~1.3x faster than 64 (less memory traffic per step).
FEATURE_BATCH = 16


@dataclass
class FrozenPass:
    precision: str = "fp32"
    runtime: str = "torch"  # the engine asked for; `engine` is what it resolves to on the device
    device: torch.device = CPU
    workers: int = 0
    cache_dir: Path | None = None  # the feature cache folder; None: off
    cache_writable: bool = True  # False: a folder that takes no new file (a read-only share): read, never written
    batch_size: int = FEATURE_BATCH
    bars: bool = True  # a bar per pass over the images where one can show (False: --quiet)
    # extractions served from the cache ("hit"), computed ("miss"), and images (each view of one) run through
    # frozen layers, for features or boundary activations ("images"); this process's share
    stats: Counter = field(default_factory=Counter)
    engines: Engines = field(default_factory=Engines)
    refused: set[Path] = field(default_factory=set)  # cache entries the disk refused: each is said once

    @property
    def engine(self) -> str:
        """The engine `runtime` means at this precision on this device ("auto" resolved; never "auto")."""
        return resolve_runtime(self.runtime, self.precision, self.device.type)
