"""Training speed of a linear head on cached features: what a cached re-run spends on training.

Fits the default head (dropout 0.2, linear) with `showdown.training.loop.fit` on random features of TF-Flowers'
shape (2,568 training and 551 validation rows of 1,280 EfficientNet-Lite0 features, 5 classes), 30 epochs without
early stopping, batch 64, label smoothing 0.1, each row as itself or as its flipped image's features by a coin per
epoch: the same batches, loss, optimizer and validation a `--strategy head` run trains with. The median of
--repeats fits in one process. Compare two checkouts by running this with each one's src on PYTHONPATH, taking
turns:

    PYTHONPATH=src python benchmarks/head_epochs.py --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from showdown.device import CPU, device_facts, one_thread, small_steps
from showdown.models.classifier import Head
from showdown.training.batches import cached_train_batches, feature_batches
from showdown.training.loop import TrainSettings, fit


def features(rows: int, width: int, classes: int, generator: torch.Generator) -> SimpleNamespace:
    """Random features whose class shows in one column, so the head has something to learn."""
    labels = torch.randint(0, classes, (rows,), generator=generator)
    values = torch.randn(rows, width, generator=generator)
    values[torch.arange(rows), labels] += 3
    return SimpleNamespace(features=values, labels=labels, indices=torch.arange(rows), on_disk=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2568)
    parser.add_argument("--val", type=int, default=551)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", choices=("product", "all"), default="product",
                        help="product: one thread when the steps are small, as a run trains; all: torch's default")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    train = features(args.train, args.width, args.classes, generator)
    # the flipped images' features, which a run's default `light` augmentation trains on half the time
    mirrored = SimpleNamespace(**{**vars(train), "features": train.features + 0.1 * torch.randn(
        train.features.shape, generator=generator)})
    val = features(args.val, args.width, args.classes, generator)
    settings = TrainSettings(epochs=args.epochs, patience=args.epochs, label_smoothing=0.1)
    seconds = []
    for _ in range(args.repeats):
        torch.manual_seed(0)
        head = Head(args.width, args.classes, dropout=0.2)
        start = time.perf_counter()
        with one_thread(CPU, when=args.threads == "product" and small_steps(head, 64)):
            history = fit(head, cached_train_batches({"train": train, "train_mirrored": mirrored}, 64, 0),
                          feature_batches(val, 1024), settings)
        seconds.append(time.perf_counter() - start)
    print(f"{args.epochs} epochs of a linear head on {args.train} cached rows: median "
          f"{statistics.median(seconds):.2f} s ({', '.join(f'{s:.2f}' for s in seconds)}); "
          f"last val accuracy {history[-1]['val_acc']:.4f}")
    facts = device_facts(CPU)
    print(f"CPU: {facts['name']} ({', '.join(facts['isa'])}), {facts['cores']} cores, --threads {args.threads}")


if __name__ == "__main__":
    main()
