"""`--precision int8`: the frozen layers quantised by NNCF on calibration images and run by OpenVINO give features
close to fp32's (the tolerance below, measured in docs/performance.md), the quantised model is cached, int8
features never share a cache entry with another precision's, and without OpenVINO or NNCF the run is refused in
one line naming the extra."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from showdown.errors import ConfigError
from showdown.frozen import engines, quantize
from showdown.frozen.feature_cache import FrozenPass, cache_key, forward_frozen
from showdown.models.backbones import load_backbone
from showdown.precision import resolve_precision

needs_int8 = pytest.mark.skipif(quantize.missing_package() is not None,
                                reason=f"openvino or nncf is not installed ({quantize.EXTRA})")

# Measured on the demo photos (tests below) and on TF-Flowers with EfficientNet-Lite0 (docs/performance.md): a
# feature vector from int8 points where fp32's does within these bounds (cosine similarity), per image.
MEDIAN_COSINE = 0.98
MIN_COSINE = 0.9


def _photos(demo_dir, per_class=4):
    return [(path, i) for i, cls in enumerate(("daisy", "roses", "tulips"))
            for path in sorted((demo_dir / cls).iterdir())[:per_class]]


def _small_cnn() -> nn.Module:
    """A conv net with batch norm and ReLU6 (EfficientNet-Lite's blocks in small), fixed weights."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU6(),
                        nn.Conv2d(16, 16, 3, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():  # batch norm statistics as a trained net has them, not the identity
        for module in net:
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a, b, dim=1)


@needs_int8
def test_int8_features_are_close_to_fp32_and_the_quantised_model_is_cached(demo_dir):
    backbone = load_backbone("mobilenet_v2", pretrained=False, image_size=64)  # its preprocessing, for the decoder
    photos = _photos(demo_dir)
    net = _small_cnn()
    ran = {precision: forward_frozen(FrozenPass(precision=precision, batch_size=4, workers=0, runtime="openvino"), net,
                                     backbone.preprocessing, photos, calibration=photos[::2])
           for precision in ("fp32", "int8")}
    fp32, int8 = ran["fp32"].features, ran["int8"].features
    assert int8.shape == fp32.shape == (len(photos), 32)
    cosines = _cosines(int8, fp32)
    assert cosines.median() >= MEDIAN_COSINE and cosines.min() >= MIN_COSINE
    assert not torch.allclose(int8, fp32, atol=1e-5)  # quantised, not fp32 under another name
    models = list((quantize.cache_root() / quantize.KIND).iterdir())
    assert models and all((m / "model.xml").is_file() for m in models)
    # a new run (a new FrozenPass): the quantised model is read back, not calibrated again
    again = forward_frozen(FrozenPass(precision="int8", batch_size=4, workers=0, runtime="openvino"), net,
                           backbone.preprocessing, photos, calibration=photos[::2])
    assert list((quantize.cache_root() / quantize.KIND).iterdir()) == models
    torch.testing.assert_close(again.features, int8)


@needs_int8
@pytest.mark.slow
def test_int8_features_of_genuine_efficientnet_lite0_are_close_to_fp32(demo_dir):
    backbone = load_backbone("efficientnet_lite0", image_size=160)
    photos = _photos(demo_dir, per_class=6)
    ran = {precision: forward_frozen(FrozenPass(precision=precision, batch_size=8, workers=0, runtime="openvino"),
                                     backbone.model, backbone.preprocessing, photos, calibration=photos)
           for precision in ("fp32", "int8")}
    cosines = _cosines(ran["int8"].features, ran["fp32"].features)
    assert cosines.median() >= MEDIAN_COSINE and cosines.min() >= MIN_COSINE


def test_int8_features_never_share_a_cache_entry(demo_dir):
    backbone = load_backbone("mobilenet_v2", pretrained=False, image_size=64)
    photos = _photos(demo_dir)
    calibrated = quantize.files_key(photos)
    fp32 = cache_key(backbone, photos, "fp32", "openvino")
    int8 = cache_key(backbone, photos, "int8", "openvino", calibration=calibrated)
    other_calibration = cache_key(backbone, photos, "int8", "openvino", calibration=quantize.files_key(photos[1:]))
    assert len({fp32, int8, other_calibration, cache_key(backbone, photos, "bf16", "openvino")}) == 4
    # the other precisions' keys are as before int8 existed: a user's cached features stay valid
    assert cache_key(backbone, photos, "fp32", "openvino", calibration="") == fp32


def test_a_cpu_without_vnni_quantises_otherwise_and_keys_it_apart(demo_dir, monkeypatch):
    """Without VNNI or AMX, int8 sums saturate: NNCF's overflow fix (7-bit weights) is used, and a cache shared
    with a VNNI machine keeps both machines' features and models apart."""
    photos = _photos(demo_dir)
    keys = {}
    for vnni in (True, False):
        monkeypatch.setattr(quantize, "has_int8_dot_products", lambda vnni=vnni: vnni)
        keys[vnni] = (quantize.recipe(), quantize.files_key(photos))
    assert keys[True][0] == quantize.RECIPE and keys[False][0] != quantize.RECIPE
    assert keys[True][1] != keys[False][1]


def test_calibration_takes_at_most_300_training_images_across_every_class():
    items = [(f"class{c}/{i}.jpg", c) for c in range(5) for i in range(1000)]
    chosen = quantize.calibration_items(items)
    assert len(chosen) == quantize.CALIBRATION_IMAGES == 300
    assert {label for _, label in chosen} == set(range(5)) and chosen == quantize.calibration_items(items)
    assert quantize.calibration_items(items[:10]) == items[:10]


def test_int8_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match="--precision int8 runs in OpenVINO"):
        engines.resolve_runtime("onnxruntime", "int8")
    with pytest.raises(ConfigError, match="on the CPU"):
        resolve_precision("int8", torch.device("cuda"))


def test_int8_without_openvino_or_nncf_is_one_line_naming_the_extra(tmp_path):
    """Each package made unimportable in turn (as if not installed), in a process of its own."""
    probe = (
        "import sys\n"
        "from showdown.cli import main\n"
        "for name in ('nncf', 'openvino'):\n"
        "    saved = sys.modules.get(name)\n"
        "    sys.modules[name] = None\n"
        f"    code = main(['run', '--data', 'demo', '--precision', 'int8', '--no-report', '--no-record',\n"
        f"                 '--out', {str(tmp_path / 'run')!r}])\n"
        "    print('exit', code, file=sys.stderr)\n"
        "    sys.modules.pop(name)\n"
        "    if saved is not None:\n"
        "        sys.modules[name] = saved\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[1::2] == ["exit 2", "exit 2"], result.stderr
    for name, line in zip(("nncf", "openvino"), lines[::2]):
        assert f"({name} is not installed)" in line and "pip install 'tl-showdown[int8]'" in line
    assert not (tmp_path / "run").exists()  # refused before anything was written
