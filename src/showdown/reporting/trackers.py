"""`--track mlflow,tensorboard,wandb`: every entry in the experiment trackers people already use.

Each entry logs its configuration as parameters, its per-epoch curves as metrics (the step counts the entry's
epochs over its phases), its final metrics, and its confusion matrix, history and model as artifacts; the run's
report goes to the run as a whole. MLflow: one parent run, one child per entry. TensorBoard: one event folder per
entry under <run>/tensorboard/. W&B: one run per entry, grouped by the run folder's name (offline without a
login). Each tracker is an optional extra, imported only when asked; one that is not installed is one line and
the run goes on (progress.py also drops one that fails mid-run).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from showdown import run_schema
from showdown.errors import one_line

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
TEST_KEYS = ("accuracy", "loss", "macro_precision", "macro_recall", "macro_f1", "weighted_precision",
             "weighted_recall", "weighted_f1")
ENTRY_ARTIFACTS = (run_schema.METRICS, run_schema.HISTORY, run_schema.CONFUSION_PLOT, run_schema.CURVES_PLOT,
                   run_schema.ENTRY_CONFIG, run_schema.MODEL_INFO, run_schema.MODEL_WEIGHTS)
RUN_ARTIFACTS = (run_schema.REPORT_HTML, run_schema.REPORT_MD, run_schema.SUMMARY_CSV, run_schema.CONFIG,
                 run_schema.ENVIRONMENT, run_schema.DATASET)


def final_metrics(row: dict) -> dict[str, float]:
    """An entry's numbers: the test metrics as test_<name>, timings and sizes as they are."""
    return {(f"test_{key}" if key in TEST_KEYS else key): float(value) for key, value in row.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def params_of(values: dict) -> dict[str, str]:
    """Configuration values as tracker parameters (text; lists comma-joined)."""
    return {key: ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            for key, value in values.items()}


def _existing(folder: Path, names: tuple[str, ...]) -> list[Path]:
    return [folder / name for name in names if (folder / name).is_file()]


class Tracker:
    """The events a Reporter hands on; each tracker implements what it logs."""

    name = ""

    def start_run(self, config, run_dir: Path) -> None: ...

    def start_entry(self, name: str, params: dict, folder: Path) -> None: ...

    def tuned(self, values: dict) -> None: ...

    def epoch(self, row: dict, step: int) -> None: ...

    def end_entry(self, row: dict, folder: Path) -> None: ...

    def finish(self, run_dir: Path) -> None: ...


class MLflowTracker(Tracker):
    """MLflow's client on MLFLOW_TRACKING_URI (a server, a SQLite file, a folder; MLflow's default otherwise),
    experiment $MLFLOW_EXPERIMENT_NAME or tl-showdown."""

    name = "mlflow"

    def __init__(self):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.parent = self.child = None

    def start_run(self, config, run_dir: Path) -> None:
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "tl-showdown")
        found = self.client.get_experiment_by_name(experiment)
        self.experiment = found.experiment_id if found else self.client.create_experiment(experiment)
        self.parent = self.client.create_run(self.experiment, run_name=run_dir.name,
                                             tags={"showdown.run_dir": str(run_dir.resolve())}).info.run_id
        self._params(self.parent, config.to_dict())

    def start_entry(self, name: str, params: dict, folder: Path) -> None:
        self.child = self.client.create_run(self.experiment, run_name=name,
                                            tags={"mlflow.parentRunId": self.parent}).info.run_id
        self._params(self.child, params)

    def tuned(self, values: dict) -> None:  # a parameter is set once: the chosen values beside the given ones
        self._params(self.child, {f"tuned.{key}": value for key, value in values.items()})

    def epoch(self, row: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.child, metrics=[Metric(key, float(row[key]), now, step) for key in CURVES])

    def end_entry(self, row: dict, folder: Path) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.child, metrics=[Metric(k, v, now, 0) for k, v in final_metrics(row).items()])
        for path in _existing(folder, ENTRY_ARTIFACTS):
            self.client.log_artifact(self.child, str(path))
        self.client.set_terminated(self.child)

    def finish(self, run_dir: Path) -> None:
        for path in _existing(run_dir, RUN_ARTIFACTS):
            self.client.log_artifact(self.parent, str(path))
        self.client.set_terminated(self.parent)

    def _params(self, run_id: str, values: dict) -> None:
        from mlflow.entities import Param

        params = [Param(key, value[:6000]) for key, value in params_of(values).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(run_id, params=params[start:start + 100])


class TensorBoardTracker(Tracker):
    """Event files PyTorch's SummaryWriter writes: <run>/tensorboard/<entry>/ (`tensorboard --logdir runs`)."""

    name = "tensorboard"

    def __init__(self):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer_class, self.writer = SummaryWriter, None

    def start_run(self, config, run_dir: Path) -> None:
        self.root = run_dir / "tensorboard"

    def start_entry(self, name: str, params: dict, folder: Path) -> None:
        self.writer = self.writer_class(str(self.root / name))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params_of(params).items()))

    def tuned(self, values: dict) -> None:
        self.writer.add_text("tuned", "\n".join(f"    {k}: {v}" for k, v in params_of(values).items()))

    def epoch(self, row: dict, step: int) -> None:
        for key in CURVES:
            self.writer.add_scalar(key, row[key], step)

    def end_entry(self, row: dict, folder: Path) -> None:
        import numpy as np
        from PIL import Image

        for key, value in final_metrics(row).items():
            self.writer.add_scalar(f"final/{key}", value, 0)
        for image in _existing(folder, ("confusion.png",)):
            with Image.open(image) as picture:
                self.writer.add_image("confusion_matrix", np.asarray(picture.convert("RGB")), 0, dataformats="HWC")
        self.writer.close()

    def finish(self, run_dir: Path) -> None:
        for report in _existing(run_dir, (run_schema.REPORT_MD,)):
            writer = self.writer_class(str(self.root / "_run"))
            writer.add_text("report", report.read_text(encoding="utf-8"))
            writer.close()


