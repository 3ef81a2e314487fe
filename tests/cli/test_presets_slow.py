"""Every preset with --quick runs to completion offline on the real shared data (`pytest -m slow`, ~10 min).

Backbones without weights on these machines (ResNet50, VGG16, InceptionV3) run with --allow-random-init and
their rows are marked; every row with genuine ImageNet weights must beat chance by a wide margin, even on the
--quick subset (2 epochs on 20 images per class: at least twice chance), and every row's accuracy must be the one
its own predictions.csv and confusion matrix give.
"""
import csv
import json

import pytest

from showdown.config.presets import list_presets, load_preset
from tests.conftest import DATASETS, TFLITE

from .test_run import _cli

LOCAL = {"cifar10": DATASETS / "cifar10-jpg.tar.gz", "tf_flowers": DATASETS / "tf_flowers",
         "cifar100": DATASETS / "cifar100-jpg.tar.gz"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(list_presets()))
def test_preset_quick_runs_to_completion_offline(name, tmp_path):
    data = load_preset(name)["data"]
    if data in LOCAL and not LOCAL[data].exists():
        pytest.skip(f"no local copy of {data} at {LOCAL[data]}")
    if not TFLITE.is_dir():
        pytest.skip(f"MobileNet TFLite weights not found at {TFLITE}")
    out = tmp_path / name
    result = _cli("run", "--preset", name, "--quick", "--data-root", str(DATASETS), "--weights-dir", str(TFLITE),
                  "--allow-random-init", "--no-record", "--out", str(out), timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((out / "summary.json").read_text())["rows"]
    preset = load_preset(name)
    expected = {("scratch_cnn" if s == "scratch-cnn" else m, s) for m in preset["models"] for s in preset["strategies"]}
    assert {(r["model"], r["strategy"]) for r in rows} == expected  # every entry, once
    chance = 1 / len(json.loads((out / "dataset.json").read_text())["classes"])
    for row in rows:
        # Every row's accuracy is what its own test predictions say, image by image (random-init rows included).
        with open(out / row["folder"] / "predictions.csv", newline="") as handle:
            predictions = list(csv.DictReader(handle))
        assert len(predictions) == row["n_test"] > 0, row
        correct = sum(p["pred"] == p["true"] for p in predictions)
        assert row["accuracy"] == pytest.approx(correct / len(predictions)), row
        confusion = json.loads((out / row["folder"] / "metrics.json").read_text())["confusion_matrix"]
        assert sum(map(sum, confusion)) == row["n_test"]
        assert sum(confusion[i][i] for i in range(len(confusion))) == correct
        if row["model"] in ("resnet50", "vgg16", "inception_v3"):
            assert not row["pretrained"]  # random init here, and marked so
        elif row["pretrained"]:
            assert row["accuracy"] >= 2 * chance, row  # genuine weights: far above chance, even on --quick
    assert (out / "report.html").is_file()
