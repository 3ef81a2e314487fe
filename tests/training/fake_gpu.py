"""A stand-in for a GPU on a machine without one, for tests: a device whose tensors have shapes, dtypes and a
device but no values, and which refuses to mix with the CPU as a GPU does.

It is PyTorch's `meta` device, made strict: every operation that involves a meta tensor (moving a tensor there,
creating one there, computing with one, copying one back) runs under FakeTensorMode, which checks devices the
way CUDA kernels do. Operations on CPU tensors alone run as usual, so decoding images, building transforms and
indexing on the CPU behave as in a real run. Reading a value that came from the device (`float(loss)`, a
comparison's verdict, `.tolist()`) raises one of FAKE_READS: code under test runs until its first such read.

Why not plain `meta`: PyTorch's CPU convolution, matmul and linear kernels take a meta weight with a CPU input
without complaint. Why not a fake `cuda`: the autograd engine needs a real CUDA context for a backward pass.
"""
from __future__ import annotations

import contextlib

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
)
from torch.utils._pytree import tree_leaves, tree_map_only

DEVICE = torch.device("meta")
FAKE_READS = (DataDependentOutputException, DynamicOutputShapeException)


def _on_device(value) -> bool:
    if isinstance(value, (FakeTensor, torch.device, str)):
        return isinstance(value, FakeTensor) or str(value).startswith(DEVICE.type)
    return False


class _StrictMeta(FakeTensorMode):
    """FakeTensorMode for what involves the device; the CPU as usual for the rest."""

    def __init__(self):
        super().__init__(allow_non_fake_inputs=True)
        self.depth = 0  # inside a fake operation everything it calls is fake (a copy back gives no real values)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth or any(_on_device(leaf) for leaf in tree_leaves((args, kwargs))):
            # CPU tensors made fake first: FakeTensorMode would run an operation with only real inputs for real
            # (constant propagation), which for tensor.to("meta") would make a plain meta tensor.
            args, kwargs = tree_map_only(torch.Tensor, self._fake, (args, kwargs))
            self.depth += 1
            try:
                return super().__torch_dispatch__(func, types, args, kwargs)
            finally:
                self.depth -= 1
        return func(*args, **kwargs)

    def _fake(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if isinstance(tensor, FakeTensor) else self.from_tensor(tensor)


@contextlib.contextmanager
def fake_gpu():
    """Within it, torch.device("meta") is the stand-in GPU; yields that device."""
    with _StrictMeta():
        yield DEVICE
