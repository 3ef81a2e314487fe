"""Grad-CAM on a model whose evidence is known: one class always carries a bright square in one corner."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from showdown import RunConfig, run
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.explain import available, explain
from showdown.models.saving import load_model
from showdown.run_schema import MODEL_WEIGHTS
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(not available(), reason="pytorch-grad-cam is not installed (the explain extra)")
SIDE, SQUARE = 192, (12, 84)  # the square spans 12..84 px of both axes: in the top-left quadrant after the crop


@pytest.fixture(scope="module")
def square_run(tmp_path_factory, demo_dir):
    """Every demo photo twice: in 'marked' with a white square in its top-left corner, in 'plain' without, so
    the square is the only evidence that tells the classes apart."""
    root = tmp_path_factory.mktemp("square") / "data"
    for i, photo in enumerate(sorted(demo_dir.rglob("*.jpg"))[::4][:60]):
        image = Image.open(photo).convert("RGB").resize((SIDE, SIDE))
        for cls in ("marked", "plain"):
            (root / cls).mkdir(parents=True, exist_ok=True)
            image.save(root / cls / f"{i:03d}.png")
        image.paste((255, 255, 255), (SQUARE[0], SQUARE[0], SQUARE[1], SQUARE[1]))
        image.save(root / "marked" / f"{i:03d}.png")
    # The pooled outputs of two middle stages too (--pool-stages 2): a white square is a low-level cue.
    config = RunConfig(data=str(root), models=["efficientnet_lite0"], image_size=160, pool_stages=2, epochs=100,
                       patience=30, lr=3e-3, head_dropout=0.0,
                       workers=0, record=False, report=False, label_issues="off", gradcam=4,
                       out=str(tmp_path_factory.mktemp("run") / "square"))
    return run(config, echo=lambda *_: None), root


def test_heat_map_mass_sits_on_the_square(square_run, tmp_path):
    results, root = square_run
    folder = results.run_dir / results.rows[0]["folder"]
    print(f"test accuracy {results.rows[0]['accuracy']:.2f}")
    assert results.rows[0]["accuracy"] >= 0.75  # the square is learnable from frozen features
    model, info = load_model(folder)
    marked = sorted(str(p) for p in (root / "marked").iterdir())[:12]
    done = [d for d in explain(model, info.classes, Preprocessing.from_dict(info.preprocessing), marked,
                               tmp_path) if d.label == "marked"]
    assert len(done) >= 8
    shares = [d.heat[:d.heat.shape[0] // 2, :d.heat.shape[1] // 2].sum() / d.heat.sum() for d in done]
    print(f"heat-map mass in the top-left quadrant: mean {np.mean(shares):.2f}, min {min(shares):.2f}")
    assert np.mean(shares) > 0.5  # a quarter of the image holds most of the evidence
    assert (folder / "gradcam" / "gradcam.csv").is_file() and len(list((folder / "gradcam").glob("*.png"))) == 4


def test_the_runs_overlays_show_the_runs_own_predictions_and_a_given_class_is_explained(square_run, tmp_path):
    """gradcam.csv beside predictions.csv: the same predicted class for every image (the overlays' fp32 pass could
    tip a near tie the run's bf16 or OpenVINO pass decided the other way), and 'wrong' exactly where it differs from
    the true class."""
    import csv

    results, root = square_run
    folder = results.run_dir / results.rows[0]["folder"]
    with (folder / "predictions.csv").open() as handle:
        predicted = {row["path"]: row["pred"] for row in csv.DictReader(handle)}
    with (folder / "gradcam" / "gradcam.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    for row in rows:
        assert row["pred"] == predicted[row["path"]] and (row["kind"] == "wrong") == (row["true"] != row["pred"])
    model, info = load_model(folder)
    marked = sorted(str(p) for p in (root / "marked").iterdir())[:2]
    done = explain(model, info.classes, Preprocessing.from_dict(info.preprocessing), marked, tmp_path,
                   targets=[info.classes.index("plain")] * 2)
    assert [d.label for d in done] == ["plain", "plain"]


def test_explain_command_writes_overlays(square_run, tmp_path):
    results, root = square_run
    out = tmp_path / "overlays"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")  # skipped and listed, as predict does
    done = run_cli("explain", results.run_dir, root / "marked" / "000.png", broken, root / "plain" / "00*.png",
                   "--out", out)
    assert done.returncode == 0, done.stderr
    assert "overlay(s) in" in done.stdout and len(list(out.glob("*.png"))) == 1 + len(list(root.glob("plain/00*.png")))
    assert f"{broken}  (unreadable image: " in done.stdout and "1 unreadable file(s) skipped" in done.stdout
    nothing = run_cli("explain", results.run_dir, broken, "--out", tmp_path / "none")
    assert nothing.returncode == 2 and "none of the 1 image(s) could be read" in nothing.stderr
    assert not (tmp_path / "none").exists()  # no empty folder for no overlay
    refused = run_cli("explain", out / "01-000.png", root / "plain")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1
    weights = next(Path(results.run_dir).glob(f"*/{MODEL_WEIGHTS}"))  # an entry's weights file: its entry, Grad-CAM
    by_file = run_cli("explain", weights, root / "marked" / "000.png", "--out", tmp_path / "by-file")
    assert by_file.returncode == 0 and "1 Grad-CAM overlay(s) in" in by_file.stdout, by_file.stderr


def test_each_image_is_decoded_once_and_an_unreadable_one_keeps_the_others_numbers(square_run, tmp_path,
                                                                                    monkeypatch):
    import showdown.deploy.explain as explaining

    results, root = square_run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    images = [str(root / "marked" / "000.png"), str(broken), str(root / "plain" / "000.png")]
    decoded, decode_for = [], explaining.decode_for
    monkeypatch.setattr(explaining, "decode_for",
                        lambda transform, path: decoded.append(str(path)) or decode_for(transform, path))
    folder, done, method, skipped = explaining.explain_files(str(results.run_dir), images, out=str(tmp_path / "o"))
    assert sorted(decoded) == sorted(images)  # once each, the unreadable one included
    assert skipped == [str(broken)] and [d.png for d in done] == ["01-000.png", "03-000.png"]


def test_an_exported_torchscript_model_is_explained_by_occlusion_on_the_square(square_run, tmp_path):
    """A TorchScript file exposes no layer to hook: `showdown explain model.pt` maps occlusion instead, and the
    evidence is still found on the square."""
    from showdown.deploy.explain import occlusion
    from showdown.deploy.export import export_model
    from showdown.deploy.predict import open_model

    results, root = square_run
    exported = export_model(str(results.run_dir), "torchscript", str(tmp_path / "model.pt"))
    marked = sorted(str(p) for p in (root / "marked").iterdir())[:3]  # 169 forward passes each
    done = [d for d in occlusion(open_model(exported), marked, tmp_path / "maps") if d.label == "marked"]
    assert len(done) >= 2
    shares = [d.heat[:d.heat.shape[0] // 2, :d.heat.shape[1] // 2].sum() / max(d.heat.sum(), 1e-9) for d in done]
    print(f"occlusion mass in the top-left quadrant: mean {np.mean(shares):.2f}, min {min(shares):.2f}")
    assert np.mean(shares) > 0.5
    command = run_cli("explain", exported, marked[0])
    assert command.returncode == 0, command.stderr
    assert "1 occlusion overlay(s) in" in command.stdout
    assert len(list((tmp_path / "model-pt-explain").glob("*.png"))) == 1  # one folder per format, beside the file


def test_maps_of_images_explained_together_are_each_image_own(demo_dir, tmp_path):
    """Grad-CAM runs a few images per pass (deploy/explain.py): each image's map and class are what it gets alone."""
    import torch

    from showdown.models.backbones import load_backbone
    from showdown.models.classifier import Head, ImageClassifier

    torch.manual_seed(0)
    backbone = load_backbone("mobilenet_v2", pretrained=False, image_size=64)
    model = ImageClassifier(backbone.model, Head(backbone.num_features, 3))
    paths = [str(p) for p in sorted(demo_dir.rglob("*.jpg"))[:10]]  # a chunk of 8 and one of 2
    together = explain(model, ["a", "b", "c"], backbone.preprocessing, paths, tmp_path / "together")
    alone = [explain(model, ["a", "b", "c"], backbone.preprocessing, [p], tmp_path / f"alone{i}")[0]
             for i, p in enumerate(paths)]
    assert [d.label for d in together] == [d.label for d in alone]
    for one, other in zip(together, alone):
        assert abs(one.probability - other.probability) < 1e-5
        np.testing.assert_allclose(one.heat, other.heat, atol=1e-4)


@pytest.mark.parametrize("name, side", [("resnet18", 64), ("vit_tiny_patch16_224", 224)])
def test_maps_differentiated_from_the_explained_layer_up_are_those_of_the_whole_graph(name, side):
    """explain() cuts the backward pass at the layer it explains (explain._gradients_from): the maps must be the ones
    Grad-CAM makes through the whole graph, and the model's own flags stay as they were."""
    import timm
    import torch
    from pytorch_grad_cam import GradCAM

    from showdown.deploy.explain import _gradients_from, spatial_layer
    from showdown.models.classifier import Head, ImageClassifier

    torch.manual_seed(0)
    backbone = timm.create_model(name, num_classes=0, pretrained=False).eval()
    backbone.requires_grad_(False)
    model = ImageClassifier(backbone, Head(backbone.num_features, 3)).eval()
    layer, reshape = spatial_layer(backbone, (3, side, side))
    x = torch.randn(3, 3, side, side)
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        whole = cam(input_tensor=x.clone().requires_grad_(True), targets=None)
    with _gradients_from(layer), GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        cut = cam(input_tensor=x, targets=None)
    assert whole.std() > 0
    np.testing.assert_allclose(cut, whole, atol=1e-5)
    assert all(p.requires_grad for p in model.head.parameters()) and not any(
        p.requires_grad for p in backbone.parameters())
    assert not layer._forward_hooks  # the cut's hook is gone
