"""Where a trained model lives: an entry folder of a run (named, or the report's winner), and the metadata
an exported file carries (class names and preprocessing as JSON, under METADATA_KEY). Shared by predict and
export, so that neither imports the other."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from showdown.errors import ModelError
from showdown.ranking import ranked_setups
from showdown.run_schema import MODEL_INFO, SUMMARY_JSON, EntryRow, fold_folder, summary_rows

METADATA_KEY = "tl-showdown"
# The suffixes of each exported format: what `showdown predict` tells the files apart by, and export writes.
EXPORT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".ts", ".torchscript"), "tflite": (".tflite",)}


def choose_entry(run_dir: Path, model_name: str | None) -> Path:
    """The entry folder inside a run folder: the named one, or the report's winner (the best mean test accuracy
    over the seeds); of several seeds, the first, which the report's figures show: picking the luckiest seed's
    test accuracy would promise more than the setup gives."""
    if (run_dir / MODEL_INFO).is_file():
        return run_dir
    rows = summary_rows(run_dir)  # a damaged summary.json: one line naming it (run_schema.DamagedFileError)
    if rows is None:
        raise ModelError(f"{run_dir} is neither a run folder ({SUMMARY_JSON}) nor a saved model ({MODEL_INFO})")
    if not rows:
        raise ModelError(f"{run_dir / SUMMARY_JSON} lists no trained model")
    if model_name:
        matches = [r for r in rows if model_name in (r.folder, r.model, f"{r.model}/{r.strategy}")]
        if not matches:
            names = ", ".join(r.folder for r in rows)
            raise ModelError(f"no model '{model_name}' in {run_dir}; it has: {names}")
        rows = matches
    folder = run_dir / _winner(rows).folder
    if not (folder / MODEL_INFO).is_file() and (folder / fold_folder(1) / MODEL_INFO).is_file():
        raise ModelError(f"{folder} is cross-validated (--folds): it holds one model per fold; pass one of them, "
                         f"e.g. {folder / fold_folder(1)}")
    return folder



def _winner(rows: list[EntryRow]) -> EntryRow:
    """The first seed's row of the (model, strategy) with the best mean accuracy; a tie in the label's order."""
    _, seeds = ranked_setups(rows, lambda row: f"{row.model} / {row.strategy}", lambda row: row.accuracy)[0]
    return min(seeds, key=lambda row: row.seed)


def add_tflite_metadata(path: Path, text: str) -> None:
    """Append a metadata entry (name, buffer holding `text`) to the TFLite flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    flatbuffer_utils.write_model(model, str(path))


def read_tflite_metadata(path: Path) -> str | None:
    """The metadata entry written by add_tflite_metadata, read without building the whole model object."""
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_KEY:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode()
    return None
