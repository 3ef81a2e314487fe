"""Build a timm backbone and fill it with ImageNet weights from the first source that has them.

Order: an explicit weights file; a package that ships the weights; a file in the weights directory;
Keras's weight cache ($KERAS_HOME/models or ~/.keras/models, under keras.applications' own file names);
the Hugging Face hub cache, read offline (hf_cache.py); timm's hub (skipped when HF_HUB_OFFLINE is set or
the hub's host does not resolve, so an offline machine fails at once instead of retrying for a minute).
When none works, one error line lists what was tried and how to supply weights.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from showdown.data.preprocessing import Preprocessing
from showdown.device import module_device
from showdown.errors import ModelError, one_line
from showdown.models.backbones import efficientnet_lite
from showdown.models.backbones.eval_protocol import published_eval
from showdown.models.backbones.files import load_weights_file
from showdown.models.backbones.found import RANDOM_NO_PRETRAINED, RANDOM_NONE_FOUND, FoundWeights, WeightSource
from showdown.models.backbones.hf_cache import find_in_hub_cache
from showdown.models.backbones.imported import cached_import, is_cached
from showdown.models.backbones.input_size import check_patch_multiple, size_kwargs
from showdown.models.backbones.keras_import import keras_cache_dir
from showdown.models.backbones.registry import BackboneSpec, pretrained_config, resolve_backbone
from showdown.models.backbones.stages import pooled
from showdown.models.backbones.tflite import read_tflite, tflite_sources

HUB_HOST = "huggingface.co"


@dataclass
class Backbone:
    spec: BackboneSpec
    model: nn.Module  # timm model (stages.pooled with pool_stages); outputs pooled features unless keep_classifier
    weights: WeightSource  # where the weights came from: the run record shows it, the feature cache keys on it
    preprocessing: Preprocessing  # what the weights expect of an image
    timm_kwargs: dict = field(default_factory=dict)  # rebuilds the same architecture later
    pool_stages: int = 0  # earlier stages whose pooled outputs join the features (stages.py)

    @property
    def source(self) -> str:
        """The weights' display text, as run records and logs show it."""
        return str(self.weights)

    @property
    def pretrained(self) -> bool:
        return self.weights.pretrained

    @cached_property
    def num_features(self) -> int:
        """Width of what the model hands the head, measured by one forward pass. timm's `num_features` counts
        the final feature map's channels, which is not always what comes out: VGG's pre-logits MLP gives 4,096."""
        return output_width(self.model, self.preprocessing.input_size)


def load_backbone(
    name: str,
    *,
    weights_file: str | Path | None = None,
    weights_dir: str | Path | None = None,
    pretrained: bool = True,
    allow_random_init: bool = False,
    image_size: int | None = None,
    keep_classifier: bool = False,
    pool_stages: int = 0,
) -> Backbone:
    """Resolve `name`, load its weights and the preprocessing those weights expect."""
    spec = resolve_backbone(name)
    tried: list[str] = []
    found: FoundWeights | None = None
    use_hub = False
    if not pretrained:
        source = RANDOM_NO_PRETRAINED
    elif weights_file is not None:
        found, source = load_weights_file(Path(weights_file), spec), WeightSource("file", str(weights_file))
    else:
        local = _local_weights(spec, weights_dir, tried)
        if local is not None:
            found, source = local[0](), local[1]
        else:
            found, source = _find_in_hub_cache(spec, tried)
        if found is None:
            why_not = _hub_unreachable()
            if why_not is None:
                use_hub, source = True, WeightSource("hub", spec.hub_name)
            else:
                tried.append(f"timm hub '{spec.hub_name}' ({why_not})")
                if not allow_random_init:
                    raise ModelError(_none_found(name, spec, tried))
                source = RANDOM_NONE_FOUND
    if found is not None and found.timm_name:  # weights that need their own architecture (Keras's networks)
        spec = replace(spec, timm_name=found.timm_name, hub_tag=None)
    # A ViT is built for its input size (input_size.py); timm resamples the position embedding of the weights.
    timm_kwargs = {**spec.timm_kwargs, **(found.timm_kwargs if found else {}), **size_kwargs(spec.hub_name, image_size)}
    model = _create(spec.hub_name if use_hub else spec.timm_name, timm_kwargs, found, use_hub, keep_classifier)
    image_size = image_size or timm_kwargs.get("img_size")
    if image_size:
        check_patch_multiple(model, image_size, name)
    if not keep_classifier:
        model.reset_classifier(0)
        timm_kwargs["num_classes"] = 0
    model.eval()
    overrides = {**published_eval(spec.hub_name), **(found.preprocessing if found else {})}
    preprocessing = _preprocessing(model, spec.hub_name, overrides, image_size)
    if pool_stages:
        model = pooled(model, pool_stages)
    backbone = Backbone(spec, model, source, preprocessing, timm_kwargs, pool_stages)
    _check_input_size(backbone, name)
    return backbone


