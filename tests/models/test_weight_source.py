"""WeightSource: where a backbone's weights came from, as a value; its text is the run record's."""
import pytest

from showdown.models.backbones import load_backbone
from showdown.models.backbones.found import RANDOM_NO_PRETRAINED, WeightSource


def test_each_kind_shows_the_text_run_folders_have_always_held():
    assert str(WeightSource("file", "/w/m.tflite")) == "file /w/m.tflite"
    assert str(WeightSource("package", "efficientnet_lite0")) == "package efficientnet_lite0"
    assert str(WeightSource("keras", "/k/x.h5")) == "Keras cache /k/x.h5"
    assert str(WeightSource("hf_cache", "timm/resnet18.a1_in1k")) == "Hugging Face cache (timm/resnet18.a1_in1k)"
    assert str(WeightSource("hub", "resnet18.a1_in1k")) == "timm hub resnet18.a1_in1k"
    assert str(RANDOM_NO_PRETRAINED) == "random init (--no-pretrained)" and not RANDOM_NO_PRETRAINED.pretrained
    with pytest.raises(ValueError):
        WeightSource("url", "x")


def test_the_stamp_changes_when_the_weights_file_is_replaced(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"1")
    source = WeightSource("file", str(path))
    before = source.stamp()
    path.write_bytes(b"22")
    assert before and source.stamp() != before and source.path == path
    assert WeightSource("package", "p").stamp() == "" and WeightSource("package", "p").path is None


def test_a_backbone_carries_the_value_and_its_text():
    backbone = load_backbone("mobilenet_v2", pretrained=False, image_size=64)
    assert backbone.weights == RANDOM_NO_PRETRAINED
    assert backbone.source == "random init (--no-pretrained)" and not backbone.pretrained
