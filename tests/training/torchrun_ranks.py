"""Run by tests/training/test_distributed.py under torchrun (2 CPU processes, gloo): entries trained on every rank as
`showdown run` trains them (experiment.entry.train_entry), then what each rank holds written to OUT, for the test
to compare: the trained model (the one rank 0 saves), the test probabilities, the history, and the timeout of
the group that gathers Python objects.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/training/torchrun_ranks.py OUT DATA
"""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from showdown import distributed
from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.data import load_dataset
from showdown.device import resolve_device
from showdown.experiment.context import RunContext
from showdown.experiment.entry import train_entry
from showdown.experiment.phases import evaluate
from showdown.frozen.frozen_pass import FrozenPass
from showdown.models.backbones import load_backbone

BASE = RunConfig(image_size=64, epochs=2, precision="fp32", workers="0", head_dropout=0.5, batch_size=2)
ENTRIES = {
    # dropout in the head: each rank drew its own masks in the head phase every rank trains alike
    "head": BASE,
    # a fine-tuning learning rate 1000 times the head's: the top never beats the head it starts from
    "finetune": dataclasses.replace(BASE, lr=0.01, ft_lr_factor=1000.0, ft_epochs=1),
    # data parallel with batch norm (per-process statistics on the CPU), one image per rank and step, and an
    # unreadable training image: the rank that draws it has a step with nothing to train on
    "scratch-cnn": BASE,
}


def main(out: Path, data: str) -> None:
    device = resolve_device("cpu")
    distributed.start(device)
    rank = distributed.rank()
    group = distributed._objects_group._get_backend(device)
    facts = {"objects_group_timeout_s": group.options._timeout.total_seconds(), "world_size": distributed.world_size()}
    dataset = load_dataset(data)
    backbone = load_backbone("efficientnet_lite0", image_size=64)
    run = RunContext(FrozenPass("fp32", "torch", device, cache_dir=out / "cache"))
    for strategy, config in ENTRIES.items():
        entry, trained, _ = train_entry(Strategy.parse(strategy), backbone, dataset, config, run, out / strategy)
        probs, _, _ = evaluate(entry, trained)
        save_file({k: v.contiguous() for k, v in entry.model.state_dict().items()},
                  str(out / f"rank{rank}-{strategy}.safetensors"))
        np.save(out / f"rank{rank}-{strategy}-probs.npy", probs)
        facts[strategy] = trained.history
    (out / f"rank{rank}.json").write_text(json.dumps(facts))
    distributed.stop()


if __name__ == "__main__":
    torch.manual_seed(0)
    main(Path(sys.argv[1]), sys.argv[2])
