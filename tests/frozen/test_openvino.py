"""OpenVINO as the engine of the frozen layers computes what PyTorch computes (features, boundary activations, a
whole run), falls back in one log line, and keys the feature cache by its own name."""
import json
import logging

import pytest
import torch
from torch import nn

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'tl-showdown[openvino]')")

from showdown.config.run_config import RunConfig  # noqa: E402
from showdown.frozen import engines  # noqa: E402
from showdown.frozen.boundary import sequential_layers  # noqa: E402
from showdown.frozen.feature_cache import FrozenPass, forward_frozen  # noqa: E402
from showdown.models.backbones import load_backbone  # noqa: E402
from showdown.precision import autocast, bf16_supported  # noqa: E402


def _items(demo_dir, n=7):
    """7 demo photos of three classes: at batch 4, a full batch and a last partial one of 3."""
    classes = ["daisy", "roses", "tulips"]
    items = [(p, i) for i, c in enumerate(classes) for p in sorted((demo_dir / c).iterdir())[:3]]
    return items[:n]


def _by_engine(module, preprocessing, items, runtimes, precision="fp32", **kwargs):
    return {runtime: forward_frozen(FrozenPass(precision=precision, batch_size=4, workers=0, runtime=runtime), module,
                                    preprocessing, items, **kwargs)
            for runtime in runtimes}


@pytest.mark.parametrize("model, pretrained", [("efficientnet_lite0", True), ("mobilenet_v2", False)])
def test_openvino_features_equal_pytorch_features(demo_dir, caplog, model, pretrained):
    """fp32 means fp32: OpenVINO's default on CPUs with native bf16 is bf16, which would miss 1e-4 by far."""
    backbone = load_backbone(model, pretrained=pretrained, image_size=96)
    items = _items(demo_dir)
    with caplog.at_level(logging.WARNING):
        by = _by_engine(backbone.model, backbone.preprocessing, items, ("torch", "openvino"), name=model)
    assert not caplog.records  # OpenVINO ran it: no fallback note
    assert by["openvino"].features.shape == (7, backbone.num_features)  # the partial batch is there
    torch.testing.assert_close(by["openvino"].features, by["torch"].features, atol=1e-4, rtol=1e-4)
    assert torch.equal(by["openvino"].indices, by["torch"].indices)


