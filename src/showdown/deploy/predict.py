"""Use a trained model: a run folder, an entry folder, or an exported ONNX / TorchScript / TFLite file.

Every kind becomes a `Predictor` (class names, preprocessing, images -> probabilities), so `showdown predict`
treats them alike. Images stream through a DataLoader: memory stays flat however large the folder.

`--precision auto`: a run folder's model predicts in fp32 where its run was made in fp32 (or int8, whose head
trained in fp32, or where environment.json does not say), else in what `showdown run --precision auto` picks on
this device. So a bf16 run predicts in bf16 where the CPU has it natively: on the Zen 4 CPU here, 500 photos
through an EfficientNet-Lite0 took 2.8 s instead of 4.7 s in fp32, with the same top class for every photo
(docs/performance.md, "Memory the kernel zeroed"). Exported files run as exported: TorchScript in fp32 unless asked
otherwise, ONNX (fp32) and TFLite always.
"""
from __future__ import annotations

import glob
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from showdown.data.folder import images_in, is_visible
from showdown.data.formats import IMAGE_SUFFIXES, check_readable
from showdown.data.images import eval_transform, image_loader
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.litert_quiet import stderr_lines_dropped
from showdown.deploy.trained import METADATA_KEY, choose_entry, read_tflite_metadata
from showdown.device import resolve_device, to_device
from showdown.errors import ConfigError, DataError, ModelError
from showdown.models.saving import load_model
from showdown.precision import autocast, resolve_precision
from showdown.run_schema import ENVIRONMENT, MODEL_WEIGHTS, read_json

# The --precision values an exported file takes: what it was exported in (ONNX: fp32), or "auto" for that.
EXPORTED_PRECISIONS = {".onnx": ("auto", "fp32"), ".tflite": ("auto",)}


@dataclass
class Predictor:
    name: str
    classes: list[str]
    preprocessing: Preprocessing
    forward: object  # float32 image batch (N, 3, H, W) -> probabilities as a numpy array
    precision: str | None = None  # what a PyTorch forward computes in; None: an ONNX or TFLite file, as exported

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.forward(images)


def _torch_forward(model, device: torch.device, precision: str):
    model = model.to(device)

    def forward(images):
        with torch.inference_mode(), autocast(precision, device.type):
            return model(to_device(images, device, channels_last=True)).float().softmax(1).cpu().numpy()
    return forward


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


def open_model(path: str | Path, model_name: str | None = None, device: str = "cpu",
               precision: str = "auto") -> Predictor:
    """MODEL of `showdown predict`: run folder (its best entry, or `model_name`), entry folder, .onnx or .pt.
    Run folders and TorchScript files run on `device` (see showdown.device) in `precision` (predict_precision);
    .onnx and .tflite on the CPU, as exported."""
    path = Path(path)
    if path.is_dir():
        folder = choose_entry(path, model_name)
        model, info = load_model(folder)
        where = resolve_device(device)
        chosen = predict_precision(precision, where, evaluated_precision(folder))
        return Predictor(info.name, info.classes, Preprocessing.from_dict(info.preprocessing),
                         _torch_forward(model, where, chosen), chosen)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; give a run folder, an entry folder, or an exported .onnx / .pt file")
    if path.suffix in (".pt", ".ts", ".torchscript"):
        where = resolve_device(device)
        return _open_torchscript(path, where, predict_precision(precision, where, evaluated="fp32"))
    if path.name == MODEL_WEIGHTS:
        return open_model(path.parent, device=device, precision=precision)
    if path.suffix in EXPORTED_PRECISIONS and precision not in EXPORTED_PRECISIONS[path.suffix]:
        runs = "in fp32, as it was exported" if path.suffix == ".onnx" else "as it was exported"
        raise ConfigError(f"{path.name} runs {runs}; --precision {precision} is for run folders and TorchScript files")
    if path.suffix == ".onnx":
        return _open_onnx(path)
    if path.suffix == ".tflite":
        return _open_tflite(path)
    raise ModelError(f"{path}: not a model showdown can run (expected a run folder, .onnx, TorchScript .pt "
                     "or .tflite)")


def _metadata(text: str | None, path: Path) -> dict:
    if not text:
        raise ModelError(f"{path} carries no tl-showdown metadata (classes, preprocessing); export it with "
                         "`showdown export`")
    return json.loads(text)


def _open_onnx(path: Path) -> Predictor:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a bad file
        raise ModelError(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0]}") from exc
    info = _metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
    input_name = session.get_inputs()[0].name

    def forward(images):
        return session.run(None, {input_name: images.numpy().astype(np.float32)})[0]

    return Predictor(info["name"], info["classes"], Preprocessing.from_dict(info["preprocessing"]), forward)