def _create(timm_name: str, kwargs: dict, found: FoundWeights | None, use_hub: bool,
            keep_classifier: bool = False) -> nn.Module:
    """The architecture with the found weights loaded strictly, from the hub, or randomly initialised. Weights
    saved without their classifier (a feature extractor's) load too, where the classifier is dropped."""
    if found is None:
        try:
            return timm.create_model(timm_name, pretrained=use_hub, **kwargs)
        except Exception as exc:  # the hub raises many types; any of them means "not from there"
            raise ModelError(f"could not fetch '{timm_name}' from the timm hub: {type(exc).__name__}") from exc
    if found.timm_name:  # already in the exact keys of its own architecture (Keras's networks, keras_arch.py)
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
        model.load_state_dict(found.state_dict, strict=True)
        return model
    overlay = {"state_dict": found.state_dict if keep_classifier else _headless(found.state_dict, timm_name, kwargs)}
    if "num_classes" in kwargs:  # timm relaxes its strict load when the class counts differ
        overlay["num_classes"] = kwargs["num_classes"]
    try:
        # timm applies the architecture's own key filter (torchvision layouts) and loads strictly.
        return timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"the weights do not fit {timm_name}: {_misfit(exc)}") from exc


def _headless(state: dict, timm_name: str, kwargs: dict) -> dict:
    """`state`, with zeros standing in for a classifier it lacks (saved with num_classes=0), so that it loads
    strictly all the same: the backbone drops its classifier."""
    template = None
    try:
        names = timm.models.get_pretrained_cfg_value(timm_name, "classifier") or ()
    except RuntimeError:  # a name without a registered config (a deprecated alias): the built model's own
        template = timm.create_model(timm_name, pretrained=False, **kwargs)
        names = template.pretrained_cfg.get("classifier") or ()
    keys = [f"{name}.{part}" for name in ((names,) if isinstance(names, str) else names) for part in ("weight", "bias")]
    if not keys or any(key in state for key in keys):
        return state
    template = template or timm.create_model(timm_name, pretrained=False, **kwargs)
    shapes = template.state_dict()
    return {**state, **{key: torch.zeros_like(shapes[key]) for key in keys if key in shapes}}


def _misfit(exc: BaseException, limit: int = 300) -> str:
    """torch's strict-load error in one line: its first line says only "Error(s) in loading state_dict for X:", the
    ones after it which keys are missing, unexpected or of another size."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    detail = "; ".join(lines[1:]) or (lines[0] if lines else type(exc).__name__)
    return detail if len(detail) <= limit else detail[:limit] + " ..."


def weights_missing(name: str, *, weights_file: str | Path | None = None, weights_dir: str | Path | None = None,
                    pretrained: bool = True, allow_random_init: bool = False, **_build_options) -> str | None:
    """Why load_backbone would find no weights for `name` (its one-line error), None where it would: the same
    search with nothing loaded, so a run checks every model before the first one trains."""
    spec, tried = resolve_backbone(name), []
    if pretrained and weights_file is not None and not Path(weights_file).is_file():
        return f"weights file {weights_file} does not exist"  # load_weights_file's words
    if pretrained and weights_file is not None:
        return _not_weights(Path(weights_file), spec)  # a bad download found before the others train, not after
    if not pretrained or allow_random_init:
        return None
    if (local := _local_weights(spec, weights_dir, tried)) is not None:
        _, source = local
        return _not_weights(Path(source.location), spec) if source.kind == "file" else None
    if find_in_hub_cache(spec.hub_name, tried) is not None:
        return None
    why_not = _hub_unreachable()
    if why_not is None:
        return None
    return _none_found(name, spec, [*tried, f"timm hub '{spec.hub_name}' ({why_not})"])


def _not_weights(path: Path, spec: BackboneSpec) -> str | None:
    """Why a TFLite weights file found is unusable (an HTML error page, a download cut short), read through once
    (20 ms, and 0.1 s to import the reader) unless this file as it is was imported before (its cache entry is
    there: a re-run pays nothing); None where it may be used. Other files' checks come as they are read."""
    if path.suffix.lower() != ".tflite" or is_cached(tflite_sources(path), spec):
        return None
    try:
        read_tflite(path)
    except ModelError as exc:
        return str(exc)
    return None


