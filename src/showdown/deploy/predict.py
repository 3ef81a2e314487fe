"""Use a trained model: a run folder, an entry folder, or an exported ONNX / TorchScript / TFLite file.

Every kind becomes a `Predictor` (class names, preprocessing, images -> probabilities), so `showdown predict`
treats them alike. Images stream through a DataLoader: memory stays flat however large the folder.

A run folder's model runs in the engine `showdown run` gives frozen layers (`--runtime auto`: OpenVINO where the
extra is installed; frozen/engines.py), from 8-bit pixels normalised inside its graph (data/pixels.py), each batch
started while the last one runs (docs/performance.md, "Predict in the frozen layers' engines"). Where the images fit
in one batch, eager PyTorch answers sooner than an export and a compile (`predict_runtime`). The engine is built
once the decoding workers have started, while they decode the first images.

`--precision auto`: a run folder's model predicts in fp32 where its run was made in fp32 (or int8, whose head
trained in fp32, or where environment.json does not say), else in what `showdown run --precision auto` picks on
this device; so a bf16 run predicts in bf16 where the CPU has it natively. Exported files run as exported:
TorchScript in fp32 unless asked otherwise, ONNX (fp32) and TFLite always.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from showdown.config.cores import auto_workers
from showdown.data.images import image_loader, why_unreadable
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.exported import open_onnx, open_tflite, open_torchscript
from showdown.deploy.predictor import Predictor
from showdown.deploy.trained import EXPORT_SUFFIXES, choose_entry
from showdown.device import resolve_device
from showdown.errors import ConfigError, ModelError
from showdown.frozen.engines import ENGINE_NAMES, Engines, frozen_forward, in_order, photo_inputs, resolve_runtime
from showdown.models.saving import load_model
from showdown.precision import autocast, resolve_precision
from showdown.run_schema import ENVIRONMENT, MODEL_WEIGHTS, read_json

PREDICT_BATCH = 32  # images per batch, `showdown predict --batch-size`'s default
EAGER = "eager"  # predict_runtime's choice for a few images: the model in PyTorch as it is, nothing traced or exported



class _WholeModel:
    """A run folder's model, built for its engine when first asked to compute (`build`): predict_files starts its
    decoding workers first, so they fork before the engine's threads exist and decode while it exports and compiles.
    Class probabilities per batch; through `in_order`, batches started while the one before runs where the engine
    can (OpenVINO)."""

    def __init__(self, build: Callable[[], Callable], device: torch.device, precision: str):
        self.build, self.device, self.precision = build, device, precision
        self._forward = None

    @property
    def forward(self) -> Callable:
        if self._forward is None:
            with torch.inference_mode(), autocast(self.precision, self.device.type):
                self._forward = self.build()
        return self._forward

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        forward = self.forward
        with torch.inference_mode(), autocast(self.precision, self.device.type):
            return _probabilities(forward(images.to(self.device, non_blocking=True)))

    def in_order(self, jobs: Iterable[tuple[Any, torch.Tensor]]) -> Iterator[tuple[Any, np.ndarray]]:
        ahead = getattr(self.forward, "in_order", None)
        if ahead is None:  # PyTorch: one batch after the other, each under the precision's autocast
            for tag, images in jobs:
                yield tag, self(images)
            return
        for tag, logits in ahead(jobs):  # a graph engine on the CPU: no PyTorch state to set around it
            yield tag, _probabilities(logits)


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    return logits.float().softmax(1).cpu().numpy()


def _run_folder_predictor(folder: Path, device: torch.device, precision: str, runtime: str) -> Predictor:
    """The entry folder's model in `runtime` (EAGER, or "auto" or an engine name: engines.resolve_runtime, checked
    here, built on first use) on `device`, fed 8-bit pixels that its graph normalises where the eval transform
    allows (data/pixels.py), else floats."""
    model, info = load_model(folder)
    preprocessing = Preprocessing.from_dict(info.preprocessing)
    transform, stage, example = photo_inputs(preprocessing, preprocessing)
    model = model.eval().to(device, memory_format=torch.channels_last)
    if runtime == EAGER:
        whole = (torch.nn.Sequential(stage.module, model) if stage else model).to(device).eval()
        engine = "torch"

        def build():
            return lambda images: whole(images.contiguous(memory_format=torch.channels_last))
    else:
        engine = resolve_runtime(runtime, precision, device.type)  # one this device cannot run: said before output
        built = Engines()

        def build():
            forward = frozen_forward(model, example.to(device), precision, runtime, info.name, engines=built,
                                     stage=stage)
            predictor.engine = ENGINE_NAMES[built.ran.get(info.name, engine)]  # where it fell back, what ran
            return forward
    seed = re.search(r"-seed(\d+)$", folder.name)  # one of --repeats' models (experiment/run_folder.entry_folder)
    name = f"{info.name}, seed {seed.group(1)}" if seed else info.name
    predictor = Predictor(name, info.classes, preprocessing, _WholeModel(build, device, precision), precision,
                          ENGINE_NAMES[engine], transform, pin_memory=device.type == "cuda")
    return predictor


def predict_precision(requested: str, device: torch.device, evaluated: str | None = None) -> str:
    """What a PyTorch model predicts in on `device`: `requested`, or for "auto" fp32 where its run was made in fp32
    or int8 (`evaluated`; None: unknown), else this device's own choice (resolve_precision)."""
    if requested == "int8":
        raise ConfigError("int8 is for a run's frozen layers (`showdown run --precision int8`); predict in auto, "
                          "fp32, bf16 or fp16, or export a quantised TFLite file (`showdown export --format tflite "
                          "--quantize int8`)")
    if requested == "auto" and evaluated in (None, "fp32", "int8"):
        return "fp32"
    return resolve_precision(requested, device)


