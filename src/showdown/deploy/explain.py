"""Where a model looked: Grad-CAM heat maps (pytorch-grad-cam) over images, written as overlay PNGs.

A heat map tells a data problem (the model reads the background, a watermark, a corner mark) from a model problem.
The layer explained is the last one whose output is still a spatial map, found by one probing forward pass, so
every timm CNN (and the small CNN) works unchanged; a token model (ViT) gets its last token sequence reshaped
back into a grid. The map is of the class the model predicted (what it decided on), on the image as the model
saw it (resized and cropped by its preprocessing; test-time flipping is left out).
"""
from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from showdown.data.images import UNREADABLE, decode_for, eval_transform
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.trained import choose_entry
from showdown.errors import DataError, ModelError
from showdown.fileio import slug
from showdown.models.saving import load_model
from showdown.run_schema import MODEL_WEIGHTS

EXTRA = "pip install 'tl-showdown[explain]' (pytorch-grad-cam)"


def available() -> bool:
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Explained:
    path: str  # the image
    png: str  # the overlay, relative to the output folder
    label: str  # the class the heat map is of (the predicted one)
    probability: float
    heat: np.ndarray  # (H, W) in 0..1, on the input the model saw


EXPLAIN_BATCH = 8  # images per Grad-CAM pass


def spatial_layer(backbone: nn.Module, input_size) -> tuple[nn.Module, object]:
    """(the last module whose output is a spatial map, reshape transform or None): a 4-D map with more than one
    cell, else (token models) the last 3-D token sequence, reshaped into its square grid."""
    outputs: list[tuple[nn.Module, tuple]] = []
    hooks = [m.register_forward_hook(lambda m, _, out: outputs.append((m, tuple(out.shape)))
                                     if isinstance(out, torch.Tensor) else None) for m in backbone.modules()]
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, *input_size, device=next(backbone.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    maps = [m for m, shape in outputs if len(shape) == 4 and shape[2] * shape[3] > 1]
    if maps:
        return maps[-1], None
    tokens = [(m, shape) for m, shape in outputs if len(shape) == 3 and shape[1] > 1]
    if not tokens:
        raise ModelError("Grad-CAM needs a layer with a spatial map or a token grid; this backbone has neither")
    module, (_, count, _) = tokens[-1]
    side = math.isqrt(count)  # prefix tokens (class, registers) come first and are dropped
    prefix = count - side * side

    def reshape(x: torch.Tensor) -> torch.Tensor:
        return x[:, prefix:].reshape(x.shape[0], side, side, x.shape[2]).permute(0, 3, 1, 2)
    return module, reshape


def explain(model: nn.Module, classes: list[str], preprocessing: Preprocessing, paths: list[str], out_dir: Path,
            names: list[str] | None = None, targets: list[int] | None = None) -> list[Explained]:
    """Grad-CAM of the predicted class for each image, as `out_dir/<name>.png` (overlay beside the image); an image
    that does not decode is left out, as predict skips it. `targets`: the class to explain for each path instead
    (a run's own test prediction, which its precision or engine may have tipped another way than this pass)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval()
    tta, model.tta = getattr(model, "tta", "none"), "none"  # one view: the heat map of what the model saw
    layer, reshape = spatial_layer(model.backbone, preprocessing.input_size)
    device = next(model.parameters()).device
    decoded = _decoded(paths, eval_transform(preprocessing))
    done = []
    try:
        with _gradients_from(layer), GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            # A few images at a time: one forward and one backward pass for all of them, not one per image (the
            # model is in eval mode, so each image's map is its own); 6 maps took 12 passes and 6 backwards.
            while chunk := list(itertools.islice(decoded, EXPLAIN_BATCH)):
                x = torch.stack([image for _, _, image in chunk]).to(device)
                # No targets: each image's map is of its predicted class, from the one forward pass CAM makes.
                given = [targets[i] for i, _, _ in chunk] if targets is not None else None
                heats = cam(input_tensor=x, targets=given and [ClassifierOutputTarget(t) for t in given])
                logits = cam.outputs.detach().float()  # grad-cam >= 1.5 keeps them
                chosen, probs = given or logits.argmax(1).tolist(), logits.softmax(1)
                for j, ((i, path, _), target) in enumerate(zip(chunk, chosen)):
                    name = names[i] if names else _numbered(i, path)
                    done.append(_saved(out_dir, name, path, x[j].detach().cpu(), heats[j], preprocessing,
                                       classes[target], float(probs[j, target])))
    finally:
        model.tta = tta
    return done


@contextlib.contextmanager
def _gradients_from(layer: nn.Module):
    """Inside, the backward pass starts and ends above `layer`: its output is passed on as a copy of a leaf that
    needs gradients, so nothing below it is differentiated. Grad-CAM needs the gradients of that output alone, and
    they are the same whatever lies below it. The backward pass through the whole backbone this saves took longer
    than the forward pass: 0.28-0.39 s against 0.11-0.34 s for 6 images of EfficientNet-Lite0 at 224 px on 2
    cores. (A copy, so a later in-place op finds no leaf; registered before GradCAM's own hooks, so they see it.
    The model's own flags are left alone: the entry's files are written beside this, entry.py.)"""
    hook = layer.register_forward_hook(lambda _module, _inputs, output: output.detach().requires_grad_(True).clone())
    try:
        yield
    finally:
        hook.remove()


def _numbered(i: int, path: str) -> str:
    return f"{i + 1:02d}-{slug(Path(path).stem)}"


def _saved(out_dir: Path, name: str, path: str, x: torch.Tensor, heat: np.ndarray, preprocessing: Preprocessing,
           label: str, probability: float) -> Explained:
    """The overlay of one image as out_dir/<name>.png, and what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)  # with the first overlay: where no image decodes, no empty folder
    # zlib level 1: 8 ms an overlay against 34 ms at Pillow's default 6, for files 11 % larger (448 x 224 px)
    _overlay(x, heat, preprocessing).save(out_dir / f"{name}.png", compress_level=1)
    return Explained(str(path), f"{name}.png", label, probability, heat)


