"""`showdown predict` output: a console table, CSV or JSON, written row by row as predictions stream in."""
from __future__ import annotations

import contextlib
import csv
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from showdown import bars
from showdown.data.folder import identity
from showdown.deploy.inputs import expand_inputs, folder_labels
from showdown.deploy.predict import open_model, predict_files, predict_workers
from showdown.errors import ConfigError, DataError
from showdown.fileio import check_output_file


def output_format(output: str | None) -> str:
    """What a file named `output` holds when no --format is given: CSV for .csv, JSON for .json, else the table."""
    suffix = Path(output).suffix.lower().lstrip(".") if output else ""
    return suffix if suffix in ("csv", "json") else "table"


def _one_of(output: str, files: list[Path]) -> bool:
    """Whether `output` is one of the images, however spelt or linked: the same file (device and inode), where it
    exists already (one stat an image: 18 ms for 3,670 photos, where resolving each path took 160 ms)."""
    try:
        written = identity(Path(output))
    except OSError:  # not there yet, so none of the images
        return False
    for path in files:
        with contextlib.suppress(OSError):  # an image gone since the listing: not the output
            if identity(path) == written:
                return True
    return False


@contextmanager
def _destination(output: str | None):
    if output is None:
        yield sys.stdout
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)  # as --out folders are made
        # file names that are not valid UTF-8 written escaped, as on the console
        with open(output, "w", encoding="utf-8", errors="backslashreplace", newline="") as handle:
            yield handle


def write_predictions(model: str, inputs: list[str], *, model_name: str | None = None, top_k: int = 3,
                      fmt: str | None = None, output: str | None = None, batch_size: int = 32,
                      workers: str | int = "auto", device: str = "auto", precision: str = "auto",
                      runtime: str = "auto") -> dict:
    """Predict every input image and write the rows (`fmt` None: as the output's suffix says, .csv or .json, else
    the table); returns counts (predicted, unreadable, labelled, correct)."""
    fmt = fmt or output_format(output)
    if output is not None:
        check_output_file(output, "predicted.csv")
    try:  # counted before the model opens (predict_runtime); a model's error still comes before its inputs'
        files, missing = expand_inputs(inputs), None
    except DataError as exc:
        files, missing = [], exc
    predictor = open_model(model, model_name, device=device, precision=precision, runtime=runtime,
                           images=len(files))
    if missing is not None:
        raise missing
    if output is not None and _one_of(output, files):
        raise ConfigError(f"--output {output} is one of the images to classify; write the predictions elsewhere")
    workers = predict_workers(workers, len(files), batch_size)
    labels, warning = folder_labels(files, inputs, predictor.classes)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    counts = {"predicted": 0, "unreadable": 0, "labelled": 0, "correct": 0}
    rows = predict_files(predictor, files, top_k=top_k, batch_size=batch_size, workers=workers, labels=labels)
    progress = bars.progress(rows, total=len(files), unit="img", leave=False)
    with _destination(output) as out:
        writer = _WRITERS[fmt](out, min(top_k, len(predictor.classes)))
        try:
            for row in progress:
                if "error" in row:
                    counts["unreadable"] += 1
                else:
                    counts["predicted"] += 1
                    if "true" in row:
                        counts["labelled"] += 1
                        counts["correct"] += row["true"] == row["top"][0][0]
                writer.write(row)
        finally:  # stopped by Ctrl-C or an error: the rows so far stay a whole CSV or JSON array
            writer.close()
    if not counts["predicted"]:
        raise DataError(f"none of the {len(files)} image(s) could be read")
    summary = (f"{counts['predicted']} image(s) classified by {predictor.name} "
               f"({predictor.precision}, {predictor.engine})")
    if counts["unreadable"]:
        summary += f"; {counts['unreadable']} unreadable file(s) skipped"
    if counts["labelled"]:
        accuracy = counts["correct"] / counts["labelled"]
        summary += f"; accuracy on {counts['labelled']} labelled by folder: {accuracy:.4f}"
    print(summary, file=sys.stderr)
    return counts


class _Table:
    def __init__(self, out, top_k):
        self.out = out

    def write(self, row):
        if "error" in row:
            self.out.write(f"{row['path']}  ({row['error']})\n")
        else:
            classes = "  ".join(f"{name} {p:.3f}" for name, p in row["top"])
            self.out.write(f"{row['path']}  {classes}\n")

    def close(self):
        pass


class _Csv:
    def __init__(self, out, top_k):
        fields = ["path"] + [f"{kind}{i}" for i in range(1, top_k + 1) for kind in ("class", "prob")]
        self.writer = csv.DictWriter(out, fieldnames=[*fields, "true", "error"], extrasaction="ignore")
        self.writer.writeheader()

    def write(self, row):
        flat = {"path": row["path"], "true": row.get("true", ""), "error": row.get("error", "")}
        for i, (name, p) in enumerate(row.get("top", []), 1):
            flat[f"class{i}"], flat[f"prob{i}"] = name, f"{p:.6f}"
        self.writer.writerow(flat)

    def close(self):
        pass


class _Json:
    """A JSON array written element by element, so a huge folder never sits in memory."""

    def __init__(self, out, top_k):
        self.out, self.first = out, True
        out.write("[")

    def write(self, row):
        record = {"path": row["path"], **({"error": row["error"]} if "error" in row else {
            "predictions": [{"class": name, "probability": p} for name, p in row["top"]]}),
            **({"true": row["true"]} if "true" in row else {})}
        self.out.write(("\n  " if self.first else ",\n  ") + json.dumps(record))
        self.first = False

    def close(self):
        self.out.write("\n]\n")


_WRITERS = {"table": _Table, "csv": _Csv, "json": _Json}
