"""Confusion matrix and training curves as PNG files (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Above this many classes the cells are too small for numbers and the labels are thinned.
MAX_ANNOTATED_CLASSES = 20


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    counts = np.asarray(matrix, dtype=float)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = min(4 + 0.45 * n, 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    step = max(1, n // 40)
    ticks = np.arange(0, n, step)
    ax.set_xticks(ticks, [classes[i] for i in ticks], rotation=90 if n > 8 else 45, ha="right" if n <= 8 else "center")
    ax.set_yticks(ticks, [classes[i] for i in ticks])
    if n <= MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    steps = np.arange(1, len(history) + 1)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        ax.plot(steps, [h[f"train_{metric}"] for h in history], label="train", marker="o", markersize=3)
        ax.plot(steps, [h[f"val_{metric}"] for h in history], label="validation", marker="o", markersize=3)
        phases = [h["phase"] for h in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=1)
                ax.text(i + 0.6, ax.get_ylim()[1], phases[i], va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
