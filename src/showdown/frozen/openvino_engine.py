"""OpenVINO as the engine of frozen layers (engines.py chooses it): the compile, its cache, and how batches run.

Compiled with the THROUGHPUT hint over torch's threads, and each batch is split over the streams it chose, one
infer request each, run at once (`Streams`): on the 2-core CPU here, two streams of one thread each. Alone, that
measured the same as one stream of two threads (the LATENCY hint); in a run, where the loader's workers decode on
the same cores, it was faster: a stream's thread that a worker pre-empts holds up only its own part of the batch,
not the other thread at every layer (docs/performance.md, "Seventh pass"). A frozen pass starts each batch before
the one before it has ended (`Streams.in_order`), so no stream waits for the others between batches (the "Eighth
pass").

What it compiled stays in the cache folder (`CACHE_DIR`, kind "engines" in cache.py): a re-run, or the next run
of the same backbone, loads the compiled model instead of compiling it again (0.3-0.6 s of a run on the 2-core
CPU; docs/performance.md). OpenVINO keys an entry by the graph, weights included, and the compile settings, so
changed weights or another precision compile afresh.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from showdown.cache import kind_folder, lock_file
from showdown.errors import one_line
from showdown.fileio import exclusive_lock

log = logging.getLogger(__name__)

HINT = "THROUGHPUT"  # see the module docstring


@functools.cache
def core():
    import openvino as ov

    return ov.Core()


def compiled(model, precision: str):
    """`model` (the path of an ONNX graph, or an OpenVINO model) compiled for the CPU at `precision`.

    Through OpenVINO's compiled-model cache where showdown's cache folder can hold it. Processes sharing that
    folder (torchrun's ranks, Ray's shards, two runs) compile one at a time: OpenVINO writes a blob, then makes
    it read-only, and another process that read the blob half-written deletes it in between, which fails the
    first one's compile ("cannot set permissions: No such file or directory"). A compile the cache fails
    anyway (a shared folder where the lock does not hold) is made again without it, the same model."""
    ov_core = core()
    source = ov_core.read_model(str(model)) if isinstance(model, Path) else model
    config = {
        "PERFORMANCE_HINT": HINT,
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        # OpenVINO's default on CPUs with native bf16 is bf16: fp32 must be asked for; int8 keeps the layers NNCF
        # leaves in float (softmax, pooling, the last add) in fp32
        "INFERENCE_PRECISION_HINT": "f32" if precision in ("fp32", "int8") else "bf16",
    }
    folder = _cache_folder()
    if folder is not None:
        try:
            with exclusive_lock(lock_file("engines")):
                return ov_core.compile_model(source, "CPU", {**config, "CACHE_DIR": str(folder)})
        except Exception as exc:  # whatever the cache did; a model OpenVINO cannot run fails again below
            log.info("OpenVINO's compile through its cache failed (%s); compiling once more without it", one_line(exc))
    return ov_core.compile_model(source, "CPU", config)


def _cache_folder() -> Path | None:
    """The folder of OpenVINO's compiled-model cache in showdown's cache folder; None where it cannot be made."""
    folder = kind_folder("engines")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


def forward(model, precision: str) -> Streams:
    """`model` (as `compiled` takes it) compiled and run on its streams: the engine's forward."""
    return Streams(compiled(model, precision))


class Streams:
    """OpenVINO's compiled model run on its streams: each batch split over them, one infer request per part, all
    run at once. Called, it gives a batch's outputs (not while an `in_order` of the same engine is under way: the
    call uses one of its sets of requests). `in_order` runs a sequence of batches without a stop between them."""

    def __init__(self, model):
        count = max(1, model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._sets = [[model.create_infer_request() for _ in range(count)] for _ in range(2)]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return _outputs(_start(self._sets[0], images))

    def in_order(self, jobs: Iterable[tuple[Any, torch.Tensor]]) -> Iterator[tuple[Any, torch.Tensor]]:
        """(tag, outputs) for each (tag, images) of `jobs`, in order. A batch starts before the one before it
        has ended (two sets of infer requests, taking turns): a stream that ends its part takes the next batch's
        at once instead of waiting for the other streams, and the next batch is fetched meanwhile (the frozen
        pass of the Keras comparison's 750 photos: 3.49 s against 3.95 s, benchmarks/run_ahead.py)."""
        running: collections.deque = collections.deque()
        try:
            for turn, (tag, images) in enumerate(jobs):
                done = None
                if len(running) == len(self._sets):  # this turn's set is the oldest batch's: its outputs first
                    oldest, started = running.popleft()
                    done = oldest, _outputs(started)
                running.append((tag, _start(self._sets[turn % len(self._sets)], images)))
                if done is not None:  # given once this batch runs: the streams work while the caller stores it
                    yield done
            while running:
                tag, started = running.popleft()
                yield tag, _outputs(started)
        finally:  # stopped early or failed: nothing left running when the requests go
            for _, started in running:
                with contextlib.suppress(Exception):  # the error on its way up, if any, is the one to see
                    _wait_all(started)


def _start(requests: list, images: torch.Tensor) -> list:
    """The batch split over `requests`, each part started (OpenVINO copies its input); the requests started."""
    parts = [part for part in np.array_split(images.contiguous().numpy(), len(requests)) if len(part)]
    started = []
    try:
        for request, part in zip(requests, parts):
            request.start_async({0: part})
            started.append(request)
    except BaseException:
        with contextlib.suppress(Exception):  # none still running when the error goes up
            _wait_all(started)
        raise
    return started


def _outputs(started: list) -> torch.Tensor:
    """The outputs of the started requests, in order, copied out of them (they are reused)."""
    _wait_all(started)
    return torch.from_numpy(np.concatenate([request.get_output_tensor(0).data for request in started]))


def _wait_all(requests: list) -> None:
    """Wait for every request, then raise the first failure: one that fails leaves none of the others running."""
    failure = None
    for request in requests:
        try:
            request.wait()
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
