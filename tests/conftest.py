import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHOWDOWN_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "photos"
DATASETS = SHARED / "datasets"
TFLITE = SHARED / "weights" / "mobilenet-tflite"

needs_photos = pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"real photos not found at {PHOTOS} (../shared absent)")
needs_flowers = pytest.mark.skipif(not (DATASETS / "tf_flowers").is_dir(),
                                   reason=f"TF-Flowers not found under {DATASETS} (../shared absent)")
needs_cifar10 = pytest.mark.skipif(not (DATASETS / "cifar10-jpg.tar.gz").is_file(),
                                   reason=f"CIFAR-10 archive not found under {DATASETS} (../shared absent)")


if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2`: one core per worker. Two workers each spinning two OpenMP threads on two cores is far
    # slower than either alone; the CLI subprocesses the tests start inherit the setting.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _offline_and_isolated(tmp_path_factory):
    """Tests never reach a hub, and keep their caches out of the user's home."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["SHOWDOWN_CACHE"] = str(tmp_path_factory.mktemp("showdown-cache"))
    os.environ["SHOWDOWN_DB"] = str(tmp_path_factory.mktemp("showdown-db") / "showdown.db")
    # An empty hub cache: weights a user's ~/.cache/huggingface holds would change what "no weights" tests see.
    os.environ["HF_HUB_CACHE"] = str(tmp_path_factory.mktemp("hf-hub-cache"))
    os.environ.pop("SHOWDOWN_DATA", None)
    os.environ.pop("SHOWDOWN_WEIGHTS", None)
    yield


@pytest.fixture(scope="session")
def demo_dir():
    from showdown.data.sources import demo_path

    return demo_path()


@pytest.fixture
def demo_copy(tmp_path, demo_dir):
    """A writable copy of the demo dataset (3 classes × 12 images, to stay quick)."""
    root = tmp_path / "flowers"
    for cls in ("daisy", "roses", "sunflowers"):
        (root / cls).mkdir(parents=True)
        for path in sorted((demo_dir / cls).iterdir())[:12]:
            shutil.copy(path, root / cls / path.name)
    return root


@pytest.fixture
def leaky_folder(tmp_path, demo_copy):
    """train/ and test/ of daisy and roses from the demo copy, plus one daisy of train copied into test under
    another name: (root, that training file)."""
    root = tmp_path / "leaky"
    for split in ("train", "test"):
        for cls in ("daisy", "roses"):
            (root / split / cls).mkdir(parents=True)
    files = {cls: sorted((demo_copy / cls).iterdir()) for cls in ("daisy", "roses")}
    for cls, paths in files.items():
        for path in paths[:8]:
            shutil.copy(path, root / "train" / cls / path.name)
        for path in paths[8:]:
            shutil.copy(path, root / "test" / cls / path.name)
    shutil.copy(files["daisy"][0], root / "test" / "daisy" / "renamed-copy.jpg")  # same bytes, other name
    return root, files["daisy"][0]


def assert_saved_model_predicts_recorded(folder: Path) -> None:
    """The entry's saved model, run on its test images, predicts what its predictions.csv says (1e-4)."""
    import csv

    import numpy as np

    from showdown.deploy.predict import open_model, predict_files

    with open(folder / "predictions.csv", newline="") as handle:
        recorded = list(csv.DictReader(handle))
    predicted = list(predict_files(open_model(folder), [r["path"] for r in recorded], top_k=1))
    np.testing.assert_allclose([p["top"][0][1] for p in predicted], [float(r["confidence"]) for r in recorded],
                               atol=1e-4)
    assert [p["top"][0][0] for p in predicted] == [r["pred"] for r in recorded]
