"""Naive vs cached head training: the same head, the same data, the same seed, two ways, in one process.

naive:  the frozen backbone runs over every training and validation image in every epoch (a Keras-style loop);
cached: the backbone runs once per image (showdown's feature cache, built from empty), then the head trains
        on the stored features.
Both run exactly --epochs epochs (early stopping off, so they do the same work) and are scored on the test
split. Prints both wall times, the speed ratio and both test accuracies, and appends them to a JSON file.

    python benchmarks/head_cache.py --data ../shared/datasets/tf_flowers --epochs 30
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from showdown.config.run_config import RunConfig
from showdown.data import load_dataset
from showdown.data.folder import subset_per_class
from showdown.experiment.context import Entry, RunContext
from showdown.experiment.phases import extract_all, train_settings
from showdown.frozen.engines import resolve_runtime
from showdown.frozen.frozen_pass import FrozenPass
from showdown.models.backbones import load_backbone
from showdown.models.classifier import Head, ImageClassifier
from showdown.precision import resolve_precision
from showdown.training.batches import TensorBatches, feature_batches, image_batches
from showdown.training.evaluate import predict_proba
from showdown.training.freezing import batchnorms_kept_in_eval, freeze_backbone
from showdown.training.loop import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-per-class", type=int, help="train images per class, for a quicker run")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default="docs/benchmarks/head_cache.json")
    args = parser.parse_args()

    config = RunConfig(data=args.data, models=[args.model], epochs=args.epochs, patience=args.epochs + 1,
                       workers=args.workers, precision=args.precision)
    precision = resolve_precision(config.precision)
    dataset = load_dataset(config.data, split=config.split, seed=config.seed)
    if args.max_per_class:
        dataset = subset_per_class(dataset, args.max_per_class)
    backbone = load_backbone(args.model)
    settings = train_settings(config)
    head = Head(backbone.num_features, len(dataset.classes), dropout=config.head_dropout)
    initial = {k: v.clone() for k, v in head.state_dict().items()}
    print(f"{dataset.name}: {dataset.counts()}; {args.model}; {args.epochs} epochs; precision {precision}")

    # cached: extraction from an empty cache, then the head on stored features
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        model = ImageClassifier(backbone.model, head)
        freeze_backbone(model)
        context = RunContext(FrozenPass(precision, resolve_runtime(config.runtime, precision), cache_dir=Path(cache)))
        entry = Entry("head", backbone, model, dataset, config, context, Path(cache))
        features = extract_all(entry)
        extracted = time.perf_counter() - start
        fit(head, TensorBatches(features["train"], config.batch_size),
            feature_batches(features["val"], 1024), settings)
        probs, y_true = predict_proba(head, feature_batches(features["test"], 1024))
    cached_seconds = time.perf_counter() - start
    cached_acc = float((probs.argmax(1) == y_true).mean())
    print(f"cached: {cached_seconds:.1f} s ({extracted:.1f} s extracting), test accuracy {cached_acc:.4f}")

    # naive: the backbone in every epoch
    head.load_state_dict(initial)
    model = ImageClassifier(backbone.model, head)
    freeze_backbone(model)
    start = time.perf_counter()
    fit(model, image_batches(dataset.splits["train"], backbone.preprocessing, config, train=True),
        image_batches(dataset.splits["val"], backbone.preprocessing, config, train=False),
        train_settings(config, precision), keep_eval=batchnorms_kept_in_eval(model))
    probs, y_true = predict_proba(model, image_batches(dataset.splits["test"], backbone.preprocessing, config,
                                                       train=False), precision)
    naive_seconds = time.perf_counter() - start
    naive_acc = float((probs.argmax(1) == y_true).mean())
    print(f"naive:  {naive_seconds:.1f} s, test accuracy {naive_acc:.4f}")
    ratio = naive_seconds / cached_seconds
    print(f"speed-up {ratio:.1f}x; accuracy difference {100 * (cached_acc - naive_acc):+.2f} points")
    record = {"data": dataset.name, "counts": dataset.counts(), "model": args.model, "epochs": args.epochs,
              "precision": precision, "cached_seconds": cached_seconds, "extract_seconds": extracted,
              "naive_seconds": naive_seconds, "speedup": ratio, "cached_accuracy": cached_acc,
              "naive_accuracy": naive_acc, "cpu": platform.processor(), "threads": torch.get_num_threads()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
