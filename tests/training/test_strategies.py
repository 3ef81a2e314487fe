"""Freezing is exactly what was asked, and the boundary cache computes the same network."""
import csv

import numpy as np
import pytest
import torch
from torch import nn

from showdown import RunConfig, run
from showdown.data import load_dataset
from showdown.data.images import eval_transform, load_rgb
from showdown.deploy.predict import open_model, predict_files
from showdown.errors import ConfigError
from showdown.frozen.boundary import TopOfNetwork, first_trainable, sequential_layers
from showdown.models.backbones import load_backbone
from showdown.models.classifier import Head, ImageClassifier
from showdown.models.saving import load_model
from showdown.training.freezing import (
    batchnorms_kept_in_eval,
    layer_groups,
    lr_param_groups,
    parameterised_layers,
    unfreeze,
)
from tests.conftest import assert_saved_model_predicts_recorded


def classifier(name="efficientnet_lite0", **kwargs):
    backbone = load_backbone(name, **kwargs)
    return backbone, ImageClassifier(backbone.model, Head(backbone.num_features, 5))


def trainable(model):
    return {n for n, p in model.backbone.named_parameters() if p.requires_grad}


def test_blocks_unfreezes_exactly_the_last_layer_groups():
    _, model = classifier()
    unfreeze(model, "blocks:2")
    groups = layer_groups(model.backbone)
    assert trainable(model) == set(groups[-1]) | set(groups[-2])
    assert any(n.startswith("blocks.5.") for n in trainable(model)) and "conv_head.weight" in trainable(model)
    assert all(p.requires_grad for p in model.head.parameters())


def test_layers_unfreezes_the_last_parameterised_layers_keras_style():
    _, model = classifier()
    unfreeze(model, "layers:3")  # bn2, conv_head, blocks.6.0.bn3 counted from the top
    assert trainable(model) == {"bn2.weight", "bn2.bias", "conv_head.weight", "blocks.6.0.bn3.weight",
                                "blocks.6.0.bn3.bias"}
    assert parameterised_layers(model.backbone)[-3:] == ["blocks.6.0.bn3", "conv_head", "bn2"]
    unfreeze(model, "all")
    assert trainable(model) == {n for n, _ in model.backbone.named_parameters()}



def test_blocks_and_layers_mean_a_stage_and_every_tensor_on_convnext_and_vit():
    """ConvNeXt's head.norm is a timm group of its own: blocks:1 trained those two tensors alone. A ViT's
    cls_token and pos_embed belong to the root module: layers:<all of them> left them frozen."""
    import timm

    from showdown.models.classifier import Head, ImageClassifier

    convnext = ImageClassifier(timm.create_model("convnext_atto", num_classes=0), Head(320, 5))
    unfreeze(convnext, "blocks:1")
    assert {"head.norm.weight", "stages.3.blocks.1.conv_dw.weight"} <= trainable(convnext)
    vit = ImageClassifier(timm.create_model("vit_tiny_patch16_224", num_classes=0), Head(192, 5))
    unfreeze(vit, f"layers:{len(parameterised_layers(vit.backbone))}")
    assert trainable(vit) == {n for n, _ in vit.backbone.named_parameters()}  # the same as `all`
    unfreeze(convnext, "layers:1")  # the top layer's own tensors, not a whole block holding a gamma of its own
    assert trainable(convnext) == {"head.norm.weight", "head.norm.bias"}

def test_bad_unfreeze_is_a_config_error():
    with pytest.raises(ConfigError, match="layers:N, blocks:K or all"):
        RunConfig(unfreeze="top:3").validate()


def test_layerwise_lr_decay_lowers_deeper_groups():
    _, model = classifier()
    unfreeze(model, "blocks:3")
    groups = lr_param_groups(model, 0.01, 0.5)
    assert [g["lr"] for g in groups] == [0.01, 0.005, 0.0025, 0.00125]


def test_batch_norm_stays_in_inference_mode_unless_train_bn():
    _, model = classifier()
    unfreeze(model, "blocks:2")
    all_bn = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batchnorms_kept_in_eval(model)) == len(all_bn)
    kept = batchnorms_kept_in_eval(model, train_bn=True)
    assert model.backbone.bn2 not in kept and model.backbone.bn1 in kept


def test_boundary_top_computes_the_same_network(demo_dir):
    backbone, model = classifier()
    unfreeze(model, "blocks:2")
    layers = sequential_layers(backbone.model, backbone.preprocessing.input_size)
    cut = first_trainable(layers)
    assert 0 < cut < len(layers)
    top = TopOfNetwork(layers[cut:], backbone.model, model.head)
    transform = eval_transform(backbone.preprocessing)
    images = torch.stack([transform(load_rgb(p)) for p in sorted((demo_dir / "roses").iterdir())[:4]])
    model.eval()
    with torch.inference_mode():
        full = model(images)
        activations = nn.Sequential(*layers[:cut])(images)
        assert torch.allclose(top(activations), full, atol=1e-4)
        # stored in bf16, as the cache does: close enough that the loss curves match
        loss_full = nn.functional.cross_entropy(full, torch.zeros(4, dtype=torch.long))
        loss_bf16 = nn.functional.cross_entropy(top(activations.bfloat16()), torch.zeros(4, dtype=torch.long))
        assert float(loss_bf16) == pytest.approx(float(loss_full), rel=0.02)


