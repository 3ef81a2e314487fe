"""Photos reach a frozen pass as uint8 pixels and are normalised inside its graph (data/pixels.py)."""
import pytest
import torch

from showdown.data.images import eval_transform, load_rgb
from showdown.data.pixels import pixels_path
from showdown.data.preprocessing import Preprocessing
from showdown.frozen.feature_cache import FrozenPass, forward_frozen
from showdown.models.backbones import load_backbone

PREPROCESSINGS = {  # the weights' own (Inception's, ImageNet's, DINOv2's bicubic), and every timm crop mode
    "inception": Preprocessing((3, 224, 224), "bilinear", (0.5,) * 3, (0.5,) * 3, 0.875, "center"),
    "imagenet": Preprocessing((3, 192, 160), "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.95, "center"),
    "squash": Preprocessing((3, 224, 224), "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0, "squash"),
    "border": Preprocessing((3, 224, 224), "bilinear", (0.5,) * 3, (0.5,) * 3, 0.9, "border"),
}


@pytest.mark.parametrize("name", PREPROCESSINGS)
def test_pixels_normalised_in_the_graph_are_the_eval_transform(demo_dir, name):
    preprocessing = PREPROCESSINGS[name]
    transform, normalized = pixels_path(preprocessing)
    photos = sorted(demo_dir.rglob("*.jpg"))[::7][:4]
    pixels = torch.stack([transform(load_rgb(p, transform.decode_side)) for p in photos])
    assert pixels.dtype == torch.uint8 and pixels.shape[1:] == preprocessing.input_size
    reference = torch.stack([eval_transform(preprocessing)(load_rgb(p, transform.decode_side)) for p in photos])
    torch.testing.assert_close(normalized(pixels), reference, atol=1e-5, rtol=0)
    assert transform.decode_side == eval_transform(preprocessing).decode_side  # the same draft-mode decode


def test_a_frozen_pass_over_photos_hands_pixels_to_the_graph(demo_dir):
    backbone = load_backbone("efficientnet_lite0", image_size=96)
    items = [(p, i % 3) for i, p in enumerate(sorted(demo_dir.rglob("*.jpg"))[:6])]
    frozen = FrozenPass(precision="fp32", batch_size=4, workers=0, runtime="onnxruntime")
    features = forward_frozen(frozen, backbone.model, backbone.preprocessing, items)
    ((key, forward),) = frozen.engines.built[backbone.model].items()
    assert key[2] == torch.uint8  # the example the graph was built for: pixels, not floats
    forward_frozen(frozen, backbone.model, backbone.preprocessing, items[:3], mirror=True)
    assert frozen.engines.built[backbone.model] == {key: forward}  # the next pass of the run reuses it
    images = torch.stack([eval_transform(backbone.preprocessing)(load_rgb(p)) for p, _ in items])
    with torch.inference_mode():
        expected = backbone.model.eval()(images)
    torch.testing.assert_close(features.features, expected, atol=1e-4, rtol=1e-4)


def test_each_input_stage_gets_its_own_engine_and_pytorch_traces_it(demo_dir, tmp_path):
    """In PyTorch fp32 the frozen model and its stage are traced as one graph. Small squares with and without the
    centre crop: the same model and input shape, another stage (the resize's matrices), so another engine."""
    from PIL import Image

    backbone = load_backbone("efficientnet_lite0", image_size=96)
    items = []
    for i, photo in enumerate(sorted(demo_dir.rglob("*.jpg"))[:4]):
        load_rgb(photo).resize((32, 32), Image.BICUBIC).save(tmp_path / f"{i}.png")
        items.append((tmp_path / f"{i}.png", i % 3))
    frozen = FrozenPass(precision="fp32", batch_size=4, workers=0, runtime="torch")
    for preprocessing in (backbone.preprocessing, backbone.preprocessing.whole_image()):
        features = forward_frozen(frozen, backbone.model, preprocessing, items)
        (built,) = frozen.engines.built[backbone.model].values()  # traced and kept: an eager forward is not kept
        images = torch.stack([eval_transform(preprocessing)(load_rgb(p)) for p, _ in items])
        with torch.inference_mode():
            expected = backbone.model.eval()(images)
        torch.testing.assert_close(features.features, expected, atol=2e-2, rtol=2e-2)  # Pillow's 8-bit rounding
