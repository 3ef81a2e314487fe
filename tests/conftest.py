import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from showdown.startup import heavy_imports

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


# The modules that take longest, longest first (`pytest --durations`, seconds of one worker on the 2-core AMD EPYC
# Zen 3, 2026-12-06, after commands whose output is the point moved into the test's process: run_cli below).
# `pytest -n 2 --dist loadscope` hands each module to one worker; handed out in this order, the last one to start
# is short, so neither worker waits minutes at the end for the other (docs/development.md). Every other module
# follows in the order it was collected.
SLOWEST_FIRST = (
    "training/test_distributed.py",  # 130 s: torchrun, two processes, four times
    "models/test_matrix.py",  # 78 s
    "cli/test_daemon.py",  # 70 s
    "models/test_keras.py",  # 63 s: Keras on TensorFlow
    "deploy/test_tflite_export.py",  # 62 s
    "deploy/test_explain.py",  # 62 s
    "reporting/test_report.py",  # 56 s
    "experiment/test_ray.py",  # 55 s: a local Ray cluster
    "test_packaging.py",  # 51 s: builds and installs the wheel
    "experiment/test_fair.py",  # 45 s
    "training/test_mac.py",  # 17-37 s: spawned loader processes
    "frozen/test_speed_paths.py",  # 33 s
    "experiment/test_shards.py",  # 32 s
    "deploy/test_use.py",  # 30 s
    "experiment/test_resume.py",  # 28 s
)


def pytest_configure(config):
    given = (*config.invocation_params.args, *config.getini("addopts"), os.environ.get("PYTEST_ADDOPTS", ""))
    asked = any("--loadscope-reorder" in words for words in given)
    if hasattr(config.option, "loadscopereorder") and not asked:  # xdist's order (most tests first) would undo ours
        config.option.loadscopereorder = False
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # xdist's controller runs no test: it imports no torch
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `pytest -n 2`: one core per worker. Two workers each spinning two OpenMP threads on two cores is far
        # slower than either alone; the CLI subprocesses the tests start inherit the setting.
        os.environ["OMP_NUM_THREADS"] = "1"
    # What the test modules import, imported as `showdown` imports it (showdown/startup.py): timm without
    # Weights & Biases, and the imported objects frozen out of the garbage collector's way for the session.
    with heavy_imports():
        import torch

        import showdown.experiment.runner  # noqa: F401
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    tests = Path(__file__).parent

    def rank(item) -> int:
        module = item.path.relative_to(tests).as_posix() if item.path.is_relative_to(tests) else None
        return SLOWEST_FIRST.index(module) if module in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: within a module, and among the rest, the collected order stays


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


# A new process's warning filters (Python's defaults; pytest puts its own first and records what they let through).
PROCESS_WARNING_FILTERS = [("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                           ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                           ("ignore", ResourceWarning, "")]


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """`showdown ARGS` run in this process, as the console script runs it (showdown.cli.main), with its output
    and its exit status (argparse's too) captured as a finished subprocess's. A new process pays about 5 s of
    imports on these 2 cores; tests of what a command prints and returns use this, and tests of the process
    itself (what its imports print, signals, kills, environment, CUDA settings) start one. Warnings go to the
    command's stderr as in its own process, under a fresh process's filters."""
    from showdown.cli import main

    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True)
                for _ in range(2))
    root = logging.getLogger()
    handlers, level, folder = root.handlers[:], root.level, os.getcwd()
    root.handlers.clear()  # main's logging.basicConfig then writes to this command's stderr, as in its own process
    try:
        os.chdir(cwd or folder)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()  # and each shown once per command, as in a new process
            for action, category, module in reversed(PROCESS_WARNING_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as exc:  # argparse refusing a flag, or sys.exit(message)
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
                if isinstance(exc.code, str):
                    print(exc.code, file=err)
            finally:
                for w in caught:
                    err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    except BaseException:  # a traceback main let through, or Ctrl-C: what the command printed comes with it
        sys.stderr.write(err.buffer.getvalue().decode())
        raise
    finally:
        os.chdir(folder)
        root.handlers[:] = handlers
        root.setLevel(level)
    if code == 130:  # Ctrl-C, which main turned into its exit status: the test session stops, as it would have
        raise KeyboardInterrupt
    return subprocess.CompletedProcess(["showdown", *args], code, *(s.buffer.getvalue().decode() for s in (out, err)))


# A full disk: a tmpfs of a few megabytes, mounted by the test (root only).
def mount_tmpfs(mount: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    mount_tmpfs(mount, "3m")

    def resize(megabytes: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={megabytes}m", str(mount)], check=True)
    yield mount, resize
    subprocess.run(["umount", "-l", str(mount)], check=False)
