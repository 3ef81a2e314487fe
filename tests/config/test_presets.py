import pytest

from showdown.cli import build_parser, config_from_args
from showdown.config.presets import list_presets, load_preset
from showdown.errors import ConfigError
from tests.cli.test_run import _cli
from tests.conftest import TFLITE


def test_every_preset_is_a_valid_config_and_flags_override_it():
    presets = list_presets()
    assert set(presets) >= {"cifar10-mobilenetv2", "cifar100-three-backbones", "cifar10-three-backbones",
                            "flowers-layerwise-vs-blockwise", "custom-transfer-vs-scratch", "offline-best"}
    assert all(presets.values())  # each has a one-line description
    for name in presets:
        config = config_from_args(build_parser().parse_args(["run", "--preset", name, "--quick"]))
        config.validate()
        assert config.epochs == 2 and config.max_per_class == 20
    args = build_parser().parse_args(["run", "--preset", "flowers-layerwise-vs-blockwise", "--lr", "0.05"])
    config = config_from_args(args)
    assert config.lr == 0.05 and config.optimizer == "sgd" and config.split == (0.75, 0.15, 0.10)
    assert config.strategies == ["finetune=layers:20", "finetune=blocks:2"]
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("nope")


@pytest.mark.skipif(not TFLITE.is_dir(), reason=f"MobileNet v1 TFLite weights not found at {TFLITE}")
def test_custom_transfer_vs_scratch_quick_runs_offline(tmp_path):
    result = _cli("run", "--preset", "custom-transfer-vs-scratch", "--quick", "--weights-dir", str(TFLITE),
                  "--out", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    assert "mobilenet_v1" in result.stdout and "scratch-cnn" in result.stdout


@pytest.mark.slow  # four backbones, CLIP's ViT-B among them: about a minute on 2 cores (docs/presets.md)
def test_foundation_probe_quick_runs_offline_with_random_init(tmp_path):
    result = _cli("run", "--preset", "foundation-probe", "--quick", "--allow-random-init", "--no-record",
                  "--out", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    for name in ("dinov2_vits14", "clip_vitb16", "convnext_tiny", "efficientnet_lite0"):
        assert name in result.stdout
    assert "input 112 px" in result.stdout  # --quick's size, a multiple of both ViT patches


def test_short_names_of_todays_backbones_are_listed_with_their_pretrained_tags():
    listed = _cli("models").stdout
    for short, hub in [("dinov2_vits14", "vit_small_patch14_dinov2.lvd142m"),
                       ("clip_vitb16", "vit_base_patch16_clip_224.openai"),
                       ("convnext_tiny", "convnext_tiny.fb_in1k"),
                       ("mobilenetv4_small", "mobilenetv4_conv_small.e2400_r224_in1k")]:
        assert any(line.split()[0] == short and hub in line for line in listed.splitlines()), short
