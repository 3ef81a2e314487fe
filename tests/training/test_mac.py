"""A Mac without a Mac: what macOS does differently from Linux, done on Linux. macOS has no os.sched_getaffinity,
starts DataLoader workers with `spawn` (everything a worker gets is pickled), and Apple's MPS has no float64."""
import json
import pickle
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.data import load_dataset
from showdown.data.folder import subset_per_class
from showdown.data.images import ImageFiles
from showdown.data.thumbnails import Uint8Tensor
from showdown.experiment.context import Entry, RunContext
from showdown.experiment.entry import build_model
from showdown.experiment.phases import train
from showdown.frozen.frozen_pass import FrozenPass
from showdown.models.backbones import load_backbone

# What the macOS run is given before the command starts: no sched_getaffinity, and the spawn start method.
AS_ON_MACOS = """
    import multiprocessing, os, sys
    del os.sched_getaffinity
    multiprocessing.set_start_method("spawn", force=True)
"""
GRAD_SCALER = str(Path("torch", "amp", "grad_scaler.py"))


def test_workers_auto_without_sched_getaffinity(monkeypatch):
    monkeypatch.delattr("os.sched_getaffinity")
    assert 1 <= RunConfig(workers="auto").worker_count <= 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")  # more processes on the machine than cores: one worker each
    assert RunConfig(workers="auto").worker_count == 1


def test_a_run_with_spawned_workers_and_no_sched_getaffinity(tmp_path):
    """`showdown run --data demo --workers 2` as on macOS: its workers get the dataset and transforms pickled."""
    script = AS_ON_MACOS + f"""
    from showdown.cli import main

    sys.exit(main(["run", "--data", "demo", "--workers", "2", "--models", "efficientnet_lite0", "--strategy", "head",
                   "--image-size", "64", "--epochs", "1", "--no-report", "--no-record", "--out", {str(tmp_path)!r}]))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert [row["strategy"] for row in rows] == ["head"] and rows[0]["n_test"] == 40


def test_small_images_reach_spawned_workers(tmp_path):
    """CIFAR-sized images: the workers only decode (the batched resize runs in the graph). A worker started by
    spawn gets its dataset, transform included, pickled, as this test does (a spawned worker costs seconds of
    imports, and the run above already starts two)."""
    dataset = pickle.loads(pickle.dumps(ImageFiles([(tmp_path / "a.png", 0)], Uint8Tensor(32))))
    Image.new("RGB", (40, 40), (10, 20, 30)).save(tmp_path / "a.png")  # a stray size is resized by Pillow
    image, label, index = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and image[:, 0, 0].tolist() == [10, 20, 30]


class _Float64Watch(TorchDispatchMode):
    """Every float64 tensor an operation returns: (operation, the showdown line that led to it)."""

    def __init__(self):
        super().__init__()
        self.found: set[tuple[str, str]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_leaves(out)):
            stack = traceback.extract_stack()
            # PyTorch's GradScaler takes 1/scale in float64 on every device but MPS, which it checks itself.
            if not any(frame.filename.endswith(GRAD_SCALER) for frame in stack):
                ours = [f"{Path(f.filename).name}:{f.lineno}" for f in stack if "/showdown/" in f.filename]
                self.found.add((str(func), ours[-1] if ours else "?"))
        return out


@pytest.mark.parametrize("strategy", ["head", "finetune", "scratch", "scratch-cnn"])
def test_no_float64_tensor_on_the_training_path(strategy, demo_dir, tmp_path):
    """MPS has no float64: nothing on the training path (data, model, loss, accumulators, optimizer) may make one."""
    strategy = Strategy.parse(strategy)
    dataset = subset_per_class(load_dataset(str(demo_dir), split=(0.6, 0.2, 0.2)), 2)
    config = RunConfig(image_size=64, epochs=1, ft_epochs=1, workers="0", batch_size=4, augment="flip",
                       unfreeze="blocks:1").validate()
    backbone, model = build_model(strategy, load_backbone("efficientnet_lite0", image_size=64), dataset, config,
                                  torch.device("cpu"))
    # fp16, as on MPS (with the gradient scaler); also no traced graph, which a dispatch mode would disturb
    run = RunContext(FrozenPass("fp16", "torch", cache_dir=tmp_path / "cache"))
    entry = Entry(strategy, backbone, model, dataset, config, run, tmp_path / "entry", checkpoints=False)
    with _Float64Watch() as watch:
        trained = train(entry)
    assert trained.history and not watch.found