def _open_torchscript(path: Path, device: torch.device, precision: str) -> Predictor:
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"{path} is not a TorchScript model: {str(exc).splitlines()[0]}") from exc
    info = _metadata(extra[f"{METADATA_KEY}.json"], path)

    def forward(images):
        with torch.inference_mode(), autocast(precision, device.type):
            return module(images.to(device)).float().cpu().numpy()  # exported models output probabilities

    return Predictor(info["name"], info["classes"], Preprocessing.from_dict(info["preprocessing"]), forward,
                     precision)


def _open_tflite(path: Path) -> Predictor:
    from ai_edge_litert.interpreter import Interpreter


    try:
        text = read_tflite_metadata(path)
        with stderr_lines_dropped():
            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
    except Exception as exc:  # the flatbuffer reader and the interpreter raise their own types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise ModelError(f"{path} is not a valid TFLite model: {reason}") from exc
    info = _metadata(text, path)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def forward(images):
        rows = []
        for image in images.permute(0, 2, 3, 1).numpy():  # the file takes NHWC, one image at a time
            interpreter.set_tensor(source["index"], _quantized(image[None], source))
            interpreter.invoke()
            out = interpreter.get_tensor(target["index"])
            scale, zero = target["quantization"]
            rows.append((out.astype(np.float32) - zero) * scale if scale else out.astype(np.float32))
        return np.concatenate(rows)

    return Predictor(info["name"], info["classes"], Preprocessing.from_dict(info["preprocessing"]), forward)


def _quantized(array: np.ndarray, detail: dict) -> np.ndarray:
    """A float input as the tensor wants it: as is, or int8/uint8 with the tensor's scale and zero point."""
    if detail["dtype"] == np.float32:
        return array.astype(np.float32)
    scale, zero = detail["quantization"]
    limits = np.iinfo(detail["dtype"])
    return np.clip(np.round(array / scale + zero), limits.min, limits.max).astype(detail["dtype"])


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image files, folders (searched recursively, hidden files skipped) and glob patterns, in a stable order."""
    files: list[Path] = []
    for text in inputs:
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))] if glob.has_magic(text) else [Path(text)]
        if not matches:
            raise DataError(f"'{text}' matches no files")
        for path in matches:
            if path.is_dir():
                files += images_in(path)
            elif path.is_file():
                files.append(path)
            else:
                raise DataError(f"{path} does not exist")
    files = [f for f in dict.fromkeys(files) if is_visible(f.name)]
    check_readable(files, ", ".join(inputs))  # a HEIC file given by name, without pillow-heif: said, not skipped
    if not files:
        raise DataError(f"no images found in {', '.join(inputs)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def folder_labels(files: list[Path], inputs: list[str], classes: list[str]) -> tuple[list[str | None], str | None]:
    """True labels from class-named sub-folders of the input folders, and a warning when those sub-folders
    do not name the model's classes (a model trained on other classes)."""
    roots = [Path(t) for t in inputs if Path(t).is_dir()]
    labels: list[str | None] = []
    seen_folders = set()
    for path in files:
        root = next((r for r in roots if r in path.parents and path.parent != r), None)
        folder = path.relative_to(root).parts[0] if root else None
        if folder:
            seen_folders.add(folder)
        labels.append(folder if folder in classes else None)
    unknown = sorted(seen_folders - set(classes))
    warning = None
    if unknown:
        warning = (f"input folder(s) {', '.join(unknown[:5])} are not classes of this model, which knows only "
                   f"{', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}; "
                   "their images get the model's classes")
    return labels, warning


def predict_files(predictor: Predictor, files: list[Path], *, top_k: int = 3, batch_size: int = 32,
                  workers: int = 0, labels: list[str | None] | None = None) -> Iterator[dict]:
    """One result per file, in order; an unreadable file yields a row with its error instead of classes."""
    k = min(top_k, len(predictor.classes))
    items = [(path, 0) for path in files]
    loader = image_loader(items, eval_transform(predictor.preprocessing), batch_size=batch_size, workers=workers)
    for images, _, indices, failed in loader:
        rows = {}
        if len(images):
            probs = predictor(images)
            for index, p in zip(indices.tolist(), probs):
                order = np.argsort(-p)[:k]
                rows[index] = {"path": str(files[index]),
                               "top": [(predictor.classes[i], float(p[i])) for i in order]}
        for index in failed:
            rows[index] = {"path": str(files[index]), "error": "unreadable image"}
        for index in sorted(rows):
            if labels is not None and labels[index] is not None:
                rows[index]["true"] = labels[index]
            yield rows[index]
