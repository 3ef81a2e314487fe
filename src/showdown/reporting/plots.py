"""Figures (matplotlib, no display needed), one consistent style: PNG files in the run folder and inline
images in the report."""
from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import warnings
from collections import OrderedDict
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from showdown.fileio import write_bytes_atomic

# Above this many classes the cells are too small for numbers: the classes are sorted by how often they are
# confused and the labels are thinned.
MAX_ANNOTATED_CLASSES = 20
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110,
         "axes.prop_cycle": matplotlib.cycler(color=["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"])}


@contextlib.contextmanager
def _in_style():
    """STYLE for what is drawn inside; and a class name in emoji (a folder named "Daisy 🌼"), which has no glyph in
    matplotlib's font, drawn as a box without a warning quoting this module's code for every figure."""
    with matplotlib.rc_context(STYLE), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        yield


def _styled(draw):
    """`draw` in STYLE, on figures of its own: no pyplot, so a notebook's backend (inline plots), its figures and
    its rcParams stay as the user set them."""
    @functools.wraps(draw)
    def styled(*args, **kwargs):
        with _in_style():
            return draw(*args, **kwargs)
    return styled


def _subplots(*grid: int, figsize: tuple[float, float]):
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # its own canvas, which draws PNGs: matplotlib's way without pyplot
    return fig, fig.subplots(*grid)


# PNG bytes of the entry figures drawn in this process, by everything they are drawn from: the report at the end of
# a run shows the confusion matrices and curves its entries have just written, and takes them from here instead
# of drawing each again (a fraction of a second apiece). The oldest are dropped beyond DRAWN_KEPT.
_DRAWN: OrderedDict[str, bytes] = OrderedDict()
DRAWN_KEPT = 64


def data_uri(fig) -> str:
    """The figure as an inline PNG (the report must not load anything from outside itself)."""
    return png_uri(png_bytes(fig))


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


# Set on a figure laid out with margins of its own: it is saved as laid out. Any other is cropped to what is drawn
# (bbox_inches "tight"), which draws it twice, once to measure it: 0.07-0.12 s a figure.
FIXED_MARGINS = "showdown_fixed_margins"


def png_bytes(fig) -> bytes:
    """The figure as PNG: the bytes `fig.savefig("name.png")` writes in STYLE (ticks and their grid lines are made as
    it draws), with `bbox_inches="tight"` for a figure not marked FIXED_MARGINS."""
    buffer = io.BytesIO()
    with _in_style():
        fig.savefig(buffer, format="png", bbox_inches=None if getattr(fig, FIXED_MARGINS, False) else "tight")
    return buffer.getvalue()


def _drawn(key: list, draw) -> bytes:
    """PNG of `draw()`, drawn once per `key` (what the figure is drawn from) in this process."""
    text = json.dumps(key, default=str)
    if text not in _DRAWN:
        _DRAWN[text] = png_bytes(draw())
        while len(_DRAWN) > DRAWN_KEPT:
            _DRAWN.popitem(last=False)
    return _DRAWN[text]


def _as_read_back(key: str, value):
    """A history value as history.csv gives it back (numbers as floats), so both key a figure alike."""
    if key == "phase":
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


@_styled
def confusion_figure(matrix: list[list[int]], classes: list[str], title: str):
    counts = np.asarray(matrix, dtype=float)
    n = len(classes)
    order = np.arange(n)
    if n > MAX_ANNOTATED_CLASSES:  # most-confused classes first, so the trouble is in one corner
        recall = np.diag(counts) / np.maximum(counts.sum(axis=1), 1)
        order = np.argsort(recall, kind="stable")
        counts = counts[order][:, order]
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.45 * n, 14)
    fig, ax = _subplots(figsize=(size, size * 0.9))
    ax.grid(False)
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    step = max(1, n // 40)
    ticks = np.arange(0, n, step)
    names = [classes[i] for i in order]
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90 if n > 8 else 45, ha="right" if n <= 8 else "center")
    ax.set_yticks(ticks, [names[i] for i in ticks])
    if n <= MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true" + (" (sorted by recall, worst first)" if n > MAX_ANNOTATED_CLASSES else ""))
    ax.set_title(title)
    _fit_margins(fig, [names[i] for i in ticks], 90 if n > 8 else 45)
    return fig


