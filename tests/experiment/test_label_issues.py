"""Label issues on real photos: planted label errors are found, and `--label-issues off` writes nothing."""
import pytest
from benchmarks.planted_label_errors import planted_copy, ranking

from showdown import RunConfig, run
from tests.conftest import DATASETS, needs_flowers

FLOWERS = DATASETS / "tf_flowers"


def _planted_run(tmp_path, per_class, **values):
    data = tmp_path / "planted"
    flipped = planted_copy(FLOWERS, data, per_class)
    config = RunConfig(data=str(data), models=["efficientnet_lite0"], workers=0, record=False, report=False, gradcam=0,
                       out=str(tmp_path / "run"), **values)
    return run(config, echo=lambda *_: None), flipped


@needs_flowers
def test_planted_label_errors_rank_high_on_a_flowers_subset(tmp_path):
    results, flipped = _planted_run(tmp_path, per_class=100)
    found = ranking(results.run_dir, flipped)
    print(found)
    assert found["recall_at_2x"] >= 0.7


@needs_flowers
@pytest.mark.slow
def test_planted_label_errors_rank_high_on_all_of_tf_flowers(tmp_path):
    results, flipped = _planted_run(tmp_path, per_class=None)
    found = ranking(results.run_dir, flipped)
    print(found)
    assert found["recall_at_2x"] >= 0.7


def test_label_issues_off_writes_no_file(tmp_path, demo_copy):
    config = RunConfig(data=str(demo_copy), models=["efficientnet_lite0"], image_size=64, epochs=2, workers=0,
                       record=False, out=str(tmp_path / "run"), label_issues="off")
    results = run(config, echo=lambda *_: None)
    assert not (results.run_dir / "label_issues.csv").exists()
    assert "label_issues" not in (results.run_dir / "summary.json").read_text()
    assert "without suspect labels" not in (results.run_dir / "report.md").read_text()


def test_drop_label_issues_reruns_every_entry_without_the_flagged_images(tmp_path, demo_copy, capsys, monkeypatch):
    import csv
    import json

    from showdown.experiment import runner

    monkeypatch.setattr(runner, "explain_available", lambda: False)  # as without pytorch-grad-cam installed
    lines = []
    config = RunConfig(data=str(demo_copy), models=["efficientnet_lite0", "efficientnet_lite1"], strategies=["head"],
                       image_size=64, epochs=3, workers=0, precision="fp32", record=False, gradcam=2,
                       out=str(tmp_path / "run"), drop_label_issues=True)
    results = run(config, echo=lines.append)
    err = capsys.readouterr().err  # the note on the missing extra comes once, after the re-run's entries too
    assert err.count("Grad-CAM overlays skipped") == 1 and err.index("Grad-CAM") > err.rindex("epoch 3/3")
    run_dir, rerun = results.run_dir, results.without_label_issues
    with (run_dir / "label_issues.csv").open(newline="") as handle:
        flagged = list(csv.DictReader(handle))
    assert flagged and rerun is not None and rerun.run_dir == run_dir / "without-label-issues"
    # the re-run's split is the first one less exactly the flagged files
    first, again = (json.loads((d / "dataset.json").read_text())["counts"] for d in (run_dir, rerun.run_dir))
    for split in ("train", "val", "test"):
        assert again[split] == first[split] - sum(row["split"] == split for row in flagged)
    suspect = {row["path"] for row in flagged if row["split"] == "test"}
    for row in rerun.rows:
        with (rerun.run_dir / row["folder"] / "predictions.csv").open(newline="") as handle:
            tested = [p["path"] for p in csv.DictReader(handle)]
        assert len(tested) == again["test"] and not suspect & set(tested)
    # head entries took their features from the first pass's cache: two backbones' images decoded once each
    assert results.frozen_counts["images"] == 2 * sum(first.values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["label_issues"]["rerun"] == {"folder": "without-label-issues", "kept": again}
    assert sum(line.startswith("ranking without the suspected label errors: ") for line in lines) == 1
    page = (run_dir / "report.html").read_text()
    assert "<section id=rerun>" in page and ("The ranking is the same" in page or "The ranking changes" in page)
    assert (rerun.run_dir / "report.html").is_file()


def test_drop_label_issues_needs_label_issues(tmp_path, capsys):
    from showdown.cli import main

    assert main(["run", "--data", "demo", "--drop-label-issues", "--label-issues", "off"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --drop-label-issues needs") and err.count("\n") == 1


def test_out_of_fold_probabilities_are_read_back_on_a_rerun_and_recomputed_when_damaged(tmp_path, monkeypatch,
                                                                                          caplog):
    """The K heads are seeded: a re-run with the same features reads their probabilities from the cache folder;
    a damaged entry, truncated or with bytes changed that still load as an array, is computed again, to the same
    values, with one warning line each."""
    import numpy as np
    import torch

    from showdown.experiment import label_issues
    from showdown.training.loop import TrainSettings

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 8, generator=generator), np.repeat(np.arange(3), 20)
    x[np.arange(60), y] += 3.0  # learnable
    settings = TrainSettings(epochs=3, seed=1)
    first = label_issues._out_of_fold_cached(x, y, 3, settings, tmp_path)
    (entry,) = tmp_path.glob("out-of-fold-*.npy")
    trained = label_issues.out_of_fold
    monkeypatch.setattr(label_issues, "out_of_fold", lambda *a: pytest.fail("trained again on a re-run"))
    np.testing.assert_array_equal(label_issues._out_of_fold_cached(x, y, 3, settings, tmp_path), first)
    monkeypatch.setattr(label_issues, "out_of_fold", trained)
    intact = entry.read_bytes()
    for damaged in (intact[:50], intact[:-8] + bytes(8)):  # truncated; the last probability zeroed (it loads)
        entry.write_bytes(damaged)
        caplog.clear()
        np.testing.assert_array_equal(label_issues._out_of_fold_cached(x, y, 3, settings, tmp_path), first)
        assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"damaged cache entry {entry}"]
        assert entry.read_bytes() == intact  # written again
    other = label_issues._out_of_fold_cached(x, y, 3, TrainSettings(epochs=3, seed=2), tmp_path)
    assert len(list(tmp_path.glob("out-of-fold-*.npy"))) == 2 and other.shape == first.shape  # the seed is in the key


def test_the_line_names_the_classes_too_small_to_judge_by_the_folds_actually_used():
    """Five folds, fewer where the largest class is smaller: a class is thin against the folds the search used."""
    import numpy as np

    from showdown.experiment.label_issues import describe
    from showdown.training.out_of_fold import fold_count

    assert fold_count(np.array([0, 0, 0, 1, 1, 1]), 2) == 3  # no class of 5: 3 folds, and neither class thin
    assert fold_count(np.array([0] * 9 + [1]), 2) == 5
    summary = {"flagged": 1, "backbone": "mobilenet_v2", "per_split": {"train": {"flagged": 1, "images": 12}},
               "seconds": 0.1, "folds": 5, "thin_classes": {"roses": 3, "lonely": 1}}
    assert describe(summary).endswith("; classes with fewer images than the 5 folds, judged less surely: roses (3); "
                                      "classes of a single image, not judged: lonely")
    assert describe({**summary, "thin_classes": {}}).endswith("listed in label_issues.csv")
    assert "listed in" not in describe({**summary, "flagged": 0, "thin_classes": {}})  # no file is written then
    weak = describe({**summary, "thin_classes": {}, "out_of_fold_accuracy": 0.45})
    assert weak.endswith("; the out-of-fold heads behind them score only 0.45, so many are their own mistakes")