def evaluated_precision(entry: Path) -> str | None:
    """The precision the run of an entry folder evaluated in (its environment.json), None where not recorded."""
    for folder in (entry.parent, entry.parent.parent):  # a fold's entry folder is one level deeper
        try:
            environment = read_json(folder / ENVIRONMENT)
        except (OSError, ValueError):  # unreadable or damaged: as if not recorded
            continue
        if isinstance(environment, dict) and "precision" in environment:
            return environment["precision"]
    return None


def predict_runtime(requested: str, images: int | None) -> str:
    """The engine a run folder's model predicts `images` (None: not known) in: `requested`, or for "auto" EAGER
    PyTorch for at most one batch at the default size (an export, a compile or a trace would cost more than they
    save), else what `showdown run` picks."""
    return EAGER if requested == "auto" and images is not None and images <= PREDICT_BATCH else requested


def predict_workers(requested: str | int, images: int, batch_size: int) -> int:
    """Image-decoding worker processes: `requested`, or for "auto" none where the images fit in one batch (starting
    workers would cost more than they save), else this machine's usable cores, at most 8."""
    if requested != "auto":
        return int(requested)
    return 0 if images <= batch_size else auto_workers()


def open_model(path: str | Path, model_name: str | None = None, device: str = "cpu",
               precision: str = "auto", runtime: str = "auto", images: int | None = None) -> Predictor:
    """MODEL of `showdown predict`: run folder (its best entry, or `model_name`), entry folder, .onnx or .pt.
    Run folders and TorchScript files run on `device` (see showdown.device) in `precision` (predict_precision);
    a run folder's model in `runtime` (the engines of `showdown run --runtime`; predict_runtime, for `images` to
    come); .onnx and .tflite on the CPU, as exported."""
    path = Path(path)
    if path.is_dir():
        folder = choose_entry(path, model_name)
        where = resolve_device(device)
        chosen = predict_precision(precision, where, evaluated_precision(folder))
        return _run_folder_predictor(folder, where, chosen, predict_runtime(runtime, images))
    if not path.is_file():
        raise ModelError(f"{path} does not exist; give a run folder, an entry folder, or an exported .onnx / .pt / "
                         ".tflite file")
    if runtime != "auto" and path.name != MODEL_WEIGHTS:
        raise ConfigError(f"--runtime {runtime} is for run folders; {path.name} runs as it was exported")
    if model_name:
        raise ConfigError(f"--model picks an entry of a run folder; {path.name} is one model")
    if path.suffix in EXPORT_SUFFIXES["torchscript"]:
        where = resolve_device(device)
        return open_torchscript(path, where, predict_precision(precision, where, evaluated="fp32"))
    if path.name == MODEL_WEIGHTS:
        return open_model(path.parent, device=device, precision=precision, runtime=runtime, images=images)
    if path.suffix not in (".onnx", ".tflite"):
        raise ModelError(f"{path}: not a model showdown can run (expected a run folder, .onnx, TorchScript .pt "
                         "or .tflite)")
    exported = open_onnx(path) if path.suffix == ".onnx" else open_tflite(path)
    if precision not in ("auto", exported.precision):  # "auto": what it was exported in
        raise ConfigError(f"{path.name} runs in {exported.precision}, as it was exported; --precision {precision} "
                          "is for run folders and TorchScript files")
    return exported


def predict_files(predictor: Predictor, files: list[Path], *, top_k: int = 3, batch_size: int = PREDICT_BATCH,
                  workers: int = 0, labels: list[str | None] | None = None) -> Iterator[dict]:
    """One result per file, in order; an unreadable file yields a row with its error instead of classes."""
    k = min(top_k, len(predictor.classes))
    loader = image_loader([(path, 0) for path in files], predictor.transform, batch_size=batch_size, workers=workers,
                          pin_memory=predictor.pin_memory)
    rows: dict[int, dict] = {}  # made, not yet given: those after a row still being computed
    # iter(loader) at once: the workers start here, before the engine is built (_WholeModel); a generator, so that
    # closing it stops them then, not when a kept traceback (a notebook's, after Ctrl-C) lets the loader go
    loaded = (batch for batch in loader)

    def batches():  # (indices, images) of each batch with a readable image; the unreadable files' rows on the way
        for images, _, indices, failed in loaded:
            rows.update({index: {"path": str(files[index]),
                                 "error": f"unreadable image: {why_unreadable(files[index])}"} for index in failed})
            if len(images):
                yield indices, images

    given = 0
    with contextlib.closing(loaded), contextlib.closing(in_order(predictor.forward, batches())) as computed:
        for indices, probs in computed:
            if not np.isfinite(probs).all():  # weights overwritten mid-file still load, and give NaN
                raise ModelError(f"{predictor.name} outputs NaN or infinite scores: its weights are damaged; train or "
                                 "export it again")
            for index, p in zip(indices.tolist(), probs):
                order = np.argsort(-p)[:k]
                rows[index] = {"path": str(files[index]), "top": [(predictor.classes[i], float(p[i])) for i in order]}
            while given in rows:
                yield _labelled(rows.pop(given), labels, given)
                given += 1
    for index in sorted(rows):  # unreadable files after the last readable one
        yield _labelled(rows[index], labels, index)


def _labelled(row: dict, labels: list[str | None] | None, index: int) -> dict:
    if labels is not None and labels[index] is not None:
        row["true"] = labels[index]
    return row
