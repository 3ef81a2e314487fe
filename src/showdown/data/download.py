"""Fetch a named dataset with the standard loaders when no local copy exists and the network works."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError

TF_FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"


def download_named(name: str, root: Path) -> Path:
    where = f"put the dataset under {root} (as {root / name}/<class>/*.jpg or an archive of it), " \
            "or point --data-root / SHOWDOWN_DATA at its folder"
    try:
        if name == "tf_flowers":
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(TF_FLOWERS_URL, str(root))
            return root / "flower_photos"
        return _cifar_to_folders(name, root)
    except OSError as exc:
        raise DataError(f"{name} is not under {root} and could not be downloaded ({type(exc).__name__}); {where}") from exc


def _cifar_to_folders(name: str, root: Path) -> Path:
    """torchvision's CIFAR loader gives pickled arrays; write them once as a train/test ImageFolder tree."""
    from torchvision import datasets

    loader = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    target = root / name
    partial = root / f".{name}.partial"
    for split, train in (("train", True), ("test", False)):
        dataset = loader(str(root / f"{name}-download"), train=train, download=True)
        for i, (image, label) in enumerate(dataset):
            folder = partial / split / dataset.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{i:05d}.png")
    partial.rename(target)
    return target
