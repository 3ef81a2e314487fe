"""One showdown over several processes, launched by torchrun: PyTorch's own torch.distributed, nothing home-made.

`torchrun --nproc_per_node=N -m showdown run ...` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK set;
`start` joins them into one process group (NCCL on CUDA, gloo on CPU). Without torchrun every function here
is the single-process identity: rank 0 of a world of 1.

Work is split into contiguous shards (`shard`), one per rank, without padding, so every item is computed exactly
once and the shards joined in rank order are the single process's order. Python objects (features, predictions)
travel over a gloo group even when training uses NCCL: they live on the CPU.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from showdown.errors import under_torchrun

_objects_group = None  # the gloo group that gathers and broadcasts Python objects
_owns_group = False  # whether start() made the process group (stop() ends only its own)
# Generous: rank 0 alone writes the report and plots while the others wait at the next collective. Every group
# is given it: a group made without it gets PyTorch's default of 30 minutes.
TIMEOUT = timedelta(minutes=60)


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return under_torchrun()


def start(device: torch.device) -> None:
    """Join the process group torchrun set up (once per process); nothing without torchrun. Where the process
    group exists already (a Ray Train worker, a caller's own init_process_group), only the objects' group is made:
    the collectives here need it on the CPU, whatever the caller's backend."""
    global _objects_group, _owns_group
    if not launched() or _objects_group is not None:
        return
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        _owns_group = True
    # A group of its own on the CPU too, so the two-process CPU tests run the line a GPU run runs.
    _objects_group = dist.new_group(backend="gloo", timeout=TIMEOUT)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes files and prints."""
    return rank() == 0


def shard(n: int) -> slice:
    """This rank's contiguous share of n items: sizes differ by at most one, nothing is repeated."""
    r, w = rank(), world_size()
    return slice(n * r // w, n * (r + 1) // w)


def local_processes() -> int:
    """The processes torchrun started on this machine (they share its cores and memory)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def per_rank_batch(global_batch: int) -> int:
    """--batch-size is the global batch: each rank takes its share of it."""
    return max(1, global_batch // world_size())


def gather(value) -> list:
    """`value` of every rank, in rank order (a one-item list without torchrun)."""
    if not active():
        return [value]
    out = [None] * world_size()
    dist.all_gather_object(out, value, group=_objects_group)
    return out


def all_true(flag: bool) -> bool:
    """True when `flag` holds on every rank (so all ranks take the same branch). One small all-reduce, no
    pickling: data-parallel training asks it once per step (training/batches.py)."""
    if not active():
        return bool(flag)
    agreed = torch.tensor(int(bool(flag)))
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN, group=_objects_group)
    return bool(agreed)


def broadcast(value):
    """Rank 0's `value`, on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_objects_group)
    return box[0]


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over the ranks (loss and accuracy totals of a sharded pass)."""
    if not active():
        return values
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total, group=_objects_group)
    return total.tolist()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch norm statistics) in `module` on every rank, on the module's device."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    if active():
        dist.barrier(group=_objects_group)


def stop() -> None:
    """Leave the process group start() made; one the caller made (Ray Train) keeps running, less our group."""
    global _objects_group, _owns_group
    if dist.is_available() and dist.is_initialized():
        if _owns_group:
            dist.destroy_process_group()
        elif _objects_group is not None:
            dist.destroy_process_group(_objects_group)
    _objects_group, _owns_group = None, False