def test_finetune_keeps_frozen_weights_and_bn_statistics_bit_identical(tmp_path, demo_copy):
    before = load_backbone("efficientnet_lite0").model.state_dict()
    results = run(RunConfig(data=str(demo_copy), models=["efficientnet_lite0"], strategies=["finetune", "head"],
                            image_size=160, epochs=3, workers=0, out=str(tmp_path / "ft")), echo=lambda *_: None)
    model, _ = load_model(results.run_dir / "efficientnet_lite0-finetune")
    after = model.backbone.state_dict()
    trained = set(layer_groups(model.backbone)[-1]) | set(layer_groups(model.backbone)[-2])
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and changed <= trained  # only unfrozen weights moved ...
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)  # ... and no BN statistics
    history = (results.run_dir / "efficientnet_lite0-finetune" / "history.csv").read_text()
    assert "\nhead,1," in history and "\nfinetune,1," in history
    # The entry after it starts from the ImageNet weights, not from the fine-tuned ones.
    head_model, _ = load_model(results.run_dir / "efficientnet_lite0-head")
    assert all(torch.equal(v, before[k]) for k, v in head_model.backbone.state_dict().items())


def test_scratch_cnn_trains_every_layer_of_the_small_cnn(tmp_path, demo_copy):
    """The `scratch-cnn` baseline (the named backbone is not used). The `scratch` strategy, a named timm backbone
    from random init with every layer trainable, runs through test_matrix.py for every backbone."""
    results = run(RunConfig(data=str(demo_copy), models=["efficientnet_lite0"], strategies=["scratch-cnn"],
                            image_size=64, epochs=2, workers=0, out=str(tmp_path / "s")), echo=lambda *_: None)
    row = results.rows[0]
    assert row["model"] == "scratch_cnn" and row["trainable_params"] == round(row["params_m"] * 1e6)
    assert not row["pretrained"] and row["weights"].startswith("random init")
    model, info = load_model(results.run_dir / "scratch_cnn-scratch-cnn")
    assert info.backbone == "scratch_cnn"


def test_scratch_trains_a_named_backbone_from_random_init_with_every_layer_trainable(tmp_path):
    """`scratch` in a run whose other entries get ImageNet weights: the named backbone starts from random init
    (not from those weights), every parameter trains, and the saved model predicts what predictions.csv says."""
    results = run(RunConfig(data="demo", models=["efficientnet_lite0"], strategies=["scratch"], image_size=64,
                            max_per_class=2, epochs=1, workers=0, precision="fp32", report=False, record=False,
                            out=str(tmp_path / "s")), echo=lambda *_: None)
    (row,) = results.rows
    assert row["model"] == "efficientnet_lite0" and row["strategy"] == "scratch"
    assert not row["pretrained"] and row["weights"] == "random init (trained from scratch)"  # no --no-pretrained
    folder = results.run_dir / "efficientnet_lite0-scratch"
    model, info = load_model(folder)
    assert info.backbone == "efficientnet_lite0"
    assert row["trainable_params"] == sum(p.numel() for p in model.parameters())  # every layer, and the head
    imagenet = load_backbone("efficientnet_lite0").model.conv_stem.weight
    assert not torch.allclose(model.backbone.conv_stem.weight, imagenet, atol=0.05)  # one epoch from random init
    with open(folder / "predictions.csv", newline="") as handle:
        recorded = list(csv.DictReader(handle))
    predicted = list(predict_files(open_model(folder), [r["path"] for r in recorded], top_k=2))
    np.testing.assert_allclose([p["top"][0][1] for p in predicted], [float(r["confidence"]) for r in recorded],
                               atol=1e-5)
    for p, r in zip(predicted, recorded):
        (first, p1), (_, p2) = p["top"]
        assert first == r["pred"] or p1 - p2 < 1e-5


