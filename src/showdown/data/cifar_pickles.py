"""CIFAR-10 / CIFAR-100 in the form torchvision and Keras keep them on disk, converted once into an ImageFolder tree.

The official python release (`cifar-10-batches-py/`, `cifar-100-python/`, or the `.tar.gz` they came in) holds
pickled dicts: `data` is a uint8 array (N, 3072) of 32x32 images stored as three colour planes, labels are lists
(`labels` for CIFAR-10; `fine_labels` and `coarse_labels` for CIFAR-100) and the class names sit in a meta file.
The official train/test split and the fine labels are kept; images are written as lossless PNGs numbered in the
official order within their class, into `train/<class>/` and `test/<class>/`.

Unpickling can run code, so only the numpy classes an array needs are allowed; anything else is refused.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from showdown.cache import verified_folder, write_manifest
from showdown.errors import DataError
from showdown.fileio import atomic_dir, fingerprint

# Folder name -> (train files, test file, meta file, label key, class-name key)
LAYOUTS = {
    "cifar-10-batches-py": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta", "labels",
                            "label_names"),
    "cifar-100-python": (["train"], "test", "meta", "fine_labels", "fine_label_names"),
}
_NUMPY_CLASSES = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how a protocol-2 pickle written by Python 3 (torchvision's re-saves) stores bytes
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_CLASSES:
            return super().find_class(module, name)
        raise DataError(f"a CIFAR pickle refers to {module}.{name}, which a CIFAR file never holds; refused")


def load_pickle(path: Path) -> dict:
    """One official batch file as a dict with str keys (the files were written by Python 2)."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"{path} is not a readable CIFAR batch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR batch file (it holds a {type(batch).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def is_cifar_pickles(folder: Path) -> bool:
    return folder.name in LAYOUTS and folder.is_dir()


def cifar_to_folders(folder: Path, cache_dir: Path) -> Path:
    """The ImageFolder tree (train/ and test/) made from an official pickle folder, converting it first if new."""
    train_files, test_file, meta_file, label_key, names_key = LAYOUTS[folder.name]
    files = [folder / name for name in [*train_files, test_file, meta_file]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)} of the official CIFAR release; re-download it")
    target = cache_dir / f"{folder.name}-{fingerprint([f.resolve() for f in files])}"
    if verified_folder(target):
        return target
    names = [str(n) for n in load_pickle(folder / meta_file)[names_key]]
    with atomic_dir(target, f"the images of {folder.name} into the cache folder") as partial:
        for split, batch_files in (("train", train_files), ("test", [test_file])):
            counts = [0] * len(names)
            for name in batch_files:
                batch = load_pickle(folder / name)
                _write_images(batch, label_key, names, partial / split, counts, folder / name)
        write_manifest(partial)
    return target


def _write_images(batch: dict, label_key: str, names: list[str], out: Path, counts: list[int], source: Path) -> None:
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = [int(label) for label in batch[label_key]]
    except (KeyError, ValueError) as exc:
        raise DataError(f"{source} is not a CIFAR batch file (no usable '{label_key}' / 'data': {exc})") from exc
    if len(labels) != len(data) or not all(0 <= label < len(names) for label in labels):
        raise DataError(f"{source}: {len(data)} images but {len(labels)} labels, or a label outside the "
                        f"{len(names)} classes")
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
    for image, label in zip(data, labels):
        Image.fromarray(image).save(out / names[label] / f"{counts[label]:04d}.png")
        counts[label] += 1

