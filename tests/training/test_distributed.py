"""One showdown over two processes with torchrun (DDP, gloo on the CPU) against the same showdown in one process.

What must hold: one run folder and one database row; every image through the frozen backbone exactly once
across the ranks, into the same cache a single process writes; the head (trained alike on every rank from the
cached features) predicts exactly what a single process predicts; finetune and scratch-cnn (data parallel)
agree within a tolerance; one prediction row per test image; a run killed with kill -9 resumes.
"""
import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import run_cli

STRATEGIES = "head,finetune,scratch-cnn"
ARGS = ["--data", "demo", "--models", "efficientnet_lite0", "--image-size", "64", "--epochs", "3",
        "--precision", "fp32", "--device", "cpu", "--no-report"]
# Data parallel on the CPU differs from one process by floating-point order, by dropout masks drawn per
# process, and by batch norm statistics per process share (scratch-cnn; PyTorch has no SyncBatchNorm on the
# CPU). On the 40 test images of the demo set after 3 epochs that is at most a few images.
ACCURACY_TOLERANCE = 0.15
LOSS_TOLERANCE = 0.15
HANG_SECONDS = 420  # the run takes about 30 s on 2 busy cores


def _torchrun(*args, cwd, **popen):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "showdown", "run", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, **popen)
    process = subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:  # stuck: every rank prints its threads' stacks (SIGUSR1), then all go
        os.killpg(process.pid, signal.SIGUSR1)
        time.sleep(3)
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun still running after {HANG_SECONDS} s; the ranks' stacks:\n{stderr[-12000:]}\n"
                    f"stdout:\n{stdout[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _rows(run_dir) -> dict:
    return {row["strategy"]: row for row in json.loads((run_dir / "summary.json").read_text())["rows"]}


