"""One showdown over several processes: `--shard i/N`, `showdown merge`, and a database that takes concurrent writers.

The same demo showdown (four backbones: three EfficientNet-Lites with packaged weights and a randomly initialised
MobileNetV3; head and scratch-cnn) runs once in one process and once as `--shard 0/2` and `--shard 1/2` in two
processes at the same time; the merge must give the single run's entries, each once, with the same head
predictions, while each backbone's frozen pass ran in one shard only.
"""
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
import yaml

from showdown import RunConfig, run
from showdown.errors import ConfigError
from showdown.experiment.runner import resume_run
from showdown.experiment.shards import assign
from showdown.reporting.database import list_runs

MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv3_small_050"]
COMMON = dict(data="demo", models=MODELS, strategies=["head", "scratch-cnn"], image_size=64, epochs=1, workers="0",
              precision="fp32", report=False, record=False, gradcam=0, allow_random_init=True)
FLAGS = ["--data", "demo", "--models", ",".join(MODELS), "--strategy", "head,scratch-cnn", "--image-size", "64",
         "--epochs", "1", "--workers", "0", "--precision", "fp32", "--no-report", "--no-record", "--gradcam", "0",
         "--allow-random-init"]


def _run(out, **values):
    # each run its own feature cache: its frozen passes count what it computed itself
    return run(RunConfig(out=str(out), cache_dir=str(out.parent / f"cache-{out.name}"), **{**COMMON, **values}),
               echo=lambda *_: None).run_dir


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The single run in this process while the two shards run as two processes beside it."""
    root = tmp_path_factory.mktemp("shards")
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # this process's arithmetic
    shards = [subprocess.Popen([sys.executable, "-m", "showdown", "run", *FLAGS, "--shard", f"{i}/2", "--out",
                                str(root / f"shard-{i}"), "--cache-dir", str(root / f"cache-shard-{i}")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in (0, 1)]
    single = _run(root / "single")
    for shard in shards:
        output, _ = shard.communicate(timeout=600)
        assert shard.returncode == 0, output
    return {"single": single, "0": root / "shard-0", "1": root / "shard-1", "root": root}


def _predictions(entry) -> list[list[str]]:
    with open(entry / "predictions.csv", newline="") as handle:
        return list(csv.reader(handle))[1:]


def _merge(*args, db):
    from showdown.cli import main

    return main(["merge", *map(str, args), "--db", str(db)])


def test_shards_split_the_grid_by_backbone_and_run_the_small_cnn_once(runs):
    single = [row["folder"] for row in _summary(runs["single"])["rows"]]
    shards = [[row["folder"] for row in _summary(runs[i])["rows"]] for i in "01"]
    assert sorted(shards[0] + shards[1]) == sorted(single)  # every entry in exactly one shard
    assert sum("scratch_cnn-scratch-cnn" in folders for folders in shards) == 1
    # each backbone's features (train, val, test) computed in one shard and nowhere else
    heads = [{row["model"] for row in _summary(runs[i])["rows"] if row["strategy"] == "head"} for i in "01"]
    assert not heads[0] & heads[1] and heads[0] | heads[1] == set(MODELS)
    for i, mine in zip("01", heads):
        assert _summary(runs[i])["frozen_passes"]["miss"] == 3 * len(mine)
    assert _summary(runs["single"])["frozen_passes"]["miss"] == 3 * len(MODELS)
    assert "shard: 1/2" in (runs["1"] / "config.yaml").read_text()
    # the two processes ran at once: each started before the other finished
    started = [(runs[i] / "config.yaml").stat().st_mtime for i in "01"]
    ended = [(runs[i] / "summary.json").stat().st_mtime for i in "01"]
    assert started[0] < ended[1] and started[1] < ended[0]
    assert [set(s) for s in assign(MODELS, 2, 64)] == heads  # costliest first, into the lighter shard
    assert assign(MODELS[:2], 2, 64) == [["efficientnet_lite1"], ["efficientnet_lite0"]]  # the larger one first
    assert sorted(sum(assign([*MODELS, "resnet50", "mobilenet_v2"], 3), [])) == sorted(
        [*MODELS, "resnet50", "mobilenet_v2"])


def test_merge_gives_the_single_process_run(runs, tmp_path, capsys, monkeypatch):
    """...and joins a shard written before --unfreeze could be left unset (its config.yaml says the default's
    blocks:2, which both trained); the merged config.yaml's paths are absolute, --out given relative too."""
    db, out = tmp_path / "results.db", tmp_path / "merged"
    older = shutil.copytree(runs["1"], tmp_path / "older")
    (older / "config.yaml").write_text((older / "config.yaml").read_text().replace("unfreeze: null",
                                                                                  "unfreeze: blocks:2"))
    monkeypatch.chdir(tmp_path)
    assert _merge(older, runs["0"], "--out", "merged", db=db) == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed and all(model in printed for model in MODELS)  # the leaderboard, as a run ends
    rows = _summary(out)["rows"]
    single = _summary(runs["single"])["rows"]
    assert [row["folder"] for row in rows] == [row["folder"] for row in single]  # every entry once, in run order
    for row in single:
        if row["strategy"] == "head":  # head training on cached features is deterministic
            merged, alone = (_predictions(run / row["folder"]) for run in (out, runs["single"]))
            assert [r[:3] for r in merged] == [r[:3] for r in alone], row["folder"]  # path, true, predicted
            # The features come from two processes' engines: the same to float rounding (seen: 1e-9 apart on an
            # AVX2-only CPU under load), not always to the bit.
            assert max(abs(float(a[3]) - float(b[3])) for a, b in zip(merged, alone)) < 1e-6, row["folder"]
    report = (out / "report.md").read_text()
    assert "McNemar" in report and all(f"{name} / head" in report for name in MODELS)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["shard"] is None and config["models"] == MODELS  # one process's configuration
    assert config["out"] == str(out)
    # what the merge did for the whole run, not the shards' --no-report --no-record
    assert config["report"] is True and config["record"] is True and config["db"] == str(db)
    assert len(list_runs(db)) == 1
    first = (out / "summary.json").read_bytes()
    assert _merge(runs["0"], runs["1"], "--out", out, db=db) == 0  # again: the same run, still one row
    assert (out / "summary.json").read_bytes() == first and len(list_runs(db)) == 1
    # --resume of the merged folder is the whole run's: every entry kept, its report written again, one row
    (out / "report.md").unlink()
    lines = []
    resumed = resume_run(out, echo=lines.append)
    assert [row["folder"] for row in resumed.rows] == [row["folder"] for row in single]
    assert sum("finished earlier, kept" in line for line in lines) == len(single), lines
    assert (out / "report.md").is_file() and len(list_runs(db)) == 1


