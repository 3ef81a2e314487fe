"""Pick fp32 or bf16 for the forward pass, and give the matching autocast context."""
from __future__ import annotations

import contextlib

import torch


def bf16_supported() -> bool:
    """True on CPUs with native bf16 (AVX512-BF16 / AMX), where bf16 is faster than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(requested: str) -> str:
    if requested == "auto":
        return "bf16" if bf16_supported() else "fp32"
    return requested


def autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