def test_balanced_class_weights_raise_minority_recall():
    """--class-weight balanced: on a 19:1 imbalanced problem the rare class is found far more often."""
    from showdown.training.loop import TrainSettings, fit

    generator = torch.Generator().manual_seed(0)
    counts = (950, 50)
    x = torch.cat([torch.randn(n, 8, generator=generator) + 0.5 * c for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    batches = [(x[i], y[i]) for i in torch.randperm(len(y), generator=generator).split(100)]
    weights = torch.tensor([len(y) / (2 * n) for n in counts])  # what sklearn's "balanced" gives
    recalls = {}
    for name, class_weights in (("none", None), ("balanced", weights)):
        torch.manual_seed(0)
        head = nn.Linear(8, 2)
        fit(head, batches, batches, TrainSettings(epochs=20, lr=0.05, patience=100, seed=0),
            class_weights=class_weights)
        with torch.no_grad():
            predicted = head(x).argmax(1)
        recalls[name] = float((predicted[y == 1] == 1).float().mean())
    assert recalls["balanced"] > recalls["none"] + 0.2, recalls


def test_strong_augmentation_mixes_image_pairs_with_soft_targets():
    """`strong` trains on mixup/cutmix blends of pairs against soft targets, not on the images as given."""
    from timm.loss import SoftTargetCrossEntropy

    from showdown.training.loop import Optimizing, TrainSettings, _loss_functions, run_epoch

    loss_fn, mix = _loss_functions(TrainSettings(mixup=True, label_smoothing=0.1), None, num_classes=3)
    assert isinstance(loss_fn, SoftTargetCrossEntropy) and mix is not None
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3 * 8 * 8, 3)

        def forward(self, images):
            seen.append(images.clone())
            return self.linear(images.flatten(1))

    torch.manual_seed(0)
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    model = Recorder()
    step = Optimizing(torch.optim.SGD(model.parameters(), lr=0.1), mix=mix)
    run_epoch(model, [(images.clone(), labels)], loss_fn, step)
    assert not torch.equal(seen[0], images)  # blended (mixup) or pasted (cutmix)


def test_a_finetune_phase_that_never_beats_its_start_gives_the_start_back():
    """keep_start: the head the fine-tuning starts from is the first candidate for early stopping."""
    from showdown.training.loop import TrainSettings, fit

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    batches = [(x[i:i + 50], y[i:i + 50]) for i in range(0, 200, 50)]
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    fit(model, batches, batches, TrainSettings(epochs=30, lr=0.1, patience=100))  # a good start
    start = {k: v.clone() for k, v in model.state_dict().items()}
    flipped = [(inputs, 1 - targets) for inputs, targets in batches]  # training on wrong labels only hurts
    history = fit(model, flipped, batches, TrainSettings(epochs=3, lr=0.1, patience=3), keep_start=True)
    assert len(history) == 3
    for key, value in model.state_dict().items():
        assert torch.equal(value, start[key]), key


def test_finetune_decodes_each_image_once_and_tests_the_top_on_its_activations(tmp_path, demo_copy, monkeypatch):
    """One pass over the images gives the boundary activations of every split and their mirror images; the head
    phase's features come from them (the feature cache is not read), and the test split is scored on them. The
    saved model, run on the test images, predicts what predictions.csv says."""
    from collections import Counter

    from showdown.data import images

    decoded = Counter()
    load = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda path, side=None: decoded.update([path]) or load(path, side))
    lines = []
    results = run(RunConfig(data=str(demo_copy), models=["efficientnet_lite0"], strategies=["finetune"],
                            image_size=96, epochs=2, augment="flip", tta="flip", workers=0, precision="fp32",
                            report=False, record=False, gradcam=0,  # its overlays decode their images again
                            out=str(tmp_path / "ft")), echo=lines.append)
    assert any("boundary cache: frozen bottom" in line for line in lines), lines
    assert decoded and set(decoded.values()) == {1}  # every image, mirror images included, decoded once
    assert len(decoded) == sum(1 for p in demo_copy.rglob("*.jpg"))
    assert results.frozen_counts["hit"] == results.frozen_counts["miss"] == 0  # no
    # feature extraction of its own; images run through the frozen bottom: each split, and mirrored train and test
    n = {split: len(items) for split, items in load_dataset(str(demo_copy)).splits.items()}  # the run's split
    assert results.frozen_counts["images"] == 2 * n["train"] + n["val"] + 2 * n["test"]
    folder = results.run_dir / "efficientnet_lite0-finetune"
    history = (folder / "history.csv").read_text()
    assert "\nhead,2," in history and "\nfinetune,2," in history
    monkeypatch.undo()
    assert_saved_model_predicts_recorded(folder)


def test_a_boundary_cache_size_is_said_in_a_unit_that_shows_it():
    from showdown.fileio import readable_size

    assert [readable_size(n) for n in (300 * 2**10, 3.46 * 2**20, 4230 * 2**20, 6 * 2**30)] == [
        "300 KB", "3.5 MB", "4.1 GB", "6.0 GB"]  # a small subset's cache was "0 MB"
    assert readable_size(12 * 2**20) == "12 MB" and readable_size(10) == "1 KB"


def test_a_fit_says_which_epoch_ends_it_to_the_search():
    """on_epoch's second argument: True at the epoch early stopping ends the fit (or the last of --epochs), False
    before, so that a search does not prune a trial at its last epoch."""
    from showdown.training.loop import TrainSettings, fit

    x, y = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 2
    val = [(torch.randn(64, 4, generator=torch.Generator().manual_seed(1)), y)]  # noise: no epoch betters it long
    for epochs, patience in ((50, 1), (3, 100)):
        said = []
        torch.manual_seed(0)
        history = fit(nn.Linear(4, 2), [(x, y)], val, TrainSettings(epochs=epochs, lr=0.5, patience=patience),
                      on_epoch=lambda _loss, ends, record=said.append: record(ends))
        assert len(said) == len(history) and said[-1] and not any(said[:-1]), (epochs, said)
        assert (len(history) < epochs) == (patience == 1)  # early stopping ended the first, the count the second
