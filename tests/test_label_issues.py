"""Label issues on real photos: planted label errors are found, and `--label-issues off` writes nothing."""
import pytest
from benchmarks.planted_label_errors import planted_copy, ranking

from showdown import RunConfig, run

from .conftest import DATASETS, needs_flowers

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