def _refused(capsys, *args, db):
    assert _merge(*args, db=db) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_merge_refuses_other_seeds_other_data_and_duplicates(runs, tmp_path, capsys):
    db, out = tmp_path / "results.db", tmp_path / "merged"
    seeded = _run(tmp_path / "seed1", models=MODELS[:2], strategies=["head"], seed=1, shard="1/2")
    capsys.readouterr()  # its progress lines
    assert "seed (0 vs 1)" in _refused(capsys, runs["0"], seeded, "--out", out, db=db)
    other_data = shutil.copytree(runs["1"], tmp_path / "other-data")
    dataset = json.loads((other_data / "dataset.json").read_text())
    (other_data / "dataset.json").write_text(json.dumps({**dataset, "fingerprint": "0123456789abcdef"}))
    assert "data fingerprint" in _refused(capsys, runs["0"], other_data, "--out", out, db=db)
    copy = shutil.copytree(runs["1"], tmp_path / "copy")
    assert "entry efficientnet_lite0-head is in both" in _refused(capsys, runs["1"], copy, "--out", out, db=db)
    assert "shard(s) 1/2 missing: merge needs every shard" in _refused(capsys, runs["0"], "--out", out, db=db)
    unsharded = shutil.copytree(runs["1"], tmp_path / "unsharded")  # as if run without --shard
    (unsharded / "config.yaml").write_text((unsharded / "config.yaml").read_text().replace("shard: 1/2", "shard: null"))
    assert "different --shard splits (0/2, unsharded)" in _refused(capsys, runs["0"], unsharded, "--out", out, db=db)
    damaged = shutil.copytree(runs["1"], tmp_path / "damaged")
    entry = next(p for p in damaged.iterdir() if (p / "metrics.json").is_file())
    (entry / "predictions.csv").unlink()
    assert f"{entry / 'predictions.csv'} is missing" in _refused(capsys, runs["0"], damaged, "--out", out, db=db)
    (entry / "metrics.json").write_text('{"model": "x", "acc')
    assert f"{entry / 'metrics.json'} is damaged" in _refused(capsys, runs["0"], damaged, "--out", out, db=db)
    # shard 1/2 of another --models list (here its order): its share is another part of the grid
    reordered = shutil.copytree(runs["1"], tmp_path / "reordered")
    config = (reordered / "config.yaml").read_text()
    (reordered / "config.yaml").write_text(config.replace(f"- {MODELS[0]}\n- {MODELS[1]}\n",
                                                          f"- {MODELS[1]}\n- {MODELS[0]}\n"))
    assert "differ in models (the shards of one run split one --models list" in \
        _refused(capsys, runs["0"], reordered, "--out", out, db=db)
    unfinished = shutil.copytree(runs["1"], tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()  # a shard killed before its end
    assert f"is an unfinished run (no summary.json yet): `showdown run --resume {unfinished}`" in \
        _refused(capsys, runs["0"], unfinished, "--out", out, db=db)
    assert not out.exists() and not db.exists()  # nothing written


def test_shard_option_is_checked():
    with pytest.raises(ConfigError, match="--shard must be I/N"):
        RunConfig(models=MODELS, shard="2/2").validate()
    with pytest.raises(ConfigError, match="5 shards for 4 backbones"):
        RunConfig(models=MODELS, shard="0/5").validate()


WRITER = """
import sys, time
from pathlib import Path
from showdown.reporting.database import record_run
start = Path(sys.argv[3])
while not start.exists():  # both processes begin at the same moment
    time.sleep(0.01)
for _ in range(5):  # re-recording a folder replaces its rows: five write transactions, still one row
    record_run(sys.argv[1], sys.argv[2])
"""


def test_two_processes_record_at_once(runs, tmp_path):
    db, start = tmp_path / "shared.db", tmp_path / "go"
    folders = [shutil.copytree(runs[i], tmp_path / f"run-{i}") for i in "01"]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(db), str(start)],
                                stderr=subprocess.PIPE, text=True) for folder in folders]
    time.sleep(1)  # both started and waiting
    start.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    assert sorted(row["run_dir"] for row in list_runs(db)) == sorted(str(f.resolve()) for f in folders)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_merge_onto_a_full_or_read_only_disk_is_one_line_naming_the_folder(runs, tmp_path, small_disk, capsys):
    mount, resize = small_disk
    out = mount / "merged"
    resize(1)  # smaller than the merged folder
    code = _merge(runs["0"], runs["1"], "--out", out, "--no-report", db=tmp_path / "results.db")
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: no space left on the device") and str(out) in err and ".merging" not in err, err
    assert "free some space" in err and not list(mount.iterdir())  # no half-written folder left behind
    subprocess.run(["mount", "-o", "remount,ro,size=3m", str(mount)], check=True)
    code = _merge(runs["0"], runs["1"], "--out", out, "--no-report", db=tmp_path / "results.db")
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "read-only file system" in err, err
    assert str(out) in err and ".merging" not in err and "make it writable" in err, err
