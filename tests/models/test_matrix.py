"""Every named backbone through every strategy: it trains, writes its metrics, reloads, predicts the same, and its
ONNX export gives PyTorch's probabilities. Random init (no hub here) at small inputs on a few real demo photos,
one epoch, so the whole matrix stays quick. fp32, so that the recorded predictions can be compared exactly."""
import csv
import json

import numpy as np
import pytest
import torch

from showdown import RunConfig, run
from showdown.data.images import eval_transform, load_rgb
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.export import export_model
from showdown.deploy.predict import open_model, predict_files
from showdown.models.saving import load_model

# Input size per backbone: the smallest that keeps it quick; InceptionV3's stem needs at least 75 px.
# A ViT takes multiples of its patch: DINOv2's 14 px, the others' 16 px.
BACKBONES = {"efficientnet_lite0": 64, "mobilenet_v2": 64, "mobilenet_v1": 64, "resnet50": 64, "vgg16": 64,
             "inception_v3": 96, "dinov2_vits14": 56, "mobilenetv4_small": 64, "clip_vitb16": 64, "deit_small": 64,
             "convnext_tiny": 64, "efficientnetv2_b0": 64, "regnety_008": 64}
STRATEGIES = ["head", "finetune=blocks:1", "finetune=layers:2", "scratch"]


# VGG16 (134 M parameters, most in its 7x7 pre-logits convolution) and InceptionV3 take minutes, and six of
# today's backbones add minutes together (DINOv2 alone 39 s): `pytest -m slow`.
HEAVY = {"vgg16", "inception_v3", "dinov2_vits14", "clip_vitb16", "deit_small", "convnext_tiny", "efficientnetv2_b0",
         "regnety_008"}


@pytest.fixture(scope="module", params=[pytest.param(name, marks=[pytest.mark.slow] if name in HEAVY else [])
                                        for name in BACKBONES])
def showdown_run(request, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp("matrix") / name
    results = run(RunConfig(data="demo", models=[name], strategies=STRATEGIES, pretrained=False,
                            image_size=BACKBONES[name], max_per_class=4, epochs=1, batch_size=32, workers=0,
                            precision="fp32",
                            out=str(out), report=False, record=False), echo=lambda *_: None)
    return name, results


def _entry(results, strategy):
    (row,) = [r for r in results.rows if r["strategy"] == strategy]
    return results.run_dir / row["folder"], row


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_backbone_trains_saves_predicts_and_exports(showdown_run, strategy):
    name, results = showdown_run
    folder, row = _entry(results, strategy)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["model"] == name and metrics["strategy"] == strategy and metrics["pretrained"] is False
    assert np.isfinite(metrics["loss"])
    assert np.array(metrics["confusion_matrix"]).sum() == 10  # 2 test images per class, each counted once
    history = list(csv.DictReader(open(folder / "history.csv")))
    assert history and all(np.isfinite(float(h["train_loss"])) for h in history)

    # What trains: the head alone, the head and the unfrozen top, or (scratch) every parameter of the network.
    trainable = row["trainable_params"]
    model, info = load_model(folder)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    if strategy == "head":
        assert trainable == head
    elif strategy == "scratch":
        assert trainable == total  # every layer of the named backbone, batch norm included, and the head
        assert info.backbone == name and row["weights"].startswith("random init")
    else:
        assert head < trainable < total

    # The recorded accuracy is that of the recorded predictions, and the reloaded model predicts them again.
    recorded = list(csv.DictReader(open(folder / "predictions.csv")))
    assert len(recorded) == 10
    assert metrics["accuracy"] == pytest.approx(sum(r["pred"] == r["true"] for r in recorded) / len(recorded))
    predicted = list(predict_files(open_model(folder), [r["path"] for r in recorded], top_k=2))
    np.testing.assert_allclose([p["top"][0][1] for p in predicted], [float(r["confidence"]) for r in recorded],
                               atol=1e-4)
    for p, r in zip(predicted, recorded):
        (first, p1), (_, p2) = p["top"]
        assert first == r["pred"] or p1 - p2 < 1e-4, (r["path"], p["top"], r["pred"])  # only a near tie may flip

    # Its ONNX export computes the same probabilities.
    transform = eval_transform(Preprocessing.from_dict(info.preprocessing))
    images = torch.stack([transform(load_rgb(r["path"])) for r in recorded[:4]])
    with torch.inference_mode():
        expected = model(images).softmax(1).numpy()
    exported = open_model(export_model(folder, "onnx"))
    np.testing.assert_allclose(exported(images), expected, atol=1e-4)


class _NoOnnx(torch.nn.Module):
    """A frozen part the ONNX exporter cannot express (no ONNX operator for eigh)."""

    def forward(self, x):
        gram = x.flatten(2) @ x.flatten(2).transpose(1, 2)
        return torch.linalg.eigvalsh(gram)


def test_a_frozen_part_onnx_cannot_express_falls_back_in_one_log_line(caplog, capfd):
    from showdown.frozen.engines import Engines, frozen_forward

    x, built, model = torch.randn(2, 3, 8, 8), Engines(), _NoOnnx()  # one run's engines
    with caplog.at_level("INFO"):
        for _ in range(3):  # three splits of a run, one note
            forward = frozen_forward(model, x, "fp32", "onnxruntime", "no-onnx-net", engines=built)
    notes = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(notes) == 1 and "no-onnx-net" in notes[0] and "\n" not in notes[0]
    out, err = capfd.readouterr()
    assert "graph" not in out + err and len((out + err).splitlines()) <= 1  # no TorchScript IR dump
    torch.testing.assert_close(forward(x), _NoOnnx()(x))  # and it still computes, in PyTorch


@pytest.mark.parametrize("size", [2, 3, 4, 5, 7, 9])
def test_adaptive_pooling_to_any_size_exports_exactly(size, tmp_path):
    from showdown.models.onnx_graph import onnx_graph

    pool = torch.nn.AdaptiveAvgPool2d(7)  # what timm's VGG does before its 7x7 pre-logits convolution
    x = torch.randn(2, 4, size, size + 1)
    onnx_graph(pool, x, tmp_path / "pool.onnx", output="pooled")
    import onnxruntime as ort

    (out,) = ort.InferenceSession(str(tmp_path / "pool.onnx")).run(None, {"image": x.numpy()})
    np.testing.assert_allclose(out, pool(x).numpy(), atol=1e-6)