def _fit_margins(fig, names: list[str], rotation: int) -> None:
    """Margins that hold the confusion matrix's class names, measured from the font: what a tight bounding box
    finds by drawing the figure once more. Names that would take more than 40 % of the figure leave it to the
    tight box, which makes the image larger instead of the matrix smaller."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    font = FontProperties(size=matplotlib.rcParams["font.size"])  # tick labels: "medium", the font size
    sizes = [text_to_path.get_text_width_height_descent(name, font, ismath=False)[:2] for name in names]
    widest, tallest = max(w for w, _ in sizes), max(h for _, h in sizes)
    below = widest if rotation == 90 else (widest + tallest) * 0.71  # a name's height over the axis, rotated
    line = matplotlib.rcParams["font.size"] * 1.4 + 4  # an axis label or the title, with its padding (points)
    width, height = fig.get_size_inches() * 72
    left, bottom = (widest + line + 14) / width, (below + line + 14) / height
    if max(left, bottom) > 0.4 or any("$" in name for name in names):  # "$": matplotlib draws it as maths
        return
    fig.subplots_adjust(left=left, right=1 - 48 / width, bottom=bottom, top=1 - (line + 8) / height)  # 48: colour bar
    setattr(fig, FIXED_MARGINS, True)


@_styled
def curves_figure(history: list[dict], title: str):
    """Loss and accuracy per epoch, train and validation, with a line where `finetune` starts its phase."""
    steps = np.arange(1, len(history) + 1)
    phases = [h["phase"] for h in history]
    starts = [0] + [i for i in range(1, len(phases)) if phases[i] != phases[i - 1]]  # a phase (or fold) each
    fig, (loss_ax, acc_ax) = _subplots(1, 2, figsize=(9, 3.2))
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        for split, color in (("train", "C0"), ("val", "C1")):
            values = [float(h[f"{split}_{metric}"]) for h in history]
            for n, (start, end) in enumerate(zip(starts, [*starts[1:], len(history)])):  # not joined across phases
                ax.plot(steps[start:end], values[start:end], color=color, marker="o", markersize=3,
                        label=(split if split == "train" else "validation") if n == 0 else None)
        for i in starts[1:]:
            ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(i + 0.6, ax.get_ylim()[1], phases[i], va="top", fontsize=8, color="grey")
        if len(starts) > 1:  # the first phase named too
            ax.text(1, ax.get_ylim()[1], phases[0], va="top", fontsize=8, color="grey")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    # Fixed margins: tight_layout, or a tight bounding box, would draw the figure once more to measure its labels
    # (0.2 s and 0.08 s of a re-run).
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.16, top=0.85, wspace=0.22)
    setattr(fig, FIXED_MARGINS, True)
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (x, lower is better) and accuracy (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


@_styled
def tradeoff_figure(labels: list[str], cost: list[float], accuracy: list[float], xlabel: str, title: str):
    """Accuracy against a cost, the Pareto front drawn and its members named in bold."""
    fig, ax = _subplots(figsize=(5.5, 3.8))
    front = pareto_front(list(zip(cost, accuracy)))
    ax.scatter(cost, accuracy, color="#7f7f7f", zorder=2)
    ordered = sorted(front, key=lambda i: cost[i])
    ax.plot([cost[i] for i in ordered], [accuracy[i] for i in ordered], color="#d62728", marker="o", zorder=3,
            label="Pareto front")
    for i, label in enumerate(labels):
        ax.annotate(label, (cost[i], accuracy[i]), textcoords="offset points", xytext=(4, 4), fontsize=7,
                    fontweight="bold" if i in front else "normal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.margins(x=0.2, y=0.1)  # room for the names of the points at the edges
    ax.legend(loc="best", fontsize=8)
    return fig


@_styled
def search_figure(searches: list[tuple[str, dict]], title: str):
    """Validation loss of every trial of a hyper-parameter search (pruned ones at their last reported epoch),
    the best so far as a line, and the default configuration's loss dashed."""
    fig, ax = _subplots(figsize=(5.5, 3.2))
    shown: list[float] = []
    for (label, search), color in zip(searches, matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]):
        trials = [t for t in search["trials"] if t["value"] is not None and np.isfinite(t["value"])]
        done = [t for t in trials if t["state"] == "complete"]
        pruned = [t for t in trials if t["state"] != "complete"]
        name = f"{label} " if label else ""
        # numbered from 1, as the progress lines count them ("search trial 1/3")
        ax.scatter([t["number"] + 1 for t in done], [t["value"] for t in done], color=color, s=14,
                   label=f"{name}trials")
        if pruned:
            ax.scatter([t["number"] + 1 for t in pruned], [t["value"] for t in pruned], color=color, marker="x",
                       s=14, alpha=0.5, label=f"{name}pruned")
        if done:
            ordered = sorted(done, key=lambda t: t["number"])
            ax.step([t["number"] + 1 for t in ordered], np.minimum.accumulate([t["value"] for t in ordered]),
                    where="post", color=color, linewidth=1)
        if np.isfinite(search["default_val_loss"]):
            ax.axhline(search["default_val_loss"], color=color, linestyle="--", linewidth=0.8)
            shown.append(search["default_val_loss"])
        shown += [t["value"] for t in trials]
    # A linear axis up to twice the median loss: a diverged trial (loss 6 beside 0.8-1.3) would squash the rest
    # into a few pixels; the ones above are counted at the top instead
    if shown and max(shown) > 2 * float(np.median(shown)):
        top = 2 * float(np.median(shown))
        ax.set_ylim(min(shown) * 0.95, top)
        ax.annotate(f"{sum(value > top for value in shown)} above ↑", (1, 1), xycoords="axes fraction",
                    ha="right", va="bottom", fontsize=7)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial (dashed: default configuration)")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def confusion_png(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    return _drawn(["confusion", matrix, classes, title], lambda: confusion_figure(matrix, classes, title))


def curves_png(history: list[dict], title: str) -> bytes:
    shown = [{key: _as_read_back(key, value) for key, value in step.items()} for step in history]
    return _drawn(["curves", shown, title], lambda: curves_figure(history, title))


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """The confusion matrix as a PNG file."""
    write_bytes_atomic(path, confusion_png(matrix, classes, title), "the confusion matrix")


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """The training curves as a PNG file."""
    write_bytes_atomic(path, curves_png(history, title), "the training curves")
