"""Turn `--data` (a dataset name, a folder or an archive) into a local ImageFolder tree."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from showdown.cache import cache_root
from showdown.data.archive import extract_once, is_archive
from showdown.data.cifar_pickles import cifar_to_folders, is_cifar_pickles
from showdown.data.download import download_named
from showdown.data.folder import is_visible
from showdown.errors import DataError

DEMO = "demo"
NAMED = ("tf_flowers", "cifar10", "cifar100")
# Where a named dataset may already sit, first match wins: our ImageFolder trees and archives, then the forms
# torchvision and Keras leave on disk (the official CIFAR pickles, the flower_photos folder and archive).
_LOCAL_NAMES = {
    "tf_flowers": ("tf_flowers", "flower_photos", "tf_flowers.tgz", "flower_photos.tgz", "flower_photos.tar"),
    "cifar10": ("cifar10", "cifar10_jpg", "cifar10-jpg.tar.gz", "cifar10.tar.gz",
                "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("cifar100", "cifar100_jpg", "cifar100-jpg.tar.gz", "cifar100.tar.gz",
                 "cifar-100-python", "cifar-100-python.tar.gz"),
}


def data_root(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("SHOWDOWN_DATA") or cache_root() / "data").expanduser()


def keras_datasets_dir() -> Path:
    """Where keras.datasets and keras.utils.get_file keep downloads."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "datasets"


def demo_path() -> Path:
    return Path(str(resources.files("showdown") / "demo" / "flowers"))


def resolve_data(data: str, root: str | None) -> tuple[str, Path]:
    """(display name, ImageFolder root) for a name, folder or archive."""
    if data == DEMO:
        return "demo-flowers", demo_path()
    if data in NAMED:
        return data, _named(data, data_root(root))
    path = local_data(data)
    if path.is_dir():
        return path.name, (image_folder(path) if is_cifar_pickles(path) else path)
    return path.name.split(".")[0], image_folder(path)


def local_data(data: str) -> Path:
    """The folder or archive `data` (not a name) points at; a one-line DataError where there is none. Cheap, and
    needs no torch: `showdown run` checks it before its imports, so a mistyped path fails in a blink."""
    path = Path(data).expanduser()
    if not path.exists():
        hint = f" (or a name: {', '.join((DEMO, *NAMED))})" if os.sep not in data else ""
        raise DataError(f"dataset path {data} does not exist{hint}")
    if not (path.is_dir() or is_archive(path)):
        raise DataError(f"{data} is neither a folder of class sub-folders nor a .zip/.tar/.tar.gz archive")
    return path


def _named(name: str, root: Path) -> Path:
    # Keras 2 keeps downloads directly in its folder, Keras 3 one folder down (<name>_extracted/<name>).
    keras = keras_datasets_dir()
    places = [root, keras, *(sorted(p for p in keras.iterdir() if p.is_dir()) if keras.is_dir() else [])]
    for place in places:
        for candidate in _LOCAL_NAMES[name]:
            path = place / candidate
            if path.is_dir() or is_archive(path):
                return image_folder(path)
    return image_folder(download_named(name, root, also_looked_in=keras))


def image_folder(path: Path) -> Path:
    """The ImageFolder tree inside a folder or archive, converting the official CIFAR pickles on the way."""
    if is_archive(path):
        path = extract_once(path, cache_root() / "extracted")
        pickles = [p for p in path.iterdir() if is_cifar_pickles(p)]
        if pickles:
            path = pickles[0]
    if is_cifar_pickles(path):
        return cifar_to_folders(path, cache_root() / "extracted")
    return single_top_folder(path)


def single_top_folder(path: Path) -> Path:
    """Step into a lone wrapper folder (archives often hold one: cifar10_jpg/train/...)."""
    entries = [p for p in path.iterdir() if is_visible(p.name)]
    while len(entries) == 1 and entries[0].is_dir() and not _looks_like_class_folder(entries[0]):
        path = entries[0]
        entries = [p for p in path.iterdir() if is_visible(p.name)]
    return path


def _looks_like_class_folder(path: Path) -> bool:
    """A folder that directly holds files is a class (one-class trees are caught later), not a wrapper."""
    return any(p.is_file() for p in path.iterdir())
