"""The CIFAR-10 accuracy levers: multi-stage features (--pool-stages), whole-image upscaling of small images,
and flip test-time augmentation (--tta flip)."""
import csv
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from showdown import RunConfig, run
from showdown.data.images import eval_transform, load_rgb
from showdown.data.preprocessing import Preprocessing
from showdown.data.thumbnails import without_centre_crop
from showdown.deploy.export import export_model
from showdown.deploy.predict import open_model
from showdown.errors import ConfigError
from showdown.models.backbones import load_backbone
from showdown.models.saving import load_model


def test_pooled_stages_put_the_pooled_stage_outputs_before_the_final_features():
    backbone = load_backbone("efficientnet_lite0", image_size=96, pool_stages=2)
    width = backbone.num_features  # measured by a forward pass: before the hooks below record outputs
    inner = backbone.model.model
    seen = {}
    for name in ("blocks.4", "blocks.6"):  # timm's last two feature stages of EfficientNet-Lite0
        inner.get_submodule(name).register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out))
    images = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        features = backbone.model.eval()(images)
        final = inner(images)
    assert width == 112 + 320 + 1280 == features.shape[1]
    expected = torch.cat([seen["blocks.4"].mean((2, 3)), seen["blocks.6"].mean((2, 3)), final], 1)
    torch.testing.assert_close(features, expected)


def test_a_stage_that_is_the_final_feature_map_is_not_counted_twice():
    resnet = load_backbone("resnet50", image_size=64, allow_random_init=True, pool_stages=2)
    assert resnet.num_features == 2048 + 1024 + 512  # layer3, layer2; layer4 is the final map itself
    with pytest.raises(ConfigError, match="has 4 stages below"):
        load_backbone("mobilenetv1_100", image_size=64, allow_random_init=True, pool_stages=5)


def test_pool_stages_with_finetune_is_a_config_error():
    with pytest.raises(ConfigError, match="not finetune"):
        RunConfig(strategies=["head", "finetune"], pool_stages=2).validate()


def test_a_multi_stage_model_with_flip_tta_evaluates_predicts_and_exports_the_same_numbers(demo_copy, tmp_path):
    """The run scores test images from cached features (and cached mirror-image features for --tta flip); the
    saved model, recomputed from the images, and its ONNX export must give the same probabilities."""
    out = tmp_path / "run"
    # fp32: on a CPU with native bf16, `auto` would cache bf16 features, which no fp32 recomputation matches.
    run(RunConfig(data=str(demo_copy), models=["efficientnet_lite0"], image_size=96, pool_stages=2, tta="flip",
                  epochs=2, workers=0, out=str(out), record=False, report=False, precision="fp32"),
        echo=lambda *_: None)
    model, info = load_model(out / "efficientnet_lite0-head")
    assert info.pool_stages == 2 and model.head.layers[-1].in_features == 112 + 320 + 1280
    assert info.tta == "flip" and model.tta == "flip"
    with open(out / "efficientnet_lite0-head" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    transform = eval_transform(Preprocessing.from_dict(info.preprocessing))
    batch = torch.stack([transform(load_rgb(row["path"])) for row in rows])
    with torch.inference_mode():
        logits = model(batch)
        plain = model.head(model.backbone(batch))
        mirrored = model.head(model.backbone(batch.flip(-1)))
    torch.testing.assert_close(logits, (plain + mirrored) / 2)
    expected = logits.softmax(1).numpy()
    np.testing.assert_allclose([float(row["confidence"]) for row in rows], expected.max(1), atol=1e-4)
    exported = open_model(export_model(out, "onnx"))
    np.testing.assert_allclose(exported(batch), expected, atol=1e-4)


def test_small_square_images_are_upscaled_whole(demo_dir, tmp_path):
    """A 32 px thumbnail has no margin for the centre crop to trim: the crop goes, the rest stays."""
    items = []
    for i, path in enumerate(sorted((demo_dir / "roses").iterdir())[:3]):
        items.append((tmp_path / f"{i}.png", 0))
        load_rgb(path).resize((32, 32), Image.BICUBIC).save(items[-1][0])
    preprocessing = load_backbone("efficientnet_lite0").preprocessing
    assert preprocessing.crop_pct < 1
    whole = without_centre_crop(preprocessing, items)
    assert whole == dataclasses.replace(preprocessing, crop_pct=1.0)
    image = load_rgb(items[0][0])
    direct = transforms.Compose([transforms.Resize((224, 224), transforms.InterpolationMode.BICUBIC),
                                 transforms.ToTensor(), transforms.Normalize(whole.mean, whole.std)])
    upscaled = eval_transform(whole)(image)
    torch.testing.assert_close(upscaled, direct(image))  # the whole thumbnail, upscaled
    assert not torch.allclose(upscaled, eval_transform(preprocessing)(image), atol=1e-2)
    photos = [(p, 0) for p in sorted((demo_dir / "roses").iterdir())[:3]]
    assert without_centre_crop(preprocessing, photos) is None  # photos keep the crop their weights expect


def test_run_bench_measures_the_multi_stage_network_it_trained(demo_dir, tmp_path, monkeypatch):
    """`showdown run --bench --pool-stages K`: the bench times the very network the head was trained on, the
    backbone with its pooled stages, not the plain backbone of the same name."""
    import json

    from showdown.models.backbones.stages import PooledStages
    from showdown.reporting import bench

    measured = []
    real_bench_backbone = bench.bench_backbone

    def quick_bench(backbone, **_):  # the real measurement, kept short: fp32 only, 2 timed runs, no ONNX
        measured.append(backbone)
        return real_bench_backbone(backbone, precisions=("fp32",), onnx=False, repeats=2)

    monkeypatch.setattr(bench, "bench_backbone", quick_bench)
    out = tmp_path / "run"
    run(RunConfig(data="demo", models=["efficientnet_lite0"], image_size=64, pool_stages=2, max_per_class=2, epochs=1,
                  workers=0, precision="fp32", bench=True, out=str(out), record=False, report=False),
        echo=lambda *_: None)
    _, info = load_model(out / "efficientnet_lite0-head")
    trained_width = info.head.in_features
    assert trained_width == 112 + 320 + 1280
    (backbone,) = measured
    assert isinstance(backbone.model, PooledStages) and backbone.pool_stages == 2
    assert backbone.num_features == trained_width  # what the head reads is what was timed
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    assert row["model"] == "efficientnet_lite0" and row["pool_stages"] == 2 and row["features"] == trained_width
