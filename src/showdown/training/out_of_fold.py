"""Out-of-fold class probabilities for every image: K heads on cached features, each scoring only the images it
never trained on.

Confident learning (cleanlab) needs exactly this: for every image a probability from a model that did not see
its label. A head on cached features trains in seconds, so K of them cost little beyond the one frozen pass.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

from showdown.device import one_thread
from showdown.frozen.feature_cache import Features
from showdown.models.classifier import Head
from showdown.training.batches import TensorBatches, feature_batches
from showdown.training.evaluate import predict_proba
from showdown.training.loop import TrainSettings, fit

FOLDS = 5
VAL_SHARE = 0.1  # of each fold's training part, for early stopping: the held-out labels are never looked at
# The K heads are a side task and must stay cheap: larger batches and fewer epochs than a head entry's (on
# TF-Flowers out-of-fold accuracy 0.926, the head entry's test accuracy 0.927).
BATCH = 512
MAX_EPOCHS = 20
RECIPE = f"folds {FOLDS}, val {VAL_SHARE}, batch {BATCH}, epochs <= {MAX_EPOCHS}, no dropout"  # in cached results' keys


def fold_count(labels: np.ndarray, num_classes: int, folds: int = FOLDS) -> int:
    """`folds`, fewer where no class has that many images (a tiny folder), and 2 at least."""
    return int(max(2, min(folds, np.bincount(labels, minlength=num_classes).max())))


def out_of_fold(features: torch.Tensor, labels: np.ndarray, num_classes: int, settings: TrainSettings,
                folds: int = FOLDS) -> np.ndarray:
    """(n, num_classes) probabilities; row i comes from the head whose training folds left image i out."""
    k = fold_count(labels, num_classes, folds)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=settings.seed)
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    settings = dataclasses.replace(settings, epochs=min(settings.epochs, MAX_EPOCHS))
    # One thread (device.one_thread): measured on the 2-core box under load, 2 folds of TF-Flowers in 2.4 s
    # instead of 16.5 s.
    with warnings.catch_warnings():  # a class of fewer images than folds: find_issues names it, in its line
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        parts = list(splitter.split(np.zeros(len(labels)), labels))
    with one_thread(features.device):
        for rest, held in parts:
            train, val = _carve(rest, labels, settings.seed)
            torch.manual_seed(settings.seed)
            head = Head(features.shape[1], num_classes)
            fit(head, TensorBatches(_part(features, labels, train), BATCH, seed=settings.seed),
                feature_batches(_part(features, labels, val), 1024), settings, phase="out-of-fold")
            probs[held], _ = predict_proba(head, feature_batches(_part(features, labels, held), 1024))
    return probs


def _carve(rest: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A validation share of the training folds: stratified where every class can give it an image, else plain
    random (a tiny folder)."""
    counts = np.bincount(labels[rest])
    present = counts[counts > 0]
    stratified = math.ceil(VAL_SHARE * len(rest)) >= len(present) and present.min() >= 2
    return train_test_split(rest, test_size=VAL_SHARE, stratify=labels[rest] if stratified else None,
                            random_state=seed)


def _part(features: torch.Tensor, labels: np.ndarray, rows: np.ndarray) -> Features:
    index = torch.from_numpy(rows)
    return Features(features[index], torch.from_numpy(labels[rows]), index, [], True)
