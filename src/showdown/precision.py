"""Pick fp32, bf16 or fp16 for the forward pass on a device, and give the matching autocast and gradient scaler.

`auto`: on the CPU bf16 only where it is native (AVX512-BF16 / AMX), else fp32; on a CUDA GPU bf16 from compute
capability 8.0 (Ampere and later), else fp16 with a gradient scaler; on Apple MPS fp16. Losses and metrics are
always computed in fp32 (the training loop casts the logits).

`int8` (never picked by `auto`) is the frozen pass's alone: OpenVINO runs the frozen layers quantised
(frozen/quantize.py) and everything that trains runs in fp32 (no autocast), on the CPU only.
"""
from __future__ import annotations

import contextlib

import torch

from showdown.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_supported() -> bool:
    """True on CPUs with native bf16 (AVX512-BF16 / AMX), where bf16 is faster than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_bf16(device: torch.device) -> bool:
    """bf16 is native on a CUDA GPU of compute capability 8.0 or more (Ampere). torch.cuda.is_bf16_supported() is
    also True where bf16 is only emulated (T4, V100: 7.x), and cuDNN has no bf16 convolutions there."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(requested: str, device: torch.device | None = None) -> str:
    """The precision `requested` ("auto" or a name) means on `device` (default the CPU); never "auto"."""
    kind = device.type if device is not None else "cpu"
    if requested == "auto":
        if kind == "cuda":
            return "bf16" if cuda_bf16(device) else "fp16"
        if kind == "mps":
            return "fp16"
        return "bf16" if bf16_supported() else "fp32"
    if requested == "int8" and kind != "cpu":
        raise ConfigError(f"--precision int8 runs the frozen layers in OpenVINO on the CPU; with --device {kind} "
                          "use auto, bf16 or fp16")
    if requested == "fp16" and kind == "cpu":
        raise ConfigError("--precision fp16 needs a GPU (--device cuda or mps); on the CPU use fp32 or bf16")
    return requested


def autocast(precision: str, device_type: str = "cpu"):
    if precision in DTYPES:
        return torch.autocast(device_type, dtype=DTYPES[precision])
    return contextlib.nullcontext()


def grad_scaler(precision: str, device_type: str = "cpu") -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 need none (the scaler is then a no-op)."""
    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")
