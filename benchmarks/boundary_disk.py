"""What reading a fine-tune's training batches from the boundary cache on disk costs, against RAM.

The two paths differ only in where TensorBatches gathers its rows: a tensor in RAM, or a memory-mapped file
(frozen/disk_activations.py) whose pages the page cache holds once read. Times one epoch of batches, as the
`cifar10-lite0-finetune` preset draws them (mirror image by a coin, maps shifted by up to 1 cell, batch 128),
from each, interleaved, on random bf16 maps of the preset's boundary shape (112 x 12 x 12 at 192 px), and checks
that both give the same batches. The training step itself is the same on both paths (see top_training.py).

    python benchmarks/boundary_disk.py --rows 20000 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from showdown.frozen.disk_activations import RowWriter
from showdown.frozen.feature_cache import Features
from showdown.training.batches import TensorBatches


def _written(path: Path, features: Features) -> Features:
    writer = RowWriter(path, features.features.dtype)
    for part in features.features.split(1024):
        writer.append(part)
    return writer.seal(Features(writer.tensor(), features.labels, features.indices, [], False))


def _epoch(batches: TensorBatches, epoch: int) -> tuple[float, list[torch.Tensor]]:
    batches.set_epoch(epoch)
    start = time.perf_counter()
    sums = [inputs.float().sum() for inputs, _ in batches]  # every row touched, as a training step would
    return time.perf_counter() - start, sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--shape", type=int, nargs=3, default=[112, 12, 12])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    views = [torch.randn(args.rows, *args.shape, generator=generator).to(torch.bfloat16) for _ in range(2)]
    labels, indices = torch.randint(0, 10, (args.rows,), generator=generator), torch.arange(args.rows)
    ram = [Features(view, labels, indices, [], False) for view in views]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        disk = [_written(Path(folder) / f"{name}.boundary", view) for name, view in zip(("plain", "mirrored"), ram)]
        written = time.perf_counter() - start
        size = sum(view.features.numel() * 2 for view in ram) / 2**20
        paths = {name: TensorBatches(sets[0], args.batch, mirrored=sets[1], shift=1, seed=0)
                 for name, sets in (("ram", ram), ("disk", disk))}
        times = {name: [] for name in paths}
        for repeat in range(args.repeats):
            for name in (("ram", "disk") if repeat % 2 == 0 else ("disk", "ram")):  # interleaved
                seconds, sums = _epoch(paths[name], repeat)
                times[name].append(seconds)
                if name == "disk":
                    assert sums == _epoch(paths["ram"], repeat)[1], "the disk path gave other batches"
    print(f"{args.rows} rows x 2 views, {size:.0f} MB bf16; written to disk in {written:.2f} s")
    for name, values in times.items():
        print(f"{name}: epoch of batches {statistics.median(values):.3f} s (median of {values})")
    print(f"disk / ram: {statistics.median(times['disk']) / statistics.median(times['ram']):.2f}x")


if __name__ == "__main__":
    main()
