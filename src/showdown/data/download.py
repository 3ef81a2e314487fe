"""Fetch a named dataset with the standard loaders when no local copy exists and the network works; the official
form they leave in the data root is what `sources` reads."""
from __future__ import annotations

from pathlib import Path

from showdown.errors import DataError

TF_FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"


def download_named(name: str, root: Path, also_looked_in: Path | None = None) -> Path:
    official = {"cifar10": "cifar-10-batches-py/", "cifar100": "cifar-100-python/", "tf_flowers": "flower_photos/"}
    where = f"put the dataset under {root} (as {root / name}/<class>/*.jpg, the official {official[name]}, or an " \
            f"archive of either), or point --data-root / SHOWDOWN_DATA at its folder" + \
            (f"; also looked in {also_looked_in}" if also_looked_in else "")
    try:
        if name == "tf_flowers":
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(TF_FLOWERS_URL, str(root))
            return root / "flower_photos"
        return _download_cifar(name, root)
    except OSError as exc:
        raise DataError(f"{name} is not under {root} and could not be downloaded ({type(exc).__name__}); "
                        f"{where}") from exc


def _download_cifar(name: str, root: Path) -> Path:
    """The official python release, fetched and unpacked into `root` by torchvision (found there next time)."""
    from torchvision import datasets

    loader = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    loader(str(root), train=True, download=True)
    return root / loader.base_folder