def _predictions(entry_dir) -> list[dict]:
    with (entry_dir / "predictions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """(single-process run folder, its cache, torchrun run folder, its cache, torchrun's database)."""
    base = tmp_path_factory.mktemp("ddp")
    single, single_cache = base / "single", base / "cache-single"
    result = run_cli("run", *ARGS, "--strategy", STRATEGIES, "--out", single, "--cache-dir", single_cache,
                     "--no-record")
    assert result.returncode == 0, result.stderr[-2000:]
    work, cache, db = base / "work", base / "cache-ddp", base / "ddp.db"
    work.mkdir()
    result = _torchrun(*ARGS, "--strategy", STRATEGIES, "--cache-dir", str(cache), "--db", str(db), cwd=work)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 0 alone made the run folder
    assert result.stdout.count("test accuracy") == 3  # each entry printed once, by rank 0
    return single, single_cache, runs[0], cache, db, result.stdout


def test_two_processes_write_one_run_folder_and_one_database_row(two_runs):
    _, _, run_dir, _, db, stdout = two_runs
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from runs").fetchone()[0] == 1
    assert stdout.count("run folder:") == 1 and "2 processes (torchrun)" in stdout
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["processes"] == 2 and environment["device"]["type"] == "cpu"


def test_every_image_is_computed_once_across_ranks_into_the_single_process_cache(two_runs):
    single, single_cache, run_dir, cache, _, _ = two_runs
    passes = json.loads((run_dir / "summary.json").read_text())["frozen_passes"]
    alone = json.loads((single / "summary.json").read_text())["frozen_passes"]
    assert alone["images"] == 2 * 250  # the demo set's train + val + test: head features, finetune boundary
    assert passes["images_per_rank"] == [250, 250] and passes["images"] == alone["images"]
    files = sorted(p.name for p in single_cache.glob("*.safetensors"))
    assert len(files) == 3 and files == sorted(p.name for p in cache.glob("*.safetensors"))  # the same keys
    for name in files:
        ours, reference = load_file(str(cache / name)), load_file(str(single_cache / name))
        assert torch.equal(ours["indices"], reference["indices"]) and torch.equal(ours["labels"], reference["labels"])
        torch.testing.assert_close(ours["features"], reference["features"], atol=1e-5, rtol=0)


def test_head_predictions_equal_a_single_process_and_the_rest_agree_within_tolerance(two_runs):
    single, _, run_dir, _, _, _ = two_runs
    ours, reference = _rows(run_dir), _rows(single)
    head = _predictions(run_dir / ours["head"]["folder"])
    head_alone = _predictions(single / reference["head"]["folder"])
    assert [(r["path"], r["pred"]) for r in head] == [(r["path"], r["pred"]) for r in head_alone]
    assert ours["head"]["accuracy"] == reference["head"]["accuracy"]
    for strategy in ("finetune", "scratch-cnn"):
        assert abs(ours[strategy]["accuracy"] - reference[strategy]["accuracy"]) <= ACCURACY_TOLERANCE, strategy
        assert abs(ours[strategy]["loss"] - reference[strategy]["loss"]) <= LOSS_TOLERANCE, strategy
    for row in ours.values():  # gathered by image index: one row per test image, in split order
        predictions = _predictions(run_dir / row["folder"])
        assert [r["path"] for r in predictions] == [r["path"] for r in _predictions(single / row["folder"])]
        assert len({r["path"] for r in predictions}) == len(predictions) == 40


def _completed_epochs(checkpoint) -> int:
    try:
        return torch.load(checkpoint, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def test_a_two_process_run_killed_with_kill_9_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "run"
    args = [*ARGS, "--strategy", "scratch-cnn", "--epochs", "6", "--patience", "6", "--out", str(run_dir),
            "--no-record", "--workers", "0"]
    process = _torchrun(*args, cwd=tmp_path, start_new_session=True)
    checkpoint = run_dir / "scratch_cnn-scratch-cnn" / "checkpoint-scratch-cnn.pt"
    deadline = time.time() + 300
    while _completed_epochs(checkpoint) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stdout.read()[-2000:]
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers, no chance to clean up
    process.wait()
    interrupted_at = _completed_epochs(checkpoint)
    assert 2 <= interrupted_at < 6  # killed 2 epochs in (within 0.1 s): four more take seconds even on a fast CPU
    assert not (run_dir / "summary.json").exists()

    result = _torchrun("--resume", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming" in result.stdout
    with (run_dir / "scratch_cnn-scratch-cnn" / "history.csv").open(newline="") as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == list(range(1, 7))  # the epochs before the kill kept, the rest trained once
    assert _rows(run_dir)["scratch-cnn"]["n_test"] == 40


def test_every_rank_holds_the_same_trained_model_of_every_entry(tmp_path, demo_dir):
    """The model rank 0 saves is the model every rank evaluated: the same state dict on both ranks for the head
    (dropout), a finetune whose fine-tuning never beats its start (each rank keeps the start), and a data-parallel
    scratch-cnn with batch norm, one image per rank and step and an unreadable training image (the step without
    an image is skipped by both ranks, not by one while the other waits)."""
    data = tmp_path / "data"
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for name in ("daisy", "roses", "tulips"):
            (data / split / name).mkdir(parents=True)
            for photo in sorted((demo_dir / name).iterdir())[:count]:
                shutil.copy(photo, data / split / name / photo.name)
    (data / "train" / "daisy" / "broken.jpg").write_bytes(b"not a JPEG")
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(Path(__file__).with_name("torchrun_ranks.py")), str(out), str(data)]
    result = subprocess.run(command, text=True, capture_output=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    facts = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert facts[0]["world_size"] == 2 and all(f["objects_group_timeout_s"] == 3600 for f in facts)
    for strategy in ("head", "finetune", "scratch-cnn"):
        states = [load_file(str(out / f"rank{rank}-{strategy}.safetensors")) for rank in (0, 1)]
        assert states[0].keys() == states[1].keys()
        differ = [key for key in states[0] if not torch.equal(states[0][key], states[1][key])]
        assert not differ, f"{strategy}: the ranks hold different {differ[:5]}"
        probs = [np.load(out / f"rank{rank}-{strategy}-probs.npy") for rank in (0, 1)]
        assert np.array_equal(*probs) and len(probs[0]) == 6
        histories = [[{k: v for k, v in h.items() if k != "seconds"} for h in f[strategy]] for f in facts]
        assert histories[0] == histories[1]  # the same losses, epoch by epoch
    history = facts[0]["finetune"]
    best_head = min(h["val_loss"] for h in history if h["phase"] == "head")
    assert all(h["val_loss"] > best_head for h in history if h["phase"] == "finetune")  # never beat its start


CALLERS_GROUP = """
import os, sys
import torch, torch.distributed as dist
from showdown import distributed
dist.init_process_group("gloo", init_method=sys.argv[1], rank=int(os.environ["RANK"]), world_size=2)  # Ray Train's
distributed.start(torch.device("cpu"))
assert distributed._objects_group is not None, "no objects' group"
assert distributed.gather(distributed.rank()) == [0, 1]
assert distributed.broadcast(f"from {distributed.rank()}") == "from 0"
distributed.stop()
assert dist.is_initialized(), "stop() ended the caller's process group"
dist.destroy_process_group()
"""


def test_start_makes_its_objects_group_inside_a_process_group_the_caller_made(tmp_path):
    """As in a Ray Train worker: the process group exists before showdown runs; start() must still make the gloo
    group its collectives use, and stop() must leave the caller's group alone."""
    init = f"file://{tmp_path / 'rendezvous'}"
    workers = [subprocess.Popen([sys.executable, "-c", CALLERS_GROUP, init], text=True, stderr=subprocess.PIPE,
                                env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"})
               for rank in (0, 1)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err


def test_a_bad_flag_under_torchrun_is_said_once(tmp_path):
    """Both ranks read the same flags: one line from rank 0, before torchrun's agent stops the other rank (each
    rank said it, or the first to fail got rank 0 stopped before it could)."""
    result = _torchrun("--data", "demo", "--tune", "2", "--quiet", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.count("error: --tune runs in one process; start it without torchrun") == 1, result.stderr
