"""A run killed mid-training (kill -9) resumes from its last completed epoch and ends exactly where an
uninterrupted run with the same seed ends."""
import json
import os
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
    # its time counts the epochs before the kill too, as the uninterrupted run's does
    assert a["train_seconds"] >= sum(float(line.rsplit(",", 1)[1]) for line in history[1:])
    rows = json.loads((killed / "summary.json").read_text())["rows"]
    entries = {(r["model"], r["strategy"]) for r in rows}
    assert entries == {("efficientnet_lite0", "head"), ("scratch_cnn", "scratch-cnn")}


def test_resume_from_another_folder_finds_its_files_and_refuses_changed_data(tmp_path, demo_copy):
    """config.yaml keeps the paths typed (`--data photos --db runs.db`) absolute, so `--resume` from any folder
    reads the same data and records into the same database; data changed since the run began is refused in one
    line, as the entries still to run would get another split than the finished ones."""
    import shutil

    started = tmp_path / "started-here"
    started.mkdir()
    shutil.move(demo_copy, started / "photos")
    quick = ["--models", "efficientnet_lite0", "--image-size", "64", "--epochs", "1", "--workers", "0",
             "--label-issues", "off", "--gradcam", "0", "--no-report"]
    first = run_cli("run", "--data", "photos", "--db", "runs.db", "--out", "r", *quick, cwd=started)
    assert first.returncode == 0, first.stderr
    again = run_cli("run", "--resume", started / "r", cwd=tmp_path)  # from elsewhere
    assert again.returncode == 0, again.stderr
    assert f"in {started / 'runs.db'}" in again.stdout and not (tmp_path / "runs.db").exists()
    touched = next((started / "photos" / "roses").iterdir())
    os.utime(touched, (1e9, 1e9))  # a file's time (a copy without -p, an archive extracted again) is not a change
    assert run_cli("run", "--resume", started / "r", cwd=tmp_path).returncode == 0
    shutil.copy(next((started / "photos" / "daisy").iterdir()), started / "photos" / "daisy" / "added.jpg")
    changed = run_cli("run", "--resume", started / "r", cwd=tmp_path)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr, changed.stderr
    assert changed.stderr.startswith(f"error: the data of {started / 'r'} changed since the run began")


def test_resume_in_the_python_api_goes_on_as_the_runs_config_says(tmp_path):
    import pytest

    from showdown import run
    from showdown.errors import ConfigError

    with pytest.raises(ConfigError, match="resume=True goes on with the run in out=DIR as its config.yaml says; lr "
                                          "cannot change it"):
        run(out=str(tmp_path), resume=True, lr=0.01)
    with pytest.raises(ConfigError, match="is not a showdown run folder"):
        run(out=str(tmp_path), resume=True)


def test_a_finished_entry_whose_metrics_are_damaged_runs_again_on_resume(tmp_path, caplog):
    from showdown.experiment.run_folder import finished_row

    entry = tmp_path / "efficientnet_lite0-head"
    entry.mkdir()
    (entry / "model.safetensors").write_bytes(b"weights")
    for damaged in ('{"model": "x", "acc', "[]", "\xff"):
        (entry / "metrics.json").write_text(damaged, encoding="latin-1")
        assert finished_row(entry) is None  # not kept: run again, its files rewritten
    assert "metrics.json is damaged; efficientnet_lite0-head runs again" in caplog.text
    (entry / "metrics.json").write_text('{"model": "efficientnet_lite0", "accuracy": 0.5}')
    assert finished_row(entry) == {"model": "efficientnet_lite0", "accuracy": 0.5, "folder": entry.name}


def test_ctrl_c_in_a_notebook_stops_the_training_loaders_workers(tmp_path, monkeypatch):
    """A KeyboardInterrupt out of showdown.run, its traceback kept as a notebook keeps it: no decoding worker of the
    entry's image batches is left running, and the message says how to go on (and that nothing had finished)."""
    import multiprocessing
    import re

    import pytest

    from showdown import run
    from showdown.errors import Interrupted
    from showdown.training import loop

    moved, to_device = [], loop.to_device

    def third_batch_interrupted(batch, device, **kwargs):
        moved.append(1)
        if len(moved) == 5:  # inputs and targets each: the third batch
            raise KeyboardInterrupt
        return to_device(batch, device, **kwargs)

    monkeypatch.setattr(loop, "to_device", third_batch_interrupted)
    out = tmp_path / "run"
    # the Python API's call to go on, not the command line's (a notebook's user called the API)
    said = f"no entry had finished in {out}; `showdown.run(out='{out}', resume=True)` goes on"  # not "kept"
    with pytest.raises(Interrupted, match=re.escape(said)) as kept:
        run(data="demo", models=["efficientnet_lite0"], strategy=["scratch-cnn"], image_size=64, epochs=2,
            workers=2, batch_size=8, max_per_class=10, out=str(out), record=False, report=False,
            echo=lambda *_: None)
    assert kept.traceback and not multiprocessing.active_children()
    assert kept.value._render_traceback_() == [f"Interrupted: {kept.value}"]  # what IPython shows: one line


def test_sigterm_ends_a_run_as_ctrl_c_does_and_resume_goes_on(tmp_path, demo_dir):
    """`kill`, `timeout` or a SLURM job at its time limit: one line saying where the finished entries are and how
    to go on, the log file ending with it, exit status 143 (128 + SIGTERM); then --resume finishes the run."""
    out, log = tmp_path / "run", tmp_path / "run.log"
    process = _start("run", "--data", str(demo_dir), *ARGS, "--epochs", "500", "--patience", "5", "--out", str(out),
                     "--log-file", str(log))  # the head stops early; the small CNN trains on
    checkpoint = out / "scratch_cnn-scratch-cnn" / "checkpoint-scratch-cnn.pt"
    deadline = time.time() + 300
    while _completed_epochs(checkpoint) < 1 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()[-2000:]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    said = f"terminated (SIGTERM): finished entries are kept in {out}; `showdown run --resume {out}` goes on"
    assert process.returncode == 143 and stderr.strip().splitlines()[-1] == said, stderr[-2000:]
    assert "Traceback" not in stderr and log.read_text().strip().splitlines()[-1].endswith(said)
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 500", "epochs: 2"))  # the rest quickly
    resumed = run_cli("run", "--resume", out)
    assert resumed.returncode == 0 and "efficientnet_lite0 head: finished earlier, kept" in resumed.stdout
