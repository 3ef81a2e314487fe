"""What `showdown.run` returns: the rows of the table and the run folder they come from, shown in a notebook as
the leaderboard with its verdicts, with the full report one call away."""
from __future__ import annotations

import base64
import html
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from showdown.deploy.explain import Explained, explain_files
from showdown.deploy.export import export_model
from showdown.deploy.inputs import expand_inputs
from showdown.deploy.predict import PREDICT_BATCH, open_model, predict_files, predict_workers
from showdown.errors import AccuracyGateError, ConfigError
from showdown.experiment.kept_state import process_state_kept
from showdown.reporting.label_issues import ranking
from showdown.reporting.report import leaderboard_html, report_run
from showdown.reporting.tables import format_table
from showdown.run_schema import REPORT_HTML


@dataclass
class Results:
    run_dir: Path
    rows: list[dict]
    skipped: list[str] = field(default_factory=list)
    without_label_issues: Results | None = None  # --drop-label-issues: every entry again without the suspect images
    # the counts of this process's frozen passes (frozen_pass.FrozenPass.stats), the label-issue pass and a re-run
    # included: extractions from the feature cache ("hit"), computed ("miss"), images run through frozen layers
    frozen_counts: Counter = field(default_factory=Counter)

    def table(self) -> str:
        return format_table(self.rows)

    def __repr__(self) -> str:
        """What a console or an editor without HTML shows: the run folder and the table, not every field."""
        return f"Results of {self.run_dir}\n{self.table()}"

    def best(self) -> dict:
        """The best entry as the report ranks them: with --repeats, the (model, strategy) of the best mean test
        accuracy over its seeds, as its first seed's row with `accuracy` that mean (one lucky seed is no winner)."""
        first = ranking(self.rows)[0]
        rows = [row for row in self.rows if f"{row['model']} / {row['strategy']}" == first]
        return {**rows[0], "accuracy": sum(r["accuracy"] for r in rows) / len(rows)} if len(rows) > 1 else rows[0]

    def gate(self, least: float | None) -> Results:
        """--assert-accuracy-at-least: a CI gate, checked after everything is written."""
        best = self.best() if least is not None else None
        if best and best["accuracy"] < least:
            raise AccuracyGateError(f"best test accuracy {best['accuracy']:.4f} ({best['model']} / "
                                    f"{best['strategy']}) is below --assert-accuracy-at-least {least:g}; results are "
                                    f"in {self.run_dir}")
        return self

    def _repr_html_(self) -> str:
        """Jupyter's rendering: the leaderboard and whether its differences are real."""
        return leaderboard_html(self.run_dir)

    def report(self, height: int = 800):
        """The full report inline in a notebook (an iframe, so its styles stay its own); written first if the run
        skipped it (--no-report). Returns the IPython display object."""
        page = self.run_dir / REPORT_HTML
        if not page.is_file():
            page, _ = report_run(self.run_dir)
        try:
            from IPython.display import HTML
        except ImportError:
            raise ConfigError(f"results.report() shows the report in a notebook (IPython); outside one, open "
                              f"{page} in a browser") from None
        source = html.escape(page.read_text(encoding="utf-8"), quote=True)
        return HTML(f'<div><iframe srcdoc="{source}" style="width:100%;height:{height}px;border:1px solid #ccc">'
                    "</iframe></div>")  # a self-contained page: its styles stay inside the frame

    def predict(self, *images, top_k: int = 3, model: str | None = None, precision: str = "auto",
                runtime: str = "auto") -> list[dict]:
        """Classify image files with the winner (or the entry `model`, e.g. "efficientnet_lite0-head"), as
        `showdown predict RUN_DIR` does: one row per image with its top-k classes, in `precision` and `runtime` as
        there. `images`: files, folders or glob patterns, as paths or strings, or lists of them (a DataFrame's
        column of paths)."""
        files = expand_inputs(_paths(images))
        with process_state_kept():  # as a run keeps it
            predictor = open_model(self.run_dir, model, precision=precision, runtime=runtime, images=len(files))
            return list(predict_files(predictor, files, top_k=top_k, batch_size=PREDICT_BATCH,
                                      workers=predict_workers("auto", len(files), PREDICT_BATCH)))

    def explain(self, *images, model: str | None = None, out: str | Path | None = None) -> Explanations:
        """Grad-CAM overlays of image files with the winner (or the entry `model`), as `showdown explain RUN_DIR`
        makes them: written to `out` (default explain/ in the entry's folder) and returned; a notebook shows them
        as a gallery. `images` as for predict."""
        with process_state_kept():
            folder, done, method, skipped = explain_files(str(self.run_dir), _paths(images), model,
                                                          str(out) if out else None)
        return Explanations(folder, done, method, skipped)

    def export(self, fmt: str = "onnx", output: str | Path | None = None, *, model: str | None = None,
               quantize: str | None = None) -> Path:
        """The winner (or the entry `model`) as `showdown export RUN_DIR --format FMT` writes it: "onnx",
        "torchscript" or "tflite" (`quantize="int8"`: full-integer), at `output` or beside the entry's model.
        Returns the file's path, which `showdown predict` and LiteRT, ONNX Runtime or PyTorch take."""
        with process_state_kept():
            return export_model(self.run_dir, fmt, output, model, quantize)

    def to_pandas(self):
        """The table as a pandas DataFrame, best first."""
        try:
            import pandas
        except ImportError:
            raise ConfigError("results.to_pandas() needs pandas: pip install pandas") from None
        return pandas.DataFrame(sorted(self.rows, key=lambda r: -r["accuracy"]))


@dataclass
class Explanations:
    """What Results.explain made: the overlays (path, class, probability, heat map, PNG in `folder`) in the order
    given, and the files skipped as unreadable."""
    folder: Path
    items: list[Explained]
    method: str  # Grad-CAM for a run's models
    skipped: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"{self.method} overlays of {len(self.items)} image(s) in {self.folder}" + "".join(
            f"\n  {Path(item.path).name}: {item.label} {item.probability:.3f}" for item in self.items)

    def _repr_html_(self) -> str:
        """Jupyter's rendering: the overlays, each with its image's name and the class its map is of."""
        cells = "".join(
            f'<figure style="display:inline-block;margin:4px;width:232px"><img style="width:100%" src="data:image/png;'
            f'base64,{base64.b64encode((self.folder / item.png).read_bytes()).decode()}"><figcaption style="font-size:'
            f'12px;overflow-wrap:anywhere">{html.escape(Path(item.path).name)}: {html.escape(item.label)} '
            f"{item.probability:.3f}</figcaption></figure>" for item in self.items)
        skipped = f"<p>skipped as unreadable: {html.escape(', '.join(self.skipped))}</p>" if self.skipped else ""
        return f"<div><p>{html.escape(self.method)}, in {html.escape(str(self.folder))}</p>{cells}{skipped}</div>"


def _paths(images: tuple) -> list[str]:
    """The images given to Results.predict or explain, as path strings; an image in memory (PIL, an array, a
    tensor) is refused by its type, not printed whole in the message."""
    paths = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            paths.append(str(os.fspath(image)))
        elif getattr(image, "ndim", 1) == 1 and hasattr(image, "__iter__") and not isinstance(image, bytes):
            paths += _paths(tuple(image))  # a list, a DataFrame's column, a generator: not an image's rows
        else:
            raise ConfigError(f"images are given as files, folders or glob patterns (paths or strings), not a "
                              f"{type(image).__module__}.{type(image).__qualname__}; save the image to a file "
                              "and pass its path")
    if not paths:
        raise ConfigError("no images given: pass files, folders or glob patterns")
    return paths
