"""A run killed mid-training (kill -9) resumes from its last completed epoch and ends exactly where an
uninterrupted run with the same seed ends."""
import json
import signal
import subprocess
import sys
import time

import torch

from tests.conftest import run_cli

ARGS = ["--models", "efficientnet_lite0", "--strategy", "head,scratch-cnn", "--image-size", "64", "--epochs", "12",
        "--patience", "20", "--workers", "0", "--max-per-class", "20"]  # 100 of the demo's 250 photos: quicker epochs


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "showdown.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _completed_epochs(checkpoint):
    try:
        return torch.load(checkpoint, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path, demo_dir):
    data = ["--data", str(demo_dir)]
    killed = tmp_path / "killed"
    process = _start("run", *data, *ARGS, "--out", str(killed))
    checkpoint = killed / "scratch_cnn-scratch-cnn" / "checkpoint-scratch-cnn.pt"
    deadline = time.time() + 300
    while _completed_epochs(checkpoint) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read()[-500:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = _completed_epochs(checkpoint)
    assert 3 <= interrupted_at < 12
    assert (killed / "efficientnet_lite0-head" / "metrics.json").is_file()
    assert not (killed / "scratch_cnn-scratch-cnn" / "metrics.json").exists()
    head_before = (killed / "efficientnet_lite0-head" / "metrics.json").read_bytes()

    resumed = run_cli("run", "--resume", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "efficientnet_lite0 head: finished earlier, kept" in resumed.stdout
    assert (killed / "efficientnet_lite0-head" / "metrics.json").read_bytes() == head_before
    assert not checkpoint.exists()  # the finished entry's results replace its checkpoint

    fresh = tmp_path / "fresh"
    uninterrupted = run_cli("run", *data, *ARGS, "--out", fresh)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    a = json.loads((killed / "scratch_cnn-scratch-cnn" / "metrics.json").read_text())
    b = json.loads((fresh / "scratch_cnn-scratch-cnn" / "metrics.json").read_text())
    assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
    assert abs(a["loss"] - b["loss"]) < 1e-6
    history = (killed / "scratch_cnn-scratch-cnn" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 12  # every epoch once: the ones before the kill and the ones after
    rows = json.loads((killed / "summary.json").read_text())["rows"]
    entries = {(r["model"], r["strategy"]) for r in rows}
    assert entries == {("efficientnet_lite0", "head"), ("scratch_cnn", "scratch-cnn")}
