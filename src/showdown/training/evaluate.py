"""Softmax probabilities of a model over batches, for evaluation and prediction."""
from __future__ import annotations

import numpy as np
import torch

from showdown.precision import autocast


def predict_proba(model: torch.nn.Module, batches, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and true labels over (inputs, targets) batches."""
    model.eval()
    probs, labels = [], []
    with torch.inference_mode(), autocast(precision):
        for inputs, targets in batches:
            probs.append(model(inputs).float().softmax(1))
            labels.append(targets)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()
