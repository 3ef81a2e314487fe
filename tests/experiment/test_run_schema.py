"""The run folder's format lives in one module (run_schema): its file names, typed rows and model metadata."""
import re
from pathlib import Path

from showdown import run_schema
from showdown.fileio import write_csv
from showdown.run_schema import EntryRow, HistoryRow, ModelInfo, PredictionRow, Timing, read_rows

SRC = Path(__file__).resolve().parents[2] / "src" / "showdown"
OTHER_FILES = {("hf_cache.py", "model.safetensors")}  # the hub's file name, not the run folder's


def test_file_names_are_spelled_only_in_the_schema():
    names = {value for key, value in vars(run_schema).items() if key.isupper() and isinstance(value, str)
             and re.fullmatch(r"[a-z_]+\.(json|csv|md|html|yaml|safetensors|npy|txt|db)", value)}
    assert {"metrics.json", "predictions.csv", "summary.json", "model.json", "history.csv"} <= names
    spelled = [f"{path.relative_to(SRC)}: {name}" for path in SRC.rglob("*.py") if path.name != "run_schema.py"
               for name in names
               if f'"{name}"' in path.read_text(encoding="utf-8") and (path.name, name) not in OTHER_FILES]
    assert spelled == []


def test_entry_row_keeps_the_declared_order_and_leaves_out_what_an_entry_lacks():
    timing = Timing(feature_seconds=1.5, feature_cache_hit=False, head_seconds=2.0, train_seconds=3.0)
    metrics = {"accuracy": 0.5, "loss": 1.0, "n_test": 4, "macro_precision": 0.5, "macro_recall": 0.5,
               "macro_f1": 0.5, "weighted_precision": 0.5, "weighted_recall": 0.5, "weighted_f1": 0.5}
    row = EntryRow.from_dict({"model": "m", "strategy": "head", "seed": 0, **metrics, **timing.columns(),
                              "params_m": 1.0, "trainable_params": 10, "weights": "file w", "pretrained": True,
                              "future_column": 7})
    out = row.to_dict()
    assert list(out)[:3] == ["model", "strategy", "seed"]
    assert "finetune_seconds" not in out and "folds" not in out  # absent, not null: the CSV keeps its columns
    assert list(out).index("train_seconds") > list(out).index("head_seconds") > list(out).index("weighted_f1")
    assert out["future_column"] == 7 and EntryRow.from_dict(out).to_dict() == out  # a newer column survives
    assert set(EntryRow.TIMING) <= set(EntryRow.__dataclass_fields__)


def test_csv_rows_are_read_with_their_declared_types(tmp_path):
    write_csv(tmp_path / "p.csv", [PredictionRow("a.jpg", "cat", "dog", 0.75, fold=2).to_dict()])
    write_csv(tmp_path / "h.csv", [{"phase": "head", "epoch": 1, "lr": 0.001, "train_loss": 0.5, "train_acc": 0.5,
                                   "val_loss": "", "val_acc": 0.25, "seconds": 0.1, "note": "x"}])
    (prediction,) = read_rows(tmp_path / "p.csv", PredictionRow)
    assert prediction == {"path": "a.jpg", "true": "cat", "pred": "dog", "confidence": 0.75, "fold": 2}
    (epoch,) = read_rows(tmp_path / "h.csv", HistoryRow)
    assert epoch["epoch"] == 1.0 and epoch["lr"] == 0.001 and epoch["val_loss"] is None and epoch["note"] == "x"
    assert read_rows(tmp_path / "absent.csv", HistoryRow) == []


def test_model_info_reads_an_older_sidecar():
    old = {"classes": ["a", "b"], "backbone": "efficientnet_lite0", "timm_kwargs": {"num_classes": 0},
           "preprocessing": {"input_size": [3, 224, 224]}, "strategy": "head",
           "head": {"in_features": 1280, "hidden": [], "dropout": 0.2, "batch_norm": False}}
    info = ModelInfo.from_dict(old)
    assert (info.timm_name, info.pool_stages, info.tta, info.weights_source) == (None, 0, "none", None)
    assert info.head.in_features == 1280 and info.name == "efficientnet_lite0 / head"
    assert ModelInfo.from_dict({**old, "new_key": 1}).to_dict()["new_key"] == 1


def test_a_stopped_run_says_what_it_kept(tmp_path):
    """'finished entries are kept' was said of a run stopped before any entry finished (only a checkpoint, or
    nothing at all); a Ray run's work lies in its shards' folders."""
    run, shard = tmp_path / "run", tmp_path / "ray" / "shards" / "shard-0"
    (run / "lite0-finetune").mkdir(parents=True)
    (shard / "lite0-head").mkdir(parents=True)
    assert run_schema.what_is_kept(run) == f"no entry had finished in {run}"
    (run / "lite0-finetune" / "checkpoint-finetune.pt").write_bytes(b"")
    assert run_schema.what_is_kept(run) == f"no entry had finished; the interrupted one's last epoch is kept in {run}"
    (run / "lite0-head").mkdir()
    (run / "lite0-head" / run_schema.METRICS).write_text("{}")
    assert run_schema.what_is_kept(run) == f"finished entries are kept in {run}"
    assert run_schema.what_is_kept(shard.parent, [shard]) == f"no entry had finished in {shard.parent}"
    (shard / "lite0-head" / run_schema.METRICS).write_text("{}")
    assert run_schema.what_is_kept(shard.parent, [shard]) == f"finished entries are kept in {shard.parent}"
