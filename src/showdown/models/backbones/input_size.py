"""Input size of models built for one size: ViT, DeiT, DINOv2, CLIP's image towers, EVA, Swin, ...

A CNN takes any image size, but these models size their position embedding (and Swin its windows) at
creation, and their patch embedding refuses any other input. timm marks them with `fixed_input_size` in
their pretrained config and takes `img_size=` for them; it resamples the position embedding when it loads
weights made at another size (the architecture's own checkpoint filter), so `--image-size` only has to be
passed on at creation.
"""
from __future__ import annotations

import timm
from torch import nn

from showdown.errors import ModelError

# timm's DINOv2 config says 518 px, the resolution of the last phase of its pretraining. Its published linear
# probes (the `head` strategy; DINOv2 paper, Table 8) run at 224 px, a fifth of the pixels, so that is the default.
DINOV2_SIZE = 224


def takes_img_size(timm_name: str) -> bool:
    """Whether timm builds this architecture for one input size (and so accepts `img_size=`)."""
    try:
        return bool(timm.models.get_pretrained_cfg_value(timm_name, "fixed_input_size"))
    except (RuntimeError, KeyError, ValueError):  # an architecture without a pretrained config (keras_arch.py)
        return False


def size_kwargs(timm_name: str, image_size: int | None) -> dict:
    """`img_size=` for an architecture built for one size: `image_size`, else DINOv2's 224, else nothing."""
    if not takes_img_size(timm_name):
        return {}
    size = image_size or (DINOV2_SIZE if "dinov2" in timm_name else None)
    return {"img_size": size} if size else {}


def check_patch_multiple(model: nn.Module, size: int, name: str) -> None:
    """A patch model sees `size // patch` patches and refuses the rest at the first image: say so at once."""
    patch_embed = getattr(model, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is None:
        return
    patch = max(patch) if isinstance(patch, (tuple, list)) else int(patch)
    if size % patch:
        below, above = size - size % patch, size - size % patch + patch
        raise ModelError(f"--image-size {size} does not fit {name}: it must be a multiple of its patch size "
                         f"{patch} (e.g. {below or above} or {above})")
