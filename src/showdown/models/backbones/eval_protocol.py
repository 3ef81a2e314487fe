"""The eval transform of a backbone family's published linear probes, where timm's pretrained config differs.

timm's data config says how the weights were evaluated as an ImageNet classifier or at the last pretraining
resolution: DINOv2's gives crop_pct 1.0 (from its 518 px config), CLIP's 0.95. The linear probes the `head`
strategy reproduces were evaluated otherwise, and so is the default here (at another --image-size the same
crop ratio applies):
- DINOv2 (its repository's `make_classification_eval_transform`): short side resized to 256 px, bicubic,
  centre crop 224, ImageNet mean and std: crop_pct 224 / 256 = 0.875.
- CLIP (OpenAI's `clip._transform`): short side resized to 224 px, bicubic, centre crop 224, CLIP's own mean
  and std: crop_pct 1.0. Only the image-text weights: a tower fine-tuned on ImageNet (tag `*ft*`) keeps timm's.
"""
from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

DINOV2_EVAL = {"crop_pct": 224 / 256, "interpolation": "bicubic", "crop_mode": "center",
               "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
CLIP_EVAL = {"crop_pct": 1.0, "interpolation": "bicubic", "crop_mode": "center",
             "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD}


def published_eval(hub_name: str) -> dict:
    """Preprocessing settings over timm's config for the timm name `hub_name` ("arch" or "arch.tag"); {}: none."""
    arch, _, tag = hub_name.partition(".")
    if arch.endswith("_dinov2"):
        return dict(DINOV2_EVAL)
    if "_clip_" in f"{arch}_" and "ft" not in tag.split("_"):
        return dict(CLIP_EVAL)
    return {}
