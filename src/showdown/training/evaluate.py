"""Softmax probabilities of a model over batches, for evaluation and prediction."""
from __future__ import annotations

import numpy as np
import torch

from showdown.device import module_device, to_device
from showdown.precision import autocast


def predict_proba(model: torch.nn.Module, batches, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (computed in fp32) and true labels over (inputs, targets) batches, each batch moved to
    the model's device."""
    model.eval()
    device = module_device(model)
    probs, labels = [], []
    with torch.inference_mode(), autocast(precision, device.type):
        for inputs, targets in batches:
            probs.append(model(to_device(inputs, device, channels_last=True)).float().softmax(1).cpu())
            labels.append(targets)
    if not probs:  # a process whose shard of the test images is empty or unreadable
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()
