"""Which device a run computes on (`--device auto|cpu|cuda|cuda:N|mps`), and what is known about it.

`auto` is CUDA when available, else Apple's MPS, else the CPU. Under torchrun every process of a machine takes
the GPU of its LOCAL_RANK. Asking for a device that is not there is a one-line ConfigError naming what was found.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import platform

import torch

from showdown.errors import ConfigError

DEVICE_HELP = "auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps"
CPU = torch.device("cpu")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _cuda_found() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    note = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return f"torch {torch.__version__} sees {torch.cuda.device_count()} CUDA device(s){note}"


def resolve_device(requested: str = "auto") -> torch.device:
    """The torch.device `requested` means on this machine (and, under torchrun, for this process)."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank() % torch.cuda.device_count())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "mps":
        if not _mps_available():
            found = "a CUDA GPU: use --device cuda" if torch.cuda.is_available() else "the CPU only: use --device cpu"
            raise ConfigError(f"--device mps: no Apple MPS device here; found {found}")
        return torch.device("mps")
    kind, _, index = requested.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"--device '{requested}' is not understood; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {requested}: no CUDA device found ({_cuda_found()}); use --device cpu or auto")
    count = torch.cuda.device_count()
    if index and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"--device {requested} under torchrun: use --device cuda, and each process takes the GPU "
                          "of its LOCAL_RANK (CUDA_VISIBLE_DEVICES picks which ones)")
    number = int(index) if index else _local_rank()
    if number >= count:
        raise ConfigError(f"--device cuda:{number}: only {count} CUDA device(s) here (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", number)


def device_facts(device: torch.device) -> dict:
    """Name, memory and versions of the device, for environment.json and the report."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                "driver": _cuda_driver(), "count": torch.cuda.device_count(),
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "matmul_fp32": torch.backends.cuda.matmul.fp32_precision}
    if device.type == "mps":
        return {"type": "mps", "name": f"Apple {platform.machine()} (MPS)", "macos": platform.mac_ver()[0]}
    return {"type": "cpu", "name": _cpu_name(), "cores": os.cpu_count(), "isa": _cpu_isa()}


# The instruction sets that decide CPU speed here: bf16 and int8 matrix units (AMX, AVX-512 BF16/VNNI) or not.
NOTED_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
INT8_DOT_PRODUCTS = {"avx512_vnni", "avx_vnni", "amx_int8"}


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as info:
            first = info.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def _cpu_name() -> str:
    """e.g. "AMD EPYC, family 25 model 1": the model name a benchmark figure is quoted with; a virtual machine's
    name can hide the generation, which family and model tell (AMD 25/1: Zen 3, 25/17: Zen 4)."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    return f"{name}, family {info['cpu family']} model {info['model']}" if "cpu family" in info else name


def _cpu_isa() -> list[str]:
    flags = set(_cpuinfo().get("flags", "").split())
    return [flag for flag in NOTED_ISA if flag in flags]


def has_int8_dot_products() -> bool:
    """Whether this CPU multiplies int8 into int32 without an int16 step that saturates (VNNI, AMX): without it,
    int8 models need weights of 7 bits (frozen/quantize.py). False where /proc/cpuinfo is missing (not x86 Linux)."""
    return bool(INT8_DOT_PRODUCTS & set(_cpu_isa()))


def _cuda_driver() -> str | None:
    try:  # the driver's CUDA version, e.g. 12080 -> "12.8"
        number = torch._C._cuda_getDriverVersion()
        return f"{number // 1000}.{number % 1000 // 10}"
    except (AttributeError, RuntimeError):
        return None


def describe(device: torch.device) -> str:
    facts = device_facts(device)
    if facts["type"] == "cuda":
        return f"{device} ({facts['name']}, {facts['memory_gb']} GB)"
    return f"{device} ({facts['name']})"


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's tensors are (the CPU for a module without any)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else CPU


# Below this many multiply-adds a step (parameters x batch) a second thread gained nothing on the 2-core box (loops
# of 200 steps with AdamW, one thread against two): a linear head, 1280 x 5 at batch 64 (0.4 million), was no
# faster on two; MLP heads (batch norm, dropout, 10 classes) at batch 64 were, by 9 % at 1280 -> 64 (5.3 million)
# and 30 % at 1280 -> 256 (21 million).
SMALL_STEP_MACS = 4_000_000


def small_steps(module: torch.nn.Module, batch_size: int) -> bool:
    """Whether `module`'s training steps are small enough for one CPU thread."""
    return batch_size * sum(p.numel() for p in module.parameters()) < SMALL_STEP_MACS


@contextlib.contextmanager
def one_thread(device: torch.device, when: bool = True):
    """Inside, torch computes on one CPU thread when `when` and `device` is the CPU (other devices are left as they
    are). For small steps waking a second thread costs as much as it gives on a quiet machine, and many times more on a
    busy one: on the 2-core box a TF-Flowers linear head's 30 epochs took 1.4-1.5 s on one thread and 1.3-1.4 s on two
    when quiet, 12-25 s on two threads while a pip install ran (benchmarks/head_epochs.py). An MLP head's larger steps
    (1280 -> 1024 -> 10, batch 256) keep both: 23 ms a step on two, 33 ms on one."""
    threads = torch.get_num_threads()
    if when and device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def prepare(device: torch.device) -> None:
    """What computing on `device` needs set once per process, as timm's train.py sets it. On CUDA: cuDNN's
    autotuner (a run's batches have one shape, so the fastest convolution is picked once and reused) and TF32
    for float32 matmuls on Ampere and later (convolutions use it by default). Only PyTorch's new fp32_precision
    API is used: mixing it with the old allow_tf32 flags is an error."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.fp32_precision = "tf32"


def to_device(value, device: torch.device, *, channels_last: bool = False):
    """A tensor, or a tuple of tensors, on `device`. To CUDA the copy does not block (from pinned memory it
    overlaps the computation); to MPS it blocks: non-blocking copies to MPS can read memory that is freed before
    they run (open PyTorch issues). With `channels_last`, 4-D tensors (image batches) come out channels-last,
    converted on the device after the copy, as timm's train.py does: converting first would cost a full copy on
    the CPU and make the copy from pinned memory a blocking one."""
    if isinstance(value, tuple):
        return tuple(to_device(v, device, channels_last=channels_last) for v in value)
    value = value.to(device, non_blocking=device.type == "cuda")
    return value.contiguous(memory_format=torch.channels_last) if channels_last and value.dim() == 4 else value
