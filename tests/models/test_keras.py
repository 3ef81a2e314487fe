"""Keras weights in: parity with Keras itself (TensorFlow backend) on real photos.

Needs the `keras` test extra (TensorFlow, Keras); skipped with the reason where it is not installed.
Each keras.applications network is built here with random weights, its batch-norm statistics and biases
randomised too (Keras initialises them to 0 and 1, which would hide a swapped mean and variance), saved
as .h5 and .keras, imported, and run on the same pixels as Keras, through each side's own preprocessing.
"""
import os

import numpy as np
import pytest
import torch
from timm.data import create_transform

from showdown.data.images import eval_transform, load_rgb
from showdown.models.backbones import load_backbone
from tests.conftest import PHOTOS, SHARED

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras", reason="the `keras` test extra (TensorFlow, Keras) is not installed")
pytest.importorskip("tensorflow", reason="the `keras` test extra (TensorFlow) is not installed")
pytestmark = pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"real photos not found at {PHOTOS} (../shared absent)")

GENUINE = SHARED / "weights" / "keras" / "mobilenet_2_5_224_tf_no_top.h5"
TOLERANCE = 1e-4  # relative: max |ours - keras| / max |keras|
APPS = keras.applications
# short name, builder, Keras preprocessing, keyword arguments (widths Keras publishes), input side
FAMILIES = {
    "mobilenet_v1": (APPS.MobileNet, APPS.mobilenet.preprocess_input, {"alpha": 0.75}, 96),
    "mobilenet_v2": (APPS.MobileNetV2, APPS.mobilenet_v2.preprocess_input, {"alpha": 0.35}, 96),
    "resnet50": (APPS.ResNet50, APPS.resnet50.preprocess_input, {}, 96),
    "vgg16": (APPS.VGG16, APPS.vgg16.preprocess_input, {}, 96),
    "inception_v3": (APPS.InceptionV3, APPS.inception_v3.preprocess_input, {}, 96),  # Keras's minimum is 75
}


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            # gamma (if any), beta, moving mean, moving variance
            values = [rng.uniform(0.5, 1.5, s) for s in shapes[:-3]] + [
                rng.normal(0, 0.2, shapes[-3]), rng.normal(0, 0.2, shapes[-2]), rng.uniform(0.5, 1.5, shapes[-1])]
            layer.set_weights([v.astype("float32") for v in values])
        elif getattr(layer, "use_bias", False) and layer.get_weights():
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])


def _photos(preprocessing):
    """The photos as our model's input, and as the 0-255 RGB pixels of the same resize and crop."""
    to_float = eval_transform(preprocessing)
    to_pixels = create_transform(input_size=preprocessing.input_size, interpolation=preprocessing.interpolation,
                                 crop_pct=preprocessing.crop_pct, mean=(0, 0, 0), std=(1 / 255,) * 3)
    images = [load_rgb(p) for p in sorted(PHOTOS.glob("*.jpg"))]
    ours = torch.stack([to_float(i) for i in images])
    pixels = torch.stack([to_pixels(i) for i in images]).permute(0, 2, 3, 1).numpy()
    return ours, pixels


def _relative_error(ours, reference):
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def _compare(keras_model, preprocess, name, weights_file, *, top, image_size=None):
    backbone = load_backbone(name, weights_file=weights_file, keep_classifier=top, image_size=image_size)
    ours_in, pixels = _photos(backbone.preprocessing)
    reference = keras_model.predict(preprocess(pixels.copy()), verbose=0)
    with torch.inference_mode():
        ours = backbone.model(ours_in)
    ours = (ours.softmax(1) if top else ours).numpy()
    assert ours.shape == reference.shape
    return _relative_error(ours, reference), backbone


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name, top -> (Keras model, its .h5 and .keras files); built once per module, lazily."""
    folder, cache = tmp_path_factory.mktemp("keras"), {}

    def get(name, top):
        if (name, top) not in cache:
            build, _, kwargs, side = FAMILIES[name]
            extra = {"classes": 5} if top else {"pooling": "avg"}
            model = build(weights=None, include_top=top, input_shape=(side, side, 3), **kwargs, **extra)
            _randomise(model)
            files = folder / f"{name}-{top}.h5", folder / f"{name}-{top}.keras"
            for path in files:
                model.save(path)
            cache[name, top] = model, files
        return cache[name, top]
    return get


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_imported_features_equal_keras(saved, name, fmt):
    model, files = saved(name, False)
    error, backbone = _compare(model, FAMILIES[name][1], name, files[fmt == "keras"], top=False)
    assert error < TOLERANCE, f"{name} .{fmt}: relative error {error:.2e}"
    assert backbone.spec.timm_name.startswith("keras_") and backbone.num_features == model.output_shape[-1]
    if fmt == "keras":  # the input side comes from the saved model's configuration
        assert backbone.preprocessing.input_size == (3, FAMILIES[name][3], FAMILIES[name][3])


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "resnet50"])  # conv_preds, predictions, fc
def test_imported_classifier_equals_keras_with_top(saved, name):
    model, files = saved(name, True)
    error, _ = _compare(model, FAMILIES[name][1], name, files[0], top=True)
    assert error < TOLERANCE, f"{name} with top: relative error {error:.2e}"


def test_keras_weights_only_file_and_alpha_above_one(tmp_path):
    """`save_weights` (Keras 3's .weights.h5: variables by position, no input size) and a width above 1."""
    model = APPS.MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(96, 96, 3), alpha=1.3)
    _randomise(model, seed=1)
    model.save_weights(tmp_path / "v2.weights.h5")
    error, backbone = _compare(model, APPS.mobilenet_v2.preprocess_input, "mobilenet_v2",
                               tmp_path / "v2.weights.h5", top=False, image_size=96)
    assert error < TOLERANCE and backbone.timm_kwargs["alpha"] == 1.3


@pytest.mark.skipif(not GENUINE.is_file(), reason=f"{GENUINE} not found (../shared absent)")
def test_genuine_keras_imagenet_file_gives_keras_features():
    model = APPS.MobileNet(weights=str(GENUINE), include_top=False, pooling="avg", alpha=0.25,
                           input_shape=(224, 224, 3))
    error, backbone = _compare(model, APPS.mobilenet.preprocess_input, "mobilenet_v1", GENUINE, top=False)
    assert error < TOLERANCE, f"relative error {error:.2e}"
    assert backbone.timm_kwargs["alpha"] == 0.25 and backbone.preprocessing.input_size == (3, 224, 224)


def test_keras_cache_is_a_weight_source(saved, tmp_path, monkeypatch):
    model = APPS.MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(96, 96, 3))
    _randomise(model, seed=2)
    (tmp_path / "models").mkdir()
    model.save(tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    backbone = load_backbone("mobilenet_v2", weights_dir=tmp_path / "empty")
    assert backbone.source.startswith("Keras cache ") and backbone.preprocessing.input_size == (3, 96, 96)
    ours_in, pixels = _photos(backbone.preprocessing)
    with torch.inference_mode():
        ours = backbone.model(ours_in).numpy()
    reference = model.predict(APPS.mobilenet_v2.preprocess_input(pixels), verbose=0)
    assert _relative_error(ours, reference) < TOLERANCE
