"""The fast paths compute what the slow paths compute: cached features, boundary activations; and bench."""
import copy
import csv
import logging

import pytest
import timm
import torch
from torch import nn

from showdown.config.run_config import RunConfig
from showdown.frozen import engines
from showdown.frozen.boundary import TopOfNetwork, first_trainable, sequential_layers
from showdown.frozen.engines import openvino_installed
from showdown.frozen.feature_cache import FrozenPass, extract_features, forward_frozen
from showdown.models.backbones import load_backbone
from showdown.models.classifier import Head, ImageClassifier
from showdown.training.batches import TensorBatches, feature_batches, image_batches
from showdown.training.freezing import batchnorms_kept_in_eval, freeze_backbone, unfreeze
from showdown.training.loop import TrainSettings, fit
from tests.conftest import run_cli


def _items(demo_dir, per_class=6):
    classes = ["daisy", "roses", "tulips"]
    return [(p, i) for i, c in enumerate(classes) for p in sorted((demo_dir / c).iterdir())[:per_class]]


def test_cached_and_uncached_head_training_give_the_same_weights(demo_dir, tmp_path):
    backbone = load_backbone("efficientnet_lite0", image_size=96)
    items = _items(demo_dir)
    settings = TrainSettings(epochs=4, lr=1e-2, label_smoothing=0.1, seed=3)
    head = Head(backbone.num_features, 3, dropout=0.2)
    cached_head, model = copy.deepcopy(head), ImageClassifier(backbone.model, copy.deepcopy(head))
    features = extract_features(FrozenPass(precision="fp32", batch_size=8, workers=0, cache_dir=tmp_path), backbone,
                                items)
    cached = fit(cached_head, TensorBatches(features, 8, seed=3), feature_batches(features, 64), settings)
    freeze_backbone(model)
    config = RunConfig(batch_size=8, workers=0, seed=3)  # the same order of the same images
    naive = fit(model, image_batches(items, backbone.preprocessing, config, train=True),
                image_batches(items, backbone.preprocessing, config, train=False), settings,
                keep_eval=batchnorms_kept_in_eval(model))
    # within 1e-4, not rounded to 4 places: two values 1e-7 apart can round apart
    assert [h["train_loss"] for h in cached] == pytest.approx([h["train_loss"] for h in naive], abs=1e-4)
    # The features differ by float order (a compiled graph against eager PyTorch), and Adam divides each step by
    # the gradient's running scale: a weight whose gradient is near zero moves by a larger share of that. 1 of
    # 3840 weights 1.8e-4 apart on Python 3.13 with one thread (pytest -n 2); a wrong feature or order is far off.
    for key, value in cached_head.state_dict().items():
        torch.testing.assert_close(value, model.head.state_dict()[key], atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("store_dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_boundary_activation_training_follows_the_full_forward_loss_curve(demo_dir, store_dtype, tolerance):
    backbone = load_backbone("efficientnet_lite0", image_size=96)
    full = ImageClassifier(backbone.model, Head(backbone.num_features, 3))
    unfreeze(full, "blocks:2")
    layers = sequential_layers(full.backbone, backbone.preprocessing.input_size)
    cut = first_trainable(layers)
    items = _items(demo_dir, per_class=4)
    activations = forward_frozen(FrozenPass(precision="fp32", batch_size=12, workers=0), nn.Sequential(*layers[:cut]),
                                 backbone.preprocessing, items, store_dtype=store_dtype)
    fast = copy.deepcopy(full)
    fast_layers = sequential_layers(fast.backbone, backbone.preprocessing.input_size)
    top = TopOfNetwork(fast_layers[cut:], fast.backbone, fast.head)
    settings = TrainSettings(epochs=3, lr=1e-3, optimizer="sgd", patience=10, seed=1)
    config = RunConfig(batch_size=12, workers=0)
    slow_history = fit(full, image_batches(items, backbone.preprocessing, config, train=True),
                       image_batches(items, backbone.preprocessing, config, train=False), settings,
                       keep_eval=batchnorms_kept_in_eval(full))
    fast_history = fit(top, TensorBatches(activations, 12), feature_batches(activations, 12), settings,
                       keep_eval=batchnorms_kept_in_eval(fast))
    for slow, quick in zip(slow_history, fast_history):
        assert quick["train_loss"] == pytest.approx(slow["train_loss"], rel=tolerance)
        assert quick["val_loss"] == pytest.approx(slow["val_loss"], rel=tolerance)


def test_bench_reports_every_column_for_two_small_backbones(tmp_path):
    out = tmp_path / "bench"
    result = run_cli("bench", "--models", "efficientnet_lite0,mobilenetv2_050", "--allow-random-init",
                     "--image-size", "64", "--repeats", "3", "--precision", "fp32", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "latency ms (bs 1)" in result.stdout and "images/s (bs 32)" in result.stdout
    with (out / "bench.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    engines = ("torch", "onnxruntime", "openvino") if openvino_installed() else ("torch", "onnxruntime")
    assert {(r["model"], r["runtime"]) for r in rows} == {
        (m, rt) for m in ("efficientnet_lite0", "mobilenetv2_050") for rt in engines}
    for row in rows:
        for column in ("params_m", "size_mb", "gmacs", "latency_ms", "throughput_ips"):
            assert float(row[column]) > 0, (row["model"], column)
    lite0 = next(r for r in rows if r["model"] == "efficientnet_lite0")
    assert float(lite0["params_m"]) == pytest.approx(3.37, abs=0.02)  # the feature extractor, no classifier
    assert float(lite0["size_mb"]) == pytest.approx(13.5, abs=0.5)  # 4 bytes per parameter
    assert float(lite0["gmacs"]) == pytest.approx(0.385 * (64 / 224) ** 2, rel=0.15)  # scales with pixels
    assert (out / "bench.json").is_file()


def test_onnxruntime_features_equal_pytorch_features(demo_dir):
    backbone = load_backbone("efficientnet_lite0", image_size=96)
    items = _items(demo_dir, per_class=3)
    by = {runtime: forward_frozen(FrozenPass(precision="fp32", batch_size=4, workers=0, runtime=runtime),
                                  backbone.model, backbone.preprocessing, items)
          for runtime in ("torch", "onnxruntime")}
    torch.testing.assert_close(by["onnxruntime"].features, by["torch"].features, atol=1e-4, rtol=1e-4)
    assert torch.equal(by["onnxruntime"].indices, by["torch"].indices)


def test_runtime_choice(monkeypatch):
    from showdown.errors import ConfigError
    from showdown.frozen import engines
    from showdown.frozen.engines import resolve_runtime

    monkeypatch.setattr(engines, "openvino_installed", lambda: False)
    assert resolve_runtime("auto", "fp32") == "onnxruntime"
    assert resolve_runtime("auto", "bf16") == "torch"
    assert resolve_runtime("torch", "fp32") == "torch"
    with pytest.raises(ConfigError, match="fp32 only"):
        resolve_runtime("onnxruntime", "bf16")
    with pytest.raises(ConfigError, match="needs the openvino package"):
        resolve_runtime("openvino", "fp32")
    monkeypatch.setattr(engines, "openvino_installed", lambda: True)  # OpenVINO, when installed, in both
    assert resolve_runtime("auto", "fp32") == "openvino"
    assert resolve_runtime("auto", "bf16") == "openvino"
    assert resolve_runtime("onnxruntime", "fp32") == "onnxruntime"


def test_feature_cache_key_changes_with_every_part(demo_copy, tmp_path):
    """Backbone, weights file, preprocessing / image size, precision, engine and the files themselves."""
    import os
    import shutil

    from safetensors.torch import save_file

    from showdown.frozen.feature_cache import cache_key

    items = [(p, 0) for p in sorted((demo_copy / "daisy").iterdir())[:5]]
    lite0 = load_backbone("efficientnet_lite0")
    base = cache_key(lite0, items, "fp32", "torch")
    assert cache_key(load_backbone("efficientnet_lite0"), list(items), "fp32", "torch") == base  # deterministic
    weights = tmp_path / "lite0.safetensors"
    save_file(timm.create_model("tf_efficientnet_lite0").state_dict(), str(weights))  # random, with classifier
    from_file = load_backbone("efficientnet_lite0", weights_file=str(weights))
    before_touch = cache_key(from_file, items, "fp32", "torch")
    os.utime(weights, ns=(1, 1))
    variants = {
        "backbone": cache_key(load_backbone("efficientnet_lite1"), items, "fp32", "torch"),
        "weights source": before_touch,
        "weights file changed": cache_key(from_file, items, "fp32", "torch"),
        "image size": cache_key(load_backbone("efficientnet_lite0", image_size=128), items, "fp32", "torch"),
        "precision": cache_key(lite0, items, "bf16", "torch"),
        "engine": cache_key(lite0, items, "fp32", "onnxruntime"),
        "another engine": cache_key(lite0, items, "fp32", "openvino"),
        "one file fewer": cache_key(lite0, items[:-1], "fp32", "torch"),
        "a label": cache_key(lite0, [(p, 1) for p, _ in items], "fp32", "torch"),
    }
    shutil.copyfile(items[1][0], items[0][0])  # same name, new content (size/mtime)
    variants["a file's content"] = cache_key(lite0, items, "fp32", "torch")
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants), variants


@pytest.mark.parametrize("model, image_size", [("efficientnet_lite0", None), ("mobilenetv2_050", 96)])
def test_batched_small_image_resize_equals_the_per_image_transform(demo_dir, tmp_path, model, image_size):
    """CIFAR-sized images are resized in batches inside the graph; the pixels must be the per-image ones."""
    from PIL import Image

    from showdown.data.images import eval_transform, load_rgb
    from showdown.data.thumbnails import Uint8Tensor, batch_resize, small_square_side

    items = []
    for i, (path, label) in enumerate(_items(demo_dir, per_class=2)):
        small = tmp_path / f"{i}.png"
        load_rgb(path).resize((32, 32), Image.BICUBIC).save(small)
        items.append((small, label))
    backbone = load_backbone(model, image_size=image_size, allow_random_init=True)
    preprocessing = backbone.preprocessing
    assert small_square_side(items, preprocessing.input_size) == 32
    resize = batch_resize(preprocessing, 32)
    decode = Uint8Tensor(32)
    batched = resize(torch.stack([decode(load_rgb(p)) for p, _ in items]))
    per_image = torch.stack([eval_transform(preprocessing)(load_rgb(p)) for p, _ in items])
    assert batched.shape == per_image.shape
    one_level = 1.0 / 255 / min(preprocessing.std)
    assert (batched - per_image).abs().max() <= one_level + 1e-5  # Pillow's 8-bit rounding at most
    assert (batched - per_image).abs().mean() < 0.05 * one_level
    # and the feature path takes it: same features as the per-image transform within float noise
    features = forward_frozen(FrozenPass(precision="fp32", batch_size=3, workers=0), backbone.model, preprocessing,
                              items)
    with torch.inference_mode():
        reference = backbone.model.eval()(per_image)
    torch.testing.assert_close(features.features, reference, atol=2e-2, rtol=2e-2)
    # a folder of large or mixed-size images keeps the per-image path
    assert small_square_side(_items(demo_dir, per_class=2), preprocessing.input_size) is None


def test_flip_augmentation_keeps_the_cache_and_serves_each_image_or_its_mirror(demo_dir):
    """--augment flip: features of each image and of its mirror image are computed once; every epoch each
    training image appears exactly once, as one of the two, chosen by a seeded coin."""
    from showdown.data.images import eval_transform, load_rgb
    from showdown.training.batches import TensorBatches

    backbone = load_backbone("efficientnet_lite0", image_size=96)
    items = _items(demo_dir, per_class=3)
    plain, mirrored = (forward_frozen(FrozenPass(precision="fp32", batch_size=4, workers=0), backbone.model,
                                      backbone.preprocessing, items, mirror=mirror) for mirror in (False, True))
    images = torch.stack([eval_transform(backbone.preprocessing)(load_rgb(p)) for p, _ in items])
    with torch.inference_mode():
        expected = backbone.model.eval()(images.flip(-1))
    torch.testing.assert_close(mirrored.features, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain.features, mirrored.features, atol=1e-3)

    batches = TensorBatches(plain, batch_size=4, mirrored=mirrored)
    epochs = []
    for epoch in (1, 2, 1):
        batches.set_epoch(epoch)
        rows, labels = map(torch.cat, zip(*batches))
        source = []
        for row, label in zip(rows, labels):
            is_plain = (plain.features == row).all(1)
            is_mirror = (mirrored.features == row).all(1)
            assert int(is_plain.sum() + is_mirror.sum()) == 1
            source.append((int((is_plain | is_mirror).nonzero()), bool(is_mirror.any())))
            assert label == plain.labels[source[-1][0]]
        assert sorted(i for i, _ in source) == list(range(len(items)))  # every image exactly once
        epochs.append(source)
    assert any(m for _, m in epochs[0]) and not all(m for _, m in epochs[0])  # both versions are used
    assert epochs[0] == epochs[2] and epochs[0] != epochs[1]  # seeded per epoch


def test_activation_shift_moves_each_map_by_a_seeded_offset_within_the_limit():
    """--activation-shift 1: every epoch each cached map appears once, moved by at most one cell each way
    (uncovered cells repeat the edge), by seeded offsets that differ per image and per epoch."""
    import torch.nn.functional as F

    from showdown.frozen.feature_cache import Features
    from showdown.training.batches import TensorBatches

    maps = torch.randn(40, 3, 6, 6).to(torch.bfloat16)  # stored as the boundary cache stores them
    cached = Features(maps, torch.arange(40), torch.arange(40), [], False)
    padded = F.pad(maps.float(), (1, 1, 1, 1), mode="replicate").to(maps.dtype)
    crops = {(dy, dx): padded[:, :, dy:dy + 6, dx:dx + 6] for dy in range(3) for dx in range(3)}
    batches = TensorBatches(cached, batch_size=16, shift=1, seed=5)
    epochs = []
    for epoch in (1, 2, 1):
        batches.set_epoch(epoch)
        rows, labels = map(torch.cat, zip(*batches))
        assert rows.dtype == maps.dtype and sorted(labels.tolist()) == list(range(40))  # each map exactly once
        moves = {int(label): next(move for move, crop in crops.items() if torch.equal(crop[label], row))
                 for row, label in zip(rows, labels)}  # StopIteration: moved by more than a cell, or distorted
        epochs.append(moves)
    assert len(set(epochs[0].values())) > 4 and (1, 1) in epochs[0].values()  # many offsets; unmoved is one
    assert epochs[0] == epochs[2] and epochs[0] != epochs[1]  # seeded per epoch
    with pytest.raises(ValueError, match="activation maps"):
        TensorBatches(Features(torch.randn(4, 8), torch.arange(4), torch.arange(4), [], False), 2, shift=1)


def test_splits_missing_the_same_views_are_extracted_in_one_pass(demo_dir, tmp_path, monkeypatch):
    """extract_views: the splits that miss their cache files share one pass (each image decoded once, whatever
    the split), and every split gets exactly what extracting it alone gives, its unreadable files included."""
    from collections import Counter

    from showdown.data import images
    from showdown.frozen.feature_cache import extract_views

    backbone = load_backbone("mobilenet_v2", pretrained=False, image_size=64)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    items = _items(demo_dir, per_class=3)
    splits = {"train": items[:5], "val": items[5:7] + [(broken, 2)], "test": items[7:]}
    views = [("train", False), ("val", False), ("test", False), ("train", True)]
    decoded = Counter()
    load = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda path, side=None: decoded.update([path]) or load(path, side))
    options = {"precision": "fp32", "batch_size": 4, "workers": 0, "runtime": "torch"}
    together = extract_views(FrozenPass(cache_dir=tmp_path / "cache", **options), backbone, splits, views)
    assert set(decoded.values()) == {1} and len(decoded) == len(items) + 1  # one decode per file, all splits
    for (split, mirror), features in together.items():
        alone = extract_features(FrozenPass(cache_dir=None, **options), backbone, splits[split], mirror=mirror)
        torch.testing.assert_close(features.features, alone.features, atol=1e-5, rtol=1e-5)
        assert torch.equal(features.indices, alone.indices) and torch.equal(features.labels, alone.labels)
        assert features.failed == alone.failed == ([str(broken)] if split == "val" else [])
    again = extract_views(FrozenPass(cache_dir=tmp_path / "cache", **options), backbone, splits, views)
    assert all(f.cache_hit for f in again.values())  # one cache file per view, as before
    assert torch.equal(again["val", False].indices, torch.tensor([0, 1]))


def _graph_engines():
    return ("onnxruntime", "openvino") if openvino_installed() else ("onnxruntime",)


@pytest.mark.parametrize("name, size", [("dinov2_vits14", 56), ("convnext_tiny", 64)])
def test_graph_engines_compute_a_vit_and_convnext_as_pytorch_does(caplog, name, size):
    """The exported frozen part of a ViT (fused attention, class token, position embedding) and of ConvNeXt-T runs
    in ONNX Runtime and OpenVINO within 1e-4 of PyTorch in fp32; so does a ViT's frozen bottom of a finetune (its
    `TokenStem` and first blocks; a CNN's is tested in test_openvino.py). Exported at batch 1, run at batch 5: the
    batch axis is dynamic."""
    torch.manual_seed(0)
    backbone = load_backbone(name, pretrained=False, image_size=size)
    model = backbone.model.eval()
    with torch.no_grad():  # DINOv2 inits its layer scales at 1e-5, its blocks near the identity: make them count
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("gamma"):
                parameter.fill_(1.0)
    parts = {"whole": model}
    if name.startswith("dinov2"):
        parts["bottom"] = nn.Sequential(*sequential_layers(model, backbone.preprocessing.input_size)[:3]).eval()
    images = torch.randn(5, *backbone.preprocessing.input_size)
    with torch.inference_mode(), caplog.at_level(logging.WARNING):
        for part, module in parts.items():
            expected = module(images)
            assert expected.std() > 0.1  # features far larger than the tolerance
            for runtime in _graph_engines():
                forward = engines.frozen_forward(module, images, "fp32", runtime, f"{name} {part} {runtime}")
                difference = (forward(images) - expected).abs().max().item()
                assert difference < 1e-4, f"{runtime} {part}: max abs difference {difference}"
    assert not [r for r in caplog.records if r.name == engines.__name__]  # no engine fell back to PyTorch
