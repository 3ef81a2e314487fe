"""Label issues on real photos: planted label errors are found, and `--label-issues off` writes nothing."""
import csv
import random

import pytest

from showdown import RunConfig, run

from .conftest import DATASETS, needs_flowers

FLOWERS = DATASETS / "tf_flowers"


def planted_copy(root, per_class: int | None, share: float = 0.03, seed: int = 0) -> tuple[object, set[str]]:
    """TF-Flowers (the first `per_class` photos of each class, or all) as links, with `share` of them moved to
    another class at random (seeded): (the folder, the paths of the flipped images)."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in FLOWERS.iterdir() if p.is_dir())
    photos = [(cls, path) for cls in classes for path in sorted((FLOWERS / cls).iterdir())[:per_class]]
    flipped = set(rng.sample(range(len(photos)), round(share * len(photos))))
    moved = set()
    for i, (cls, path) in enumerate(photos):
        given = rng.choice([c for c in classes if c != cls]) if i in flipped else cls
        link = root / given / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
        if i in flipped:
            moved.add(str(link))
    return root, moved


def recall_at_twice(run_dir, flipped: set[str]) -> tuple[float, float, int]:
    """(share of the flipped images among the top 2x as many flagged, precision of all flagged, flagged)."""
    with (run_dir / "label_issues.csv").open() as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: int(r["rank"]))
    top = {r["path"] for r in rows[:2 * len(flipped)]}
    flagged = {r["path"] for r in rows}
    return len(top & flipped) / len(flipped), len(flagged & flipped) / max(1, len(flagged)), len(flagged)


def _planted_run(tmp_path, per_class, **values):
    data, flipped = planted_copy(tmp_path / "planted", per_class)
    config = RunConfig(data=str(data), models=["efficientnet_lite0"], workers=0, record=False, report=False,
                       out=str(tmp_path / "run"), **values)
    return run(config, echo=lambda *_: None), flipped


@needs_flowers
def test_planted_label_errors_rank_high_on_a_flowers_subset(tmp_path):
    results, flipped = _planted_run(tmp_path, per_class=100)
    recall, precision, flagged = recall_at_twice(results.run_dir, flipped)
    print(f"planted {len(flipped)}, flagged {flagged}, recall@2x {recall:.2f}, precision {precision:.2f}")
    assert recall >= 0.7


@needs_flowers
@pytest.mark.slow
def test_planted_label_errors_rank_high_on_all_of_tf_flowers(tmp_path):
    results, flipped = _planted_run(tmp_path, per_class=None)
    recall, precision, flagged = recall_at_twice(results.run_dir, flipped)
    print(f"planted {len(flipped)}, flagged {flagged}, recall@2x {recall:.2f}, precision {precision:.2f}")
    assert recall >= 0.7


def test_label_issues_off_writes_no_file(tmp_path, demo_copy):
    config = RunConfig(data=str(demo_copy), models=["efficientnet_lite0"], image_size=64, epochs=2, workers=0,
                       record=False, out=str(tmp_path / "run"), label_issues="off")
    results = run(config, echo=lambda *_: None)
    assert not (results.run_dir / "label_issues.csv").exists()
    assert "label_issues" not in (results.run_dir / "summary.json").read_text()
    assert "without suspect labels" not in (results.run_dir / "report.md").read_text()