def _overlay(x: torch.Tensor, heat: np.ndarray, preprocessing: Preprocessing) -> Image.Image:
    """The input as the model saw it (normalisation undone) beside the same with the heat map laid over it."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    mean = torch.tensor(preprocessing.mean, device=x.device).view(3, 1, 1)
    std = torch.tensor(preprocessing.std, device=x.device).view(3, 1, 1)
    rgb = (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
    overlay = show_cam_on_image(rgb, heat, use_rgb=True, image_weight=0.55)
    return Image.fromarray(np.concatenate([(rgb * 255).round().astype(np.uint8), overlay], axis=1))


def occlusion(predictor, paths: list[str], out_dir: Path) -> list[Explained]:
    """Where an exported model (TorchScript, ONNX, TFLite) looked. Its compiled graph has no layer to hook, so
    the map is occlusion sensitivity (Zeiler and Fergus, 2014): how much the predicted class's probability drops
    when a patch of the image is covered by the mean colour (0 after normalisation), a patch a quarter of the
    side (smaller ones leave too much of a larger cue visible) moved by a quarter patch, each pixel the mean drop
    of the patches over it."""
    done = []
    for i, path, x in _decoded(paths, eval_transform(predictor.preprocessing)):
        probs = predictor(x[None])[0]
        target = int(probs.argmax())
        heat = _occlusion_map(predictor, x, target, float(probs[target]))
        done.append(_saved(out_dir, _numbered(i, path), path, x, heat, predictor.preprocessing,
                           predictor.classes[target], float(probs[target])))
    return done


def _occlusion_map(predictor, x: torch.Tensor, target: int, probability: float, batch: int = 32) -> np.ndarray:
    height, width = x.shape[1:]
    patch = max(1, round(min(height, width) / 4))
    stride = max(1, patch // 4)
    tops, lefts = (sorted({*range(0, side - patch + 1, stride), side - patch}) for side in (height, width))
    boxes = [(top, left) for top in tops for left in lefts]
    drops = []
    for start in range(0, len(boxes), batch):
        chunk = boxes[start:start + batch]
        covered = x.repeat(len(chunk), 1, 1, 1)
        for k, (top, left) in enumerate(chunk):
            covered[k, :, top:top + patch, left:left + patch] = 0
        drops.extend(np.maximum(probability - predictor(covered)[:, target], 0))
    heat, cover = np.zeros((height, width)), np.zeros((height, width))
    for (top, left), drop in zip(boxes, drops):
        heat[top:top + patch, left:left + patch] += drop
        cover[top:top + patch, left:left + patch] += 1
    heat /= cover
    return (heat / heat.max() if heat.max() > 0 else heat).astype(np.float32)


def explain_files(model_path: str, inputs: list[str], model_name: str | None = None,
                  out: str | None = None) -> tuple[Path, list[Explained], str, list[str]]:
    """`showdown explain MODEL IMAGE...`: overlays of the images (files, folders, globs) in `out` (default
    `explain/` in the entry folder, or beside an exported file). (the folder, what was written, the method, the
    files skipped as unreadable, as predict skips them): Grad-CAM for a run or entry folder, occlusion for an
    exported file."""
    from showdown.deploy.inputs import expand_inputs  # predict's input rules: files, folders, globs
    from showdown.deploy.predict import open_model

    if not available():
        raise ModelError(f"showdown explain needs pytorch-grad-cam: {EXTRA}")
    path = Path(model_path)
    if path.name == MODEL_WEIGHTS:  # an entry's weights file: its entry folder, explained by Grad-CAM
        path = path.parent
    files = [str(f) for f in expand_inputs(inputs)]
    if not path.is_dir():  # an exported file: the same overlays, by occlusion
        predictor = open_model(path, model_name)  # which refuses --model
        target = Path(out) if out else path.parent / f"{path.stem}-{path.suffix.lstrip('.')}-explain"  # one per format
        done, skipped = _with_skipped(files, occlusion(predictor, files, target))
        return target, done, "occlusion", skipped
    folder = choose_entry(path, model_name)
    model, info = load_model(folder)
    target = Path(out) if out else folder / "explain"
    done, skipped = _with_skipped(files, explain(model, info.classes, Preprocessing.from_dict(info.preprocessing),
                                                 files, target))
    return target, done, "Grad-CAM", skipped


def _decoded(paths: list[str], transform) -> Iterator[tuple[int, str, torch.Tensor]]:
    """(index, path, transformed image) of each image that decodes, each decoded once, in order."""
    for i, path in enumerate(paths):
        try:
            image = decode_for(transform, Path(path))
        except UNREADABLE:
            continue
        yield i, path, transform(image)


def _with_skipped(paths: list[str], done: list[Explained]) -> tuple[list[Explained], list[str]]:
    """(what was written, the files skipped as unreadable, in order); none that decodes is one line."""
    if not done:
        raise DataError(f"none of the {len(paths)} image(s) could be read")
    written = {explained.path for explained in done}
    return done, [path for path in paths if path not in written]
