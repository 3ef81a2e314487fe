"""Where a progress bar can update in place, and with which tqdm: shared by the run's reporter (one bar per
training phase), the frozen pass (one per feature extraction) and predict. tqdm's own `disable=None` turns a bar
off wherever the stream is not a terminal, which is every notebook's."""
from __future__ import annotations

import importlib.util
import os
import sys


def bar_class(stream):
    """tqdm's class for a bar on `stream`: a widget in a notebook with ipywidgets, the text bar in one without
    them (redrawn in place too) and on a terminal; None where a bar cannot update in place (a log, a pipe)."""
    if in_notebook() and importlib.util.find_spec("ipywidgets"):
        from tqdm.auto import tqdm  # a widget

        return tqdm
    if in_notebook():  # without ipywidgets: the text bar, which a notebook redraws in place too
        from tqdm import tqdm

        return tqdm
    if hasattr(stream, "isatty") and stream.isatty() and _columns(stream) != 0:  # 0: a pty that gives no width,
        from tqdm import tqdm  # where a bar draws nothing at all; lines there

        return tqdm
    return None


def progress(iterable, *, shown: bool = True, **options):
    """`iterable` with a bar on stderr where one updates in place (and `shown`: under torchrun rank 0's alone); a
    tqdm that draws nothing elsewhere, so it is closed alike."""
    kind = bar_class(sys.stderr) if shown else None
    if kind is None:
        from tqdm import tqdm

        return tqdm(iterable, disable=True, **options)
    return kind(iterable, file=sys.stderr, **options)


def _columns(stream) -> int | None:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):  # no descriptor, or not a terminal after all
        return None


def in_notebook() -> bool:
    """A Jupyter kernel's shell, or one derived from it (Colab's)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return any(kind.__name__ == "ZMQInteractiveShell" for kind in type(shell).__mro__)