def test_openvino_boundary_activations_equal_pytorch(demo_dir):
    """The frozen bottom of a finetune (phases.boundary_activations) goes through the same engine."""
    backbone = load_backbone("efficientnet_lite0", image_size=96)
    layers = sequential_layers(backbone.model, backbone.preprocessing.input_size)
    bottom = nn.Sequential(*layers[:4])
    by = _by_engine(bottom, backbone.preprocessing, _items(demo_dir), ("torch", "openvino"),
                    name="the frozen bottom of efficientnet_lite0")
    assert by["openvino"].features.shape[0] == 7 and by["openvino"].features.dim() == 4
    torch.testing.assert_close(by["openvino"].features, by["torch"].features, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bf16")
def test_openvino_bf16_features_are_as_close_to_fp32_as_pytorch_bf16(demo_dir):
    """In bf16 `auto` picks OpenVINO (inference precision bf16) over PyTorch's autocast: no farther from fp32."""
    backbone = load_backbone("efficientnet_lite0", image_size=96)
    items = _items(demo_dir)
    fp32 = _by_engine(backbone.model, backbone.preprocessing, items, ("torch",))["torch"].features
    bf16 = _by_engine(backbone.model, backbone.preprocessing, items, ("torch", "openvino"), precision="bf16")

    def error(features):
        return float((features - fp32).norm() / fp32.norm())

    assert error(bf16["openvino"].features) < 0.1
    assert error(bf16["openvino"].features) <= 1.5 * error(bf16["torch"].features)


def _tiny_run(tmp_path, runtime, out, cache):
    from showdown import run

    return run(RunConfig(data="demo", models=["efficientnet_lite0"], max_per_class=2, epochs=1, image_size=64,
                         workers=0, precision="fp32", report=False, record=False, runtime=runtime,
                         out=str(tmp_path / out), cache_dir=str(tmp_path / cache),
                         label_issues="off"),  # its second read of the cache would double the hits counted below
               echo=lambda *_: None)


def test_a_run_with_openvino_scores_what_onnxruntime_scores_and_keys_the_cache_by_engine(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ov = _tiny_run(tmp_path, "openvino", "ov", "cache")
        ort = _tiny_run(tmp_path, "onnxruntime", "ort", "cache")
    assert not [r for r in caplog.records if r.name == engines.__name__]  # neither fell back
    assert ov.rows[0]["accuracy"] == ort.rows[0]["accuracy"]
    assert json.loads((ov.run_dir / "environment.json").read_text())["runtime"] == "openvino"
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == 6  # train, val and test, once per engine: the engine is part of the key
    # `auto` resolves to OpenVINO (installed) before the key is made: all three splits come from its cache
    auto = _tiny_run(tmp_path, "auto", "auto", "cache")
    assert auto.frozen_counts["hit"] == 3 and auto.frozen_counts["miss"] == 0
    assert auto.rows[0]["accuracy"] == ov.rows[0]["accuracy"]
    assert sorted((tmp_path / "cache").iterdir()) == files


def _fails(path, precision):
    raise RuntimeError("Cannot create Eigh layer from unsupported opset\nsecond line of a long C++ message")


@pytest.mark.parametrize("precision, fallback", [("fp32", "ONNX Runtime"), ("bf16", "PyTorch")])
def test_a_model_openvino_cannot_take_falls_back_in_one_log_line(monkeypatch, caplog, capfd, precision, fallback):
    monkeypatch.setitem(engines._OPENERS, "openvino", _fails)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.randn(5, 3, 16, 16)
    name = f"ov-refused-net-{precision}"
    built = engines.Engines()  # one run's
    with caplog.at_level(logging.INFO), torch.inference_mode(), autocast(precision):
        for _ in range(3):  # three splits of a run, one note
            forward = engines.frozen_forward(model, x, precision, "openvino", name, engines=built)
        out = forward(x).float()
    notes = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(notes) == 1 and notes[0].exc_info is None
    message = notes[0].getMessage()
    assert "\n" not in message and name in message and "OpenVINO cannot run" in message
    assert message.endswith(f"running it in {fallback}")
    assert "Traceback" not in "".join(capfd.readouterr())
    torch.testing.assert_close(out, model(x), atol=1e-2 if precision == "bf16" else 1e-5, rtol=1e-2)


def test_batches_run_ahead_give_each_batch_its_own_outputs_in_order():
    """engines.in_order starts a batch before the one before it has ended, on two sets of infer requests taking
    turns: eight batches of uneven sizes (one image: fewer parts than streams) come back tagged, in order, each
    equal to the batch run alone; a sequence stopped early leaves the requests free for the next."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    example = torch.zeros(1, 3, 32, 32)
    with torch.inference_mode():
        forward = engines.frozen_forward(model, example, "fp32", "openvino")
        assert hasattr(forward, "in_order")  # OpenVINO's forward, not a fallback
        batches = [torch.rand(size, 3, 32, 32) for size in (4, 1, 3, 4, 2, 4, 1, 4)]
        outputs = list(engines.in_order(forward, enumerate(batches)))
        assert [tag for tag, _ in outputs] == list(range(len(batches)))
        for (_, got), images in zip(outputs, batches):
            torch.testing.assert_close(got, model(images), atol=1e-5, rtol=1e-5)
        stopped = engines.in_order(forward, enumerate(batches))
        next(stopped), next(stopped)
        stopped.close()
        torch.testing.assert_close(forward(batches[0]), model(batches[0]), atol=1e-5, rtol=1e-5)
        plain = list(engines.in_order(model, [("a", batches[1])]))  # an engine without `in_order`: one by one
        assert plain[0][0] == "a" and torch.equal(plain[0][1], model(batches[1]))
