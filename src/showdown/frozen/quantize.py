"""int8 for the frozen pass (`--precision int8`): the exported ONNX graph quantised by NNCF (OpenVINO's
post-training quantisation), calibrated on the run's own training images, and run by OpenVINO.

Only the frozen pass runs in int8: the head (and a fine-tuned top) trains in fp32 on int8 features (or boundary
activations), and the test scores are computed on int8 features too. The saved model (`showdown predict`,
export) is the fp32 network: its predictions may differ from the int8 pass's in a few images. Calibration sees
the images exactly as the frozen pass does (the same decoder, transform and in-graph resize: feature_cache.py
builds the batches), at most CALIBRATION_IMAGES of the training split, evenly spaced through it (every class,
no random draw; with --folds, of every image, each of which is a test image once anyway; calibration reads no
label). NNCF's model type is TRANSFORMER for a graph with attention (a Softmax), else the default
(CNN, symmetric PERFORMANCE preset). The first convolution, the one reading the pixels, stays in float (a
small share of the work): quantising its input was most of the error on EfficientNet-Lite0 (median cosine to
the fp32 features 0.9935 with it, 0.9968 without it and the last one; the batch size of calibration, the MIXED
preset and full bias correction changed nothing). On a CPU without VNNI or AMX (AVX2 only, or AVX-512 without
VNNI), int8 products are summed in pairs into int16, which saturates: NNCF's overflow fix then quantises every
layer's weights to 7 bits (on an AVX2 Zen 3, Lite0's worst image went from cosine 0.85 to 0.95; recipe()).

The quantised model is kept in the cache (`int8/<key>/`, sealed by a manifest like every folder entry), keyed by
the ONNX graph's bytes (weights, architecture, input size), the calibration set (files, sizes, mtimes and the
transform), and the NNCF and OpenVINO versions: a re-run reads it back instead of calibrating again (several
seconds on 2 cores). Measured figures: docs/performance.md ("int8").
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from showdown.cache import cache_root, verified_folder, write_manifest
from showdown.data.images import decoder, image_loader
from showdown.data.preprocessing import Preprocessing
from showdown.device import has_int8_dot_products
from showdown.errors import ConfigError, DiskError, one_line
from showdown.fileio import digest, file_stamp

log = logging.getLogger(__name__)
EXTRA = "pip install 'tl-showdown[int8]'"
CALIBRATION_IMAGES = 300  # NNCF's own default subset size
KIND = "int8"  # the cache folder (cache.KINDS)
RECIPE = "nncf-default-first-conv-float"  # in every key: a change of how we quantise invalidates models and features



@dataclass(frozen=True)
class Calibration:
    """The images int8 is calibrated on, as the frozen pass sees them: `key` names them (files and transform),
    `batches()` decodes them (only when no cached model fits)."""
    key: str
    batches: Callable[[], Iterable[torch.Tensor]]


def missing_package() -> str | None:
    """The package int8 needs that cannot be imported here (openvino, nncf), or None."""
    for name in ("openvino", "nncf"):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
            return name
    return None


def check_available() -> None:
    """One line (a ConfigError, exit 2) naming the extra when OpenVINO or NNCF is missing."""
    name = missing_package()
    if name is not None:
        raise ConfigError(f"--precision int8 needs OpenVINO and NNCF ({name} is not installed): {EXTRA}, "
                          "or use --precision fp32 or bf16")


def calibration_items(items: list, count: int = CALIBRATION_IMAGES) -> list:
    """At most `count` of `items`, evenly spaced: every class of a folder-ordered split, the same set every time."""
    if len(items) <= count:
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def files_key(items: list) -> str:
    """The identity of the calibration images and the recipe (the feature cache key holds it: int8 features depend
    on both)."""
    return digest([recipe(), *(f"{path}|{file_stamp(path)}\n" for path, _ in calibration_items(items))])[:24]


def calibration_for(items: list, transform, preprocessing: Preprocessing, side: int | None,
                    batch_size: int) -> Calibration:
    """The calibration images among `items` through the frozen pass's own `transform` (decoded in this process,
    only if no cached model fits); `side`: the small-image path's square side (the resize is in the graph)."""
    chosen = calibration_items(items)
    key = digest([files_key(items), json.dumps(preprocessing.to_dict(), sort_keys=True), str(side), decoder()])

    def batches() -> list[torch.Tensor]:
        loader = image_loader(chosen, transform, batch_size=batch_size, workers=0)
        return [images for images, *_ in loader if len(images)]
    return Calibration(key, batches)


def recipe() -> str:
    """How this machine quantises, in every key: a cache shared by a CPU with VNNI and one without keeps both."""
    return RECIPE if has_int8_dot_products() else f"{RECIPE}-overflow-fix"


def int8_model(core, path: Path, calibration: Calibration):
    """The ONNX graph at `path` quantised on `calibration` (an OpenVINO model), or read from the cache; the engine
    compiles it (engines.py)."""
    folder = cache_root() / KIND / _model_key(path, calibration)
    if verified_folder(folder):
        log.info("int8 model from the cache (%s)", folder.name)
        return core.read_model(str(folder / "model.xml"))
    model = quantize(core.read_model(str(path)), calibration.batches())
    _store(model, folder)
    return model


def quantize(model, batches: Iterable[torch.Tensor]):
    """`model` (an OpenVINO model) quantised to int8 by NNCF on the calibration `batches`."""
    data = [batch.contiguous().numpy() for batch in batches]
    if not data:
        raise ConfigError("--precision int8 found no readable training image to calibrate on")
    log.info("int8: calibrating on %d images", sum(len(batch) for batch in data))
    with _quiet():
        import nncf

        ops = model.get_ordered_ops()
        attention = any(op.get_type_name() == "Softmax" for op in ops)
        options = {"model_type": nncf.ModelType.TRANSFORMER} if attention else {}
        first = next((op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"), None)
        if first is not None:  # the layer reading the pixels stays float: see the module docstring
            options["ignored_scope"] = nncf.IgnoredScope(names=[first])
        if not has_int8_dot_products():  # 7-bit weights, so that int16 sums cannot saturate (module docstring)
            from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

            options["advanced_parameters"] = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
        # subset_size counts dataset items (batches here): all of them, CALIBRATION_IMAGES images at most
        return nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), **options)


@contextlib.contextmanager
def _quiet():
    """NNCF without its progress bars (rich, on stdout) and notes, and without the note torch logs when NNCF
    imports its PyTorch backend ("No CUDA runtime is found"): a run shows its own progress lines only."""
    quieted = [logging.getLogger(name) for name in ("nncf", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in quieted]
    for logger in quieted:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(quieted, levels):
            logger.setLevel(level)


def _model_key(path: Path, calibration: Calibration) -> str:
    import nncf
    import openvino as ov

    graph = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest([json.dumps([graph, calibration.key, nncf.__version__, ov.__version__])])[:24]


def _store(model, folder: Path) -> None:
    """Save the quantised model as a sealed cache entry; a disk that refuses it costs a calibration next run."""
    import openvino as ov

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
            staging = Path(scratch) / folder.name
            staging.mkdir()
            ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
            write_manifest(staging)
            if folder.exists():  # another process stored it meanwhile
                return
            try:
                staging.rename(folder)
            except OSError:
                if not folder.is_dir():  # not another rank's entry, renamed in first: the disk refused ours
                    raise
    except (OSError, DiskError, RuntimeError) as exc:  # RuntimeError: OpenVINO's save_model on a full disk
        log.warning("the int8 model could not be cached (%s); going on without caching it",
                    getattr(exc, "strerror", None) or one_line(exc))
