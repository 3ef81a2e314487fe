"""The TFLite importer against Google's own interpreter on real photos (needs ../shared)."""
import numpy as np
import pytest
import torch
from timm.data import create_transform

from showdown.data.images import eval_transform, load_rgb
from showdown.errors import ModelError
from showdown.models.backbones import load_backbone
from tests.conftest import PHOTOS, TFLITE

pytestmark = pytest.mark.skipif(not (TFLITE.is_dir() and PHOTOS.is_dir()),
                                reason=f"TFLite weights or photos not found under {TFLITE.parent.parent}")
PHOTO_NAMES = ("dog", "eagle", "giraffe", "horses", "kite", "person")


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, array):
    """Run and return the de-quantised logits (the input of the final softmax) and the output tensor."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], array)
    interpreter.invoke()
    softmax = [op for op in interpreter._get_ops_details() if op["op_name"] == "SOFTMAX"]
    index = softmax[0]["inputs"][0] if softmax else interpreter.get_output_details()[0]["index"]
    return _dequantized(interpreter, index)


def _dequantized(interpreter, index):
    detail = next(d for d in interpreter.get_tensor_details() if d["index"] == index)
    scale, zero = detail["quantization"]
    return (interpreter.get_tensor(index).astype(np.float32) - zero) * scale


def _interpreter_logits(filename, pixels):
    if "embedding_extractor" in filename:  # chain extractor and head, re-quantising in between
        embedding = _run(_interpreter(TFLITE / filename), pixels)
        head = _interpreter(TFLITE / "mobilenet_quant_v1_224_head_layers.tflite")
        scale, zero = head.get_input_details()[0]["quantization"]
        quantised = np.clip(np.round(embedding / scale + zero), 0, 255).astype(np.uint8)
        return _run(head, quantised.reshape(1, 1, 1, -1))
    return _run(_interpreter(TFLITE / filename), pixels)


@pytest.mark.parametrize("name, filename", [
    ("mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite"),
    ("mobilenet_v2", "tf2_mobilenet_v2_1.0_224_ptq.tflite"),
    ("mobilenet_v1", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"),
])
def test_imported_float_model_agrees_with_the_interpreter(name, filename):
    backbone = load_backbone(name, weights_file=TFLITE / filename, keep_classifier=True)
    pre = backbone.preprocessing
    to_float = eval_transform(pre)
    # The same resize and crop, without normalisation: the uint8 pixels the interpreter is fed.
    to_pixels = create_transform(input_size=pre.input_size, interpolation=pre.interpolation,
                                 crop_pct=pre.crop_pct, mean=(0, 0, 0), std=(1 / 255,) * 3)
    agree, correlations = 0, []
    for photo in PHOTO_NAMES:
        image = load_rgb(PHOTOS / f"{photo}.jpg")
        pixels = to_pixels(image).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()[None]
        reference = _interpreter_logits(filename, pixels).reshape(-1)
        with torch.inference_mode():
            ours = backbone.model(to_float(image)[None])[0].numpy()
        assert ours.shape == reference.shape == (1001,)
        agree += int(ours.argmax() == reference.argmax())
        correlations.append(np.corrcoef(ours, reference)[0, 1])
    assert agree >= 5, f"top-1 agreed on {agree}/6 photos"
    assert min(correlations) > 0.95, correlations


def test_mobilenet_found_in_the_weights_dir_and_its_input_scaling_comes_from_the_file():
    backbone = load_backbone("mobilenet_v2", weights_dir=TFLITE)
    assert backbone.source.endswith("mobilenet_v2_1.0_224_quant.tflite")
    # input quantisation scale 1/128, zero point 128: (pixel - 128) / 128
    assert backbone.preprocessing.mean == pytest.approx((128 / 255,) * 3)
    assert backbone.preprocessing.std == pytest.approx((128 / 255,) * 3)
    assert backbone.num_features == 1280
    assert load_backbone("mobilenet_v1", weights_dir=TFLITE).num_features == 1024


def test_tflite_file_for_another_architecture_is_refused():
    with pytest.raises(ModelError, match="not the same architecture"):
        load_backbone("efficientnet_lite0", weights_file=TFLITE / "mobilenet_v2_1.0_224_quant.tflite")
