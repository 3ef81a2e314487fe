"""Training state after each epoch, so that an interrupted run resumes where it stopped.

Written to a temporary file and renamed, so a kill mid-write leaves the previous checkpoint intact; read back
with `weights_only=True`, so a checkpoint file can hold only tensors and plain values, never code.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import torch

from showdown import distributed
from showdown.fileio import write_bytes_atomic

log = logging.getLogger(__name__)


def save_checkpoint(path: Path, model, optimizer, scheduler, scaler, progress: dict) -> None:
    """`scaler`: the fp16 gradient scaler, whose loss scale adapts during training (empty when disabled)."""
    # serialised in memory: torch.save's own writer turns a full disk into a RuntimeError without its errno
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), **progress}, buffer)
    write_bytes_atomic(path, buffer.getvalue(), "the checkpoint")


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler) -> dict | None:
    """Restore model, optimizer, scheduler and gradient scaler in place; returns the progress values, or None for a
    checkpoint that cannot be read (cut short, overwritten): one warning, and the phase starts again."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's reader says "damaged" in many ways (RuntimeError, OSError, KeyError, ...)
        if distributed.is_main():  # every process reads it; one says so
            log.warning("checkpoint %s is damaged (%s); this phase starts again from its first epoch", path,
                        type(exc).__name__)
        return None
    model.load_state_dict(state.pop("model"))
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    saved_scaler = state.pop("scaler", None)
    if saved_scaler:  # empty from a disabled scaler (fp32, bf16), absent from checkpoints written before it was kept
        scaler.load_state_dict(saved_scaler)
    return state
