"""fileio.path_order sorts paths as pathlib's `<` does, on POSIX and on Windows, so splits and cache keys stay."""
import random
from pathlib import PurePosixPath, PureWindowsPath

import pytest

from showdown.fileio import path_order

NAMES = ["a/b", "a-b", "a/b-c", "a b", "A", "a.b/c", "a/.b", "B/a", "b/A", "Zebra", "zebra/x", "é/a", "e/a", "a/b/c"]


@pytest.mark.parametrize("flavour", [PurePosixPath, PureWindowsPath])
def test_path_order_is_pathlibs(flavour):
    paths = [flavour("/data") / name for name in NAMES]
    for seed in range(5):
        random.Random(seed).shuffle(paths)
        assert sorted(paths, key=path_order) == sorted(paths)
