"""Run options that change how a showdown trains reach the run: each test fails if its option were ignored.

All on a few demo images at 64 px, one or two epochs, fp32, no report or database record: seconds each.
"""
import csv
import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from showdown import RunConfig, run
from showdown.models.saving import load_model

QUICK = dict(data="demo", models=["efficientnet_lite0"], image_size=64, max_per_class=2, epochs=1, workers=0,
             precision="fp32", report=False, record=False)


def _history(folder):
    with open(folder / "history.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def seen_transforms(monkeypatch):
    """The transforms every image dataset of the run is built with (training and evaluation alike)."""
    from showdown.data.images import ImageFiles

    seen = []
    real_init = ImageFiles.__init__

    def recording_init(self, items, transform):
        seen.append(repr(transform))
        real_init(self, items, transform)

    monkeypatch.setattr(ImageFiles, "__init__", recording_init)
    return seen


@pytest.fixture
def mixed_batches(monkeypatch):
    """The input shapes of every batch mixup/cutmix blends during training."""
    from timm.data import Mixup

    from showdown.training import loop

    shapes = []

    class RecordingMixup(Mixup):
        def __call__(self, x, target):
            shapes.append(tuple(x.shape))
            return super().__call__(x, target)

    monkeypatch.setattr(loop, "Mixup", RecordingMixup)
    return shapes


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_light_and_strong_augmentation_train_on_augmented_images(augment, tmp_path, seen_transforms, mixed_batches):
    """Both bypass the feature cache (the inputs change every epoch) and train on random crops of the images;
    `strong` adds RandAugment and blends the image pairs with mixup/cutmix, `light` does neither."""
    lines = []
    results = run(RunConfig(**QUICK, augment=augment, out=str(tmp_path / augment)), echo=lines.append)
    assert any(f"feature cache off: augmentation '{augment}'" in line for line in lines), lines
    augmenting = [t for t in seen_transforms if "RandomResizedCrop" in t]
    assert augmenting, seen_transforms  # the training images are randomly cropped ...
    assert all("RandAugment" in t for t in augmenting) == (augment == "strong")  # ... and RandAugmented if strong
    if augment == "strong":
        assert mixed_batches and all(len(shape) == 4 and shape[1:] == (3, 64, 64) for shape in mixed_batches)
        again = run(RunConfig(**QUICK, augment=augment, out=str(tmp_path / "again")), echo=lines.append)
        trained = [[{k: v for k, v in row.items() if k != "seconds"}
                    for row in _history(r.run_dir / "efficientnet_lite0-head")] for r in (results, again)]
        assert trained[0] == trained[1]  # the same seed draws the same crops, RandAugment ops and mixing
    else:
        assert mixed_batches == []
    metrics = json.loads((results.run_dir / "efficientnet_lite0-head" / "metrics.json").read_text())
    assert metrics["setup"]["augment"] == augment and "feature_seconds" not in metrics  # no features extracted


def test_onecycle_schedule_warms_up_then_anneals_the_learning_rate(tmp_path):
    """history.csv records each epoch's starting learning rate: onecycle starts at lr/25, rises to its peak
    within the first third of the steps and falls after it; plateau keeps lr while the loss improves."""
    config = dict(QUICK, max_per_class=4, epochs=6, patience=20, batch_size=8, lr=0.01)  # 20 images: 3 steps/epoch
    lrs = {}
    for schedule in ("onecycle", "plateau"):
        results = run(RunConfig(**config, schedule=schedule, out=str(tmp_path / schedule)), echo=lambda *_: None)
        lrs[schedule] = [float(h["lr"]) for h in _history(results.run_dir / "efficientnet_lite0-head")]
    onecycle = lrs["onecycle"]
    assert len(onecycle) == 6 and lrs["plateau"] == [0.01] * 6
    assert onecycle[0] == pytest.approx(0.01 / 25)  # OneCycleLR's default div_factor
    peak = onecycle.index(max(onecycle))
    assert 0 < peak < 3 and 0.005 < max(onecycle) <= 0.01  # the peak is at step 4.4 of 18
    assert all(a < b for a, b in zip(onecycle[:peak], onecycle[1:peak + 1]))  # it only rises before ...
    assert all(a > b for a, b in zip(onecycle[peak:], onecycle[peak + 1:]))  # ... and only falls after
    assert onecycle[-1] < 0.002


def test_a_tiny_cache_budget_without_the_disk_cache_makes_finetune_fall_back_to_the_full_forward_pass(tmp_path):
    """--cache-budget-gb with --no-boundary-disk: activations that exceed it are not cached; finetune trains through
    the whole network (and --activation-shift, which shifts cached activations, says in one line that it is
    ignored). Without --no-boundary-disk they go to disk: test_disk_boundary.py."""
    lines = []
    results = run(RunConfig(**QUICK, strategies=["finetune"], cache_budget_gb=1e-6, activation_shift=1,
                            boundary_disk=False, out=str(tmp_path / "ft")), echo=lines.append)
    fallback = [line for line in lines if "boundary cache off" in line]
    assert len(fallback) == 1 and ("exceed the 1 KB budget (--cache-budget-gb); the disk cache is off "
                                   "(--no-boundary-disk); full forward") in fallback[0], lines
    assert not any("boundary cache on disk" in line for line in lines)
    assert not any("boundary cache: frozen bottom" in line for line in lines)
    assert sum("--activation-shift ignored" in line for line in lines) == 1, lines
    folder = results.run_dir / "efficientnet_lite0-finetune"
    assert [h["phase"] for h in _history(folder)] == ["head", "finetune"]  # both phases ran to the end
    assert (folder / "metrics.json").is_file() and results.rows[0]["strategy"] == "finetune"


def test_weights_model_equals_file_loads_that_file_into_that_model_only(tmp_path, capsys):
    """--weights MODEL=FILE with two models: the named one is built from the file, and says so; the other keeps
    its usual weights."""
    import timm

    from showdown.cli import main

    torch.manual_seed(123)
    state = timm.create_model("mobilenetv2_100", pretrained=False).state_dict()  # nobody else's weights
    weights = tmp_path / "my-mobilenet.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    quick = tmp_path / "quick.yaml"  # the subset and precision have no flags of their own
    quick.write_text(yaml.safe_dump({"max_per_class": 2, "precision": "fp32"}))
    out = tmp_path / "run"
    code = main(["run", "--config", str(quick), "--data", "demo", "--models", "efficientnet_lite0,mobilenet_v2",
                 "--weights", f"mobilenet_v2={weights}", "--image-size", "64", "--epochs", "1", "--workers", "0",
                 "--no-report", "--no-record", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    source = f"file {weights}"
    metrics = json.loads((out / "mobilenet_v2-head" / "metrics.json").read_text())
    assert metrics["weights"] == source and metrics["pretrained"] is True
    model, info = load_model(out / "mobilenet_v2-head")
    assert info.weights_source == source
    backbone = model.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("classifier."):  # the head replaces ImageNet's classifier
            assert torch.equal(backbone[key], value), key  # the frozen backbone holds exactly the file's weights
    _, lite0 = load_model(out / "efficientnet_lite0-head")
    assert lite0.weights_source.startswith("package")


def test_config_file_values_are_used_and_cli_flags_override_them(tmp_path, capsys):
    """--config FILE: the run uses the file's values (recorded in config.yaml and visible in what it did); a flag
    given as well wins over the file."""
    from showdown.cli import main

    config_file = tmp_path / "mine.yaml"
    config_file.write_text(yaml.safe_dump({
        "data": "demo", "models": ["efficientnet_lite0"], "image_size": 64, "max_per_class": 2, "epochs": 1,
        "patience": 20, "lr": 0.005, "schedule": "plateau", "workers": 0, "precision": "fp32", "report": False,
        "record": False,
    }))
    out = tmp_path / "run"
    code = main(["run", "--config", str(config_file), "--epochs", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["lr"] == 0.005 and recorded["max_per_class"] == 2 and recorded["image_size"] == 64
    assert recorded["epochs"] == 3  # the flag, not the file's 1
    entry = out / "efficientnet_lite0-head"
    history = _history(entry)
    assert [int(h["epoch"]) for h in history] == [1, 2, 3] and float(history[0]["lr"]) == 0.005
    _, info = load_model(entry)
    assert info.preprocessing["input_size"] == [3, 64, 64]
    confusion = json.loads((entry / "metrics.json").read_text())["confusion_matrix"]
    assert sum(map(sum, confusion)) == 10  # the file's max_per_class: 2 test images per class, not all 40
