"""`--shard i/N`: which backbones this process trains, so that N processes (a SLURM job array, several machines)
share one showdown and `showdown merge` joins their run folders.

The grid is split by backbone, never inside one: a backbone's frozen pass (its cached features) is computed once
and reused by all of its strategies, seeds, folds and trials, so splitting a backbone's entries over shards would
repeat that pass. Shards are balanced by an estimated cost per backbone, its parameter count times its input
pixels (a rough proxy for the work of one image, read off the architecture built on PyTorch's meta device: no
weights are loaded and no memory is allocated). Every shard computes the whole assignment from the same config,
so all of them agree on it without talking to each other. The small CNN (`scratch-cnn`) does not depend on the
backbone and runs with the first backbone of --models (as in one process), so it lands in that backbone's shard.
"""
from __future__ import annotations

import functools

from showdown.config.run_config import RunConfig
from showdown.models.backbones import resolve_backbone


def my_models(config: RunConfig) -> list[str]:
    """The backbones this process trains, in --models order: all of them without --shard."""
    if config.shard is None:
        return list(config.models)
    index, count = config.shard_index
    return assign(config.models, count, config.image_size)[index]


def assign(models: list[str], count: int, image_size: int | None = None) -> list[list[str]]:
    """The backbones of each of `count` shards: greedy longest-processing-time (the costliest backbone first, each
    into the shard with the least estimated work so far; ties go to the lower shard, then the earlier name). With
    `count` <= len(models) every shard gets at least one backbone. Each list keeps the order of `models`."""
    loads = [0.0] * count
    shards: list[set[str]] = [set() for _ in range(count)]
    for name in sorted(dict.fromkeys(models), key=lambda n: (-backbone_cost(n, image_size), n)):
        lightest = min(range(count), key=lambda i: (loads[i], i))
        shards[lightest].add(name)
        loads[lightest] += backbone_cost(name, image_size)
    return [[name for name in models if name in shard] for shard in shards]


@functools.cache
def backbone_cost(name: str, image_size: int | None = None) -> float:
    """Parameters x input pixels of a backbone's architecture (at --image-size, else the weights' size)."""
    import timm
    import torch

    spec = resolve_backbone(name)
    try:
        with torch.device("meta"):  # shapes only: no weights, no memory, a few milliseconds
            model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.timm_kwargs)
    except Exception:  # noqa: BLE001  an architecture that will not build here still gets a share, the same in every shard
        return 1.0
    side = image_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    return float(sum(p.numel() for p in model.parameters())) * side * side


def echo_share(config: RunConfig, echo) -> None:
    """With --shard, one line: the backbones (and the small CNN) this shard trains; nothing without."""
    if config.shard is None:
        return
    mine = my_models(config)
    small_cnn = any(s.is_small_cnn for s in config.strategy_values())
    cnn = " and scratch-cnn" if small_cnn and config.models[0] in mine else ""
    echo(f"shard {config.shard}: {', '.join(mine)}{cnn} (of {len(config.models)} backbones)")