def _none_found(name: str, spec: BackboneSpec, tried: list[str]) -> str:
    return (f"no ImageNet weights for {name}: tried {'; '.join(tried)}. Fetch '{spec.hub_name}' from the timm hub "
            "(huggingface.co/timm) and pass it with --weights FILE, or use --no-pretrained / --allow-random-init")


def _local_weights(spec: BackboneSpec, weights_dir, tried: list[str]
                   ) -> tuple[Callable[[], FoundWeights], WeightSource] | None:
    """Weights from an installed package or the weights directory, found but not yet read: (what reads them,
    where they are), or None (with what was tried added to `tried`)."""
    if spec.package:
        try:
            shipped = efficientnet_lite.package_file(spec.package)
        except ModuleNotFoundError:
            tried.append(f"package {spec.package} (not installed)")
        else:
            return (lambda: cached_import([shipped], spec, lambda: _package_weights(spec)),
                    WeightSource("package", spec.package))
    if spec.tflite_files:
        directory = Path(weights_dir or os.environ.get("SHOWDOWN_WEIGHTS") or default_weights_dir())
        for filename in spec.tflite_files:
            if (path := directory / filename).is_file():
                return partial(load_weights_file, path, spec), WeightSource("file", str(path))
        tried.append(f"weights dir {directory} (no {' or '.join(spec.tflite_files)})")
    else:
        tried.append("installed packages (none ships it)")
    if spec.keras_files:
        directory = keras_cache_dir()
        for filename in spec.keras_files:
            if (path := directory / filename).is_file():
                return partial(load_weights_file, path, spec), WeightSource("keras", str(path))
        tried.append(f"Keras cache {directory} (no {' or '.join(spec.keras_files)})")
    return None


def _package_weights(spec: BackboneSpec) -> FoundWeights:
    state_dict = efficientnet_lite.package_state_dict(spec.package)
    found = efficientnet_lite.found_weights(state_dict, spec.timm_name, spec.timm_kwargs)
    if found is None:
        raise ModelError(f"the package {spec.package} holds no EfficientNet-PyTorch state dict")
    return found


def _find_in_hub_cache(spec: BackboneSpec, tried: list[str]):
    """timm's weights for the spec from the Hugging Face hub cache: (FoundWeights, source) or (None, None)."""
    hit = find_in_hub_cache(spec.hub_name, tried)
    if hit is None:
        return None, None
    path, repo_id = hit
    return load_weights_file(path, spec), WeightSource("hf_cache", repo_id)


def _hub_unreachable() -> str | None:
    """None when the hub may be tried, else why not."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    try:
        socket.getaddrinfo(HUB_HOST, 443)
    except OSError:
        return f"{HUB_HOST} does not resolve (offline)"
    return None


def default_weights_dir() -> Path:
    return Path.home() / ".cache" / "showdown" / "weights"


def _preprocessing(model: nn.Module, hub_name: str, overrides: dict, image_size: int | None) -> Preprocessing:
    """timm's data config for the weights `hub_name` names (arch.tag: a model built as the bare architecture, as
    from a local file, carries its default tag's), with `overrides` (the published eval transform, what the
    weights file says) over it, at `image_size`."""
    config = {**resolve_data_config({}, pretrained_cfg=pretrained_config(hub_name), model=model), **overrides}
    if image_size:
        config["input_size"] = (3, image_size, image_size)
    return Preprocessing.from_dict(config)


def _check_input_size(backbone: Backbone, name: str) -> None:
    """Its width measured now (one forward pass, kept as num_features), so that a size the network cannot take
    (Inception v3 below about 75 px) is one line, not a traceback once the entries before it have trained."""
    try:
        _ = backbone.num_features  # measured and kept (cached_property)
    except (RuntimeError, AssertionError, ValueError) as exc:  # a convolution's, a patch embedding's size checks
        raise ModelError(f"{name} cannot take {backbone.preprocessing.input_size[-1]} px images "
                         f"({one_line(exc, 120)}); give a larger --image-size") from exc


def output_width(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    was_training = model.training
    try:
        with torch.inference_mode():
            return model.eval()(torch.zeros(1, *input_size, device=module_device(model))).shape[1]
    finally:
        model.train(was_training)


def build_architecture(name: str, timm_kwargs: dict, pool_stages: int = 0, timm_name: str | None = None) -> nn.Module:
    """A random-init backbone of the same architecture, to load a saved model into."""
    model = timm.create_model(timm_name or resolve_backbone(name).timm_name, pretrained=False, **timm_kwargs)
    return pooled(model, pool_stages) if pool_stages else model
