"""Named datasets in the forms people already have on disk: the official CIFAR pickles (torchvision, Keras), their
.tar.gz, and flower_photos/, in the data root or in Keras's datasets folder, found offline and converted once."""
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from showdown.data import load_dataset
from showdown.data.sources import resolve_data
from showdown.errors import DataError

FINE_NAMES = [f"class{i:03d}" for i in range(100)]  # the official meta file holds 100 fine names


def _batch(rng, labels, label_key, **extra):
    """A batch dict as the official files hold it: uint8 (N, 3072) colour planes, labels as a list of ints."""
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return {"batch_label": "training batch", label_key: list(labels), "data": data,
            "filenames": [f"img_{i}.png" for i in range(len(labels))], **extra}


def _dump(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the release was written by Python 2's cPickle


def write_cifar100(folder, rng, train_per_class=10, test_per_class=1):
    folder.mkdir(parents=True)
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = [c for c in range(100) for _ in range(per_class)]
        _dump(_batch(rng, fine, "fine_labels", coarse_labels=[c // 5 for c in fine]), folder / name)
    _dump({"fine_label_names": FINE_NAMES, "coarse_label_names": [f"super{i}" for i in range(20)]}, folder / "meta")
    return folder


def write_cifar10(folder, rng):
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for i in range(1, 6):
        _dump(_batch(rng, list(range(10)) * 4, "labels"), folder / f"data_batch_{i}")
    _dump(_batch(rng, list(range(10)), "labels"), folder / "test_batch")
    _dump({"label_names": names, "num_cases_per_batch": 20, "num_vis": 3072}, folder / "batches.meta")
    return folder, names


@pytest.fixture
def isolated_keras(tmp_path, monkeypatch):
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("SHOWDOWN_CACHE", str(tmp_path / "cache"))
    return home / "datasets"


def test_cifar100_pickle_folder_in_the_data_root_keeps_the_official_split_and_fine_labels(tmp_path, isolated_keras):
    rng = np.random.default_rng(0)
    folder = write_cifar100(tmp_path / "root" / "cifar-100-python", rng)
    dataset = load_dataset("cifar100", data_root=str(tmp_path / "root"), split=(0.7, 0.15, 0.15), seed=0)
    assert dataset.classes == FINE_NAMES
    counts = dataset.counts()
    # val comes from train only
    assert counts["test"] == 100 and counts["train"] + counts["val"] == 1000 and counts["val"] > 0
    assert dataset.split_source.startswith("given test, train; val carved from train")
    # Pixels: the first test image of class 0 is the first row of the test batch, planes turned into RGB.
    with open(folder / "test", "rb") as f:
        batch = pickle.load(f)
    first = next(path for path, label in dataset.splits["test"] if label == 0)
    expected = batch["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(Image.open(first).convert("RGB")), expected)


def test_the_official_archives_and_the_keras_folder_are_found(tmp_path, isolated_keras):
    rng = np.random.default_rng(1)
    staging = tmp_path / "staging"
    write_cifar100(staging / "cifar-100-python", rng)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-100-python", arcname="cifar-100-python")
    name, tree = resolve_data("cifar100", str(root))
    assert sorted(p.name for p in tree.iterdir() if not p.name.startswith(".")) == ["test", "train"]  # + the manifest
    assert len(list((tree / "train").iterdir())) == 100

    # Keras 3 keeps CIFAR-10 one folder down in ~/.keras/datasets; nothing is in the data root.
    folder, names = write_cifar10(isolated_keras / "cifar-10-batches-py-target_extracted" / "cifar-10-batches-py", rng)
    dataset = load_dataset("cifar10", data_root=str(tmp_path / "empty-root"), split=(0.7, 0.15, 0.15), seed=0)
    assert dataset.classes == sorted(names) and dataset.counts()["test"] == 10
    assert dataset.counts()["train"] + dataset.counts()["val"] == 200

    # TF-Flowers as Keras's get_file leaves it: ~/.keras/datasets/flower_photos/<class>/*.jpg
    from showdown.data.sources import demo_path

    shutil.copytree(demo_path(), isolated_keras / "flower_photos")
    _, flowers = resolve_data("tf_flowers", str(tmp_path / "empty-root"))
    assert flowers == isolated_keras / "flower_photos"


def test_the_conversion_runs_once(tmp_path, isolated_keras):
    write_cifar100(tmp_path / "root" / "cifar-100-python", np.random.default_rng(2))
    _, first = resolve_data("cifar100", str(tmp_path / "root"))
    stamp = os.stat(first / "test" / FINE_NAMES[0] / "0000.png").st_mtime_ns
    _, second = resolve_data("cifar100", str(tmp_path / "root"))
    assert second == first and os.stat(second / "test" / FINE_NAMES[0] / "0000.png").st_mtime_ns == stamp
    name, direct = resolve_data(str(tmp_path / "root" / "cifar-100-python"), None)  # --data path/to/cifar-100-python
    assert (name, direct) == ("cifar-100-python", first)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, isolated_keras):
    folder = write_cifar100(tmp_path / "root" / "cifar-100-python", np.random.default_rng(3))
    _dump({"fine_label_names": _Exploit()}, folder / "meta")
    with pytest.raises(DataError, match="refused"):
        resolve_data("cifar100", str(tmp_path / "root"))


def test_no_local_copy_offline_names_the_official_forms_and_the_keras_folder(tmp_path, isolated_keras, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(DataError, match="cifar-100-python/.*also looked in .*keras-home"):
        resolve_data("cifar100", str(tmp_path / "empty-root"))
