"""Data: names, folders and archives become a DatasetSpec (files, labels, splits, fingerprint)."""
from __future__ import annotations

from showdown.data.folder import DatasetSpec, build_spec
from showdown.data.sources import resolve_data


def load_dataset(data: str, *, data_root: str | None = None,
                 split: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0) -> DatasetSpec:
    name, root = resolve_data(data, data_root)
    # Absolute: the cache keys hold the files' paths, and `../photos` from one folder is `photos` from another.
    return build_spec(name, root.resolve(), split, seed)


__all__ = ["DatasetSpec", "load_dataset"]
