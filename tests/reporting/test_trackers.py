"""`--track`: MLflow, TensorBoard and W&B read back with their own clients; a tracker not installed is one line."""
import csv
import importlib.util
import json
import struct
import sys

import pytest

from showdown.cli import main

TWO_ENTRIES = ["run", "--data", "demo", "--models", "efficientnet_lite0", "--repeats", "2", "--epochs", "3",
               "--max-per-class", "4", "--image-size", "160", "--workers", "0", "--no-record"]
INSTALLED = [name for name in ("mlflow", "tensorboard", "wandb") if importlib.util.find_spec(name)]


def _skip_without(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"{name} is not installed (pip install 'tl-showdown[{name}]')")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One two-entry run sent to every tracker installed here: (run folder, MLflow URI)."""
    if not INSTALLED:
        pytest.skip("no tracker installed (extras mlflow, tensorboard, wandb)")
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "tracked", "WANDB_MODE": "offline"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        if "mlflow" in INSTALLED:  # artifacts under the test's folder, not the working directory's mlruns/
            from mlflow.tracking import MlflowClient

            MlflowClient(uri).create_experiment("tracked", artifact_location=(root / "artifacts").as_uri())
        assert main([*TWO_ENTRIES, "--out", str(root / "run"), "--track", ",".join(INSTALLED)]) == 0
    return root / "run", uri


def _history(run_dir, entry: str) -> list[dict]:
    with open(run_dir / entry / "history.csv") as f:
        return list(csv.DictReader(f))


ENTRIES = ("efficientnet_lite0-head-seed0", "efficientnet_lite0-head-seed1")


def test_mlflow_holds_one_parent_and_a_child_per_entry(tracked):
    _skip_without("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir, uri = tracked
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == run_dir.name
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert sorted(children) == sorted(ENTRIES)
    for name, child in children.items():
        metrics = json.loads((run_dir / name / "metrics.json").read_text())
        assert child.data.metrics["test_accuracy"] == metrics["accuracy"]
        curve = client.get_metric_history(child.info.run_id, "val_acc")
        assert [m.value for m in sorted(curve, key=lambda m: m.step)] == pytest.approx(
            [float(row["val_acc"]) for row in _history(run_dir, name)]) and len(curve) == 3
        assert child.data.params["strategy"] == "head" and child.data.params["epochs"] == "3"
        assert {"confusion.png", "model.safetensors", "metrics.json"} <= {a.path for a in
                                                                        client.list_artifacts(child.info.run_id)}
    assert "report.html" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}


def test_tensorboard_event_files_hold_the_curves(tracked):
    _skip_without("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked
    for name in ENTRIES:
        events = EventAccumulator(str(run_dir / "tensorboard" / name))
        events.Reload()
        for key in ("val_acc", "train_loss"):
            assert [e.value for e in events.Scalars(key)] == pytest.approx(
                [float(row[key]) for row in _history(run_dir, name)], rel=1e-6)
        metrics = json.loads((run_dir / name / "metrics.json").read_text())
        assert events.Scalars("final/test_accuracy")[0].value == pytest.approx(metrics["accuracy"])
        assert events.Tags()["images"] == ["confusion_matrix"]


def test_wandb_offline_run_holds_the_history(tracked):
    _skip_without("wandb")
    from wandb.proto import wandb_internal_pb2

    run_dir, _ = tracked
    logs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 3  # one per entry, and the run's report
    curves = {}  # by the run's name: file names order runs only to the second, so two can tie
    for log in logs:
        name, steps = None, []
        for data in _leveldb_records(log.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name = record.run.display_name
            elif kind == "history":
                steps.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                              for item in record.history.item})
        curves[name] = [step["val_acc"] for step in steps if "val_acc" in step]
    for name in ENTRIES:
        assert curves[name] == pytest.approx([float(row["val_acc"]) for row in _history(run_dir, name)])


def _leveldb_records(data: bytes):
    """The records of W&B's transaction log (LevelDB's log format: 32 KiB blocks of 7-byte-headed chunks)."""
    position, block, parts = 7, 32768, b""  # a 7-byte file header (":W&B", magic, version)
    while position + 7 <= len(data):
        if block - position % block < 7:  # the tail of a block too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        parts += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            yield parts
            parts = b""
        elif kind == 0:
            break


def test_a_tracker_not_installed_is_one_line_and_the_run_completes(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if MLflow were not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    assert main([*TWO_ENTRIES, "--repeats", "1", "--no-report", "--out", str(tmp_path / "run"),
                 "--track", "mlflow"]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if "mlflow" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: --track mlflow:"), lines
    assert "tl-showdown[mlflow]" in lines[0] and "test acc" in out
    assert (tmp_path / "run" / "efficientnet_lite0-head" / "metrics.json").is_file()


def test_a_tracker_that_cannot_open_says_why_and_suggests_installing_only_when_it_is_missing(monkeypatch):
    from showdown.reporting import trackers

    class Missing:
        def __init__(self):
            raise ImportError("No module named 'mlflow'")

    class Refusing:
        def __init__(self):
            raise RuntimeError("The filesystem tracking backend is in maintenance mode")

    said = []
    monkeypatch.setitem(trackers.TRACKERS, "mlflow", (Missing, "mlflow"))
    monkeypatch.setitem(trackers.TRACKERS, "wandb", (Refusing, "wandb"))
    assert trackers.open_trackers(["mlflow", "wandb"], said.append) == []
    assert "pip install 'tl-showdown[mlflow]'" in said[0] and "maintenance mode" in said[1]
    assert "pip install" not in said[1]  # installed: the store is the trouble, not the package


def test_mlflow_records_the_values_a_search_chose(tmp_path):
    """With --tune, the entry trains with the search's values: its MLflow run holds them (tuned.<name>, and with
    --folds tuned.fold2.<name> for each fold's search) beside the values it was given, which stay as they were set."""
    _skip_without("mlflow")
    from mlflow.tracking import MlflowClient

    from showdown.config.run_config import RunConfig
    from showdown.reporting.progress import Reporter
    from showdown.reporting.trackers import MLflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "tuned")
        MlflowClient(uri).create_experiment("tuned", artifact_location=(tmp_path / "artifacts").as_uri())
        reporter = Reporter(silent=True)
        reporter.trackers = [MLflowTracker()]
        reporter.start_run(RunConfig(), tmp_path, 1)
        reporter.start_entry("efficientnet_lite0/head", {"lr": 0.001, "head_hidden": []}, tmp_path / "entry")
        reporter.tuned({"lr": 0.0044, "head_hidden": [1024]})
        reporter.fold(2, 3)
        reporter.tuned({"lr": 0.02})  # another fold's search: its own names, not a second value for one
    client = MlflowClient(uri)
    (child,) = [r for r in client.search_runs([client.get_experiment_by_name("tuned").experiment_id])
                if "mlflow.parentRunId" in r.data.tags]
    params = child.data.params
    assert params["lr"] == "0.001" and params["tuned.lr"] == "0.0044" and params["tuned.head_hidden"] == "1024"
    assert params["tuned.fold2.lr"] == "0.02" and reporter.trackers  # no tracker dropped on the way