class WandbTracker(Tracker):
    """Weights & Biases: online with a login (WANDB_API_KEY or `wandb login`), else offline under
    <run>/wandb/ (`wandb sync` uploads it later); WANDB_MODE decides when set."""

    name = "wandb"

    def __init__(self):
        import wandb

        self.wandb, self.run = wandb, None

    def start_run(self, config, run_dir: Path) -> None:
        self.group, self.dir = run_dir.name, run_dir
        logged_in = os.environ.get("WANDB_API_KEY") or "api.wandb.ai" in _netrc()
        self.mode = os.environ.get("WANDB_MODE") or ("online" if logged_in else "offline")

    def _init(self, name: str, params: dict):
        # silent: W&B's own banner would interleave with the progress lines
        return self.wandb.init(project=os.environ.get("WANDB_PROJECT", "tl-showdown"), group=self.group, name=name,
                               config=params, dir=str(self.dir), mode=self.mode,
                               settings=self.wandb.Settings(silent=True))

    def start_entry(self, name: str, params: dict, folder: Path) -> None:
        self.run = self._init(name, params)

    def tuned(self, values: dict) -> None:
        self.run.config.update(values, allow_val_change=True)

    def epoch(self, row: dict, step: int) -> None:
        self.run.log({key: row[key] for key in CURVES}, step=step)

    def end_entry(self, row: dict, folder: Path) -> None:
        self.run.summary.update(final_metrics(row))
        self._artifact(folder.name, "model", _existing(folder, ENTRY_ARTIFACTS))
        self.run.finish()

    def finish(self, run_dir: Path) -> None:
        files = _existing(run_dir, RUN_ARTIFACTS)
        if files:  # the report belongs to the whole run: one short run of the group holds it
            self.run = self._init("report", {})
            self._artifact("report", "report", files)
            self.run.finish()

    def _artifact(self, name: str, kind: str, files: list[Path]) -> None:
        artifact = self.wandb.Artifact(name=f"{self.group}-{name}".replace("/", "-"), type=kind)
        for path in files:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)


def _netrc() -> str:
    try:
        return (Path.home() / ".netrc").read_text()
    except OSError:
        return ""


TRACKERS: dict[str, tuple[type[Tracker], str]] = {  # name -> (class, the package it needs)
    "mlflow": (MLflowTracker, "mlflow"), "tensorboard": (TensorBoardTracker, "tensorboard"),
    "wandb": (WandbTracker, "wandb")}


def open_trackers(names, echo: Callable[[str], None]) -> list[Tracker]:
    """The trackers asked for that can be imported; each one that cannot is one line, and the run goes on."""
    opened = []
    for name in names:
        cls, package = TRACKERS[name]
        try:
            opened.append(cls())
        except Exception as exc:  # not installed, or broken: tracking is optional, the run is not
            hint = f"; install it with pip install 'tl-showdown[{name}]'" if isinstance(exc, ImportError) else ""
            echo(f"warning: --track {name}: {package} cannot be used ({one_line(exc)}){hint}. The run goes on "
                 "without it")
    return opened
