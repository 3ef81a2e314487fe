"""A fair showdown on the demo data: the same search for every entry (never touching the test images),
cross-validation that tests every image once on one feature extraction, and the CI accuracy gate."""
import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml

from showdown import RunConfig, run
from showdown.data import images as image_module
from showdown.data import load_dataset
from showdown.experiment.folds import all_items
from showdown.experiment.runner import resume_run
from showdown.reporting.fairness import checks, verdict
from showdown.reporting.run_records import load_run


def _rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_tune_beats_a_bad_learning_rate_without_reading_a_test_image(tmp_path, monkeypatch):
    loaded, search_ended = [], []
    real_load = image_module.load_rgb

    def load_rgb(path, *args):  # the real decoder; the test only notes which files were opened, and when
        loaded.append(str(path))
        return real_load(path, *args)

    monkeypatch.setattr(image_module, "load_rgb", load_rgb)

    def echo(line=""):
        if "searched" in line:
            search_ended.append(len(loaded))

    config = RunConfig(models=["efficientnet_lite0"], image_size=64, lr=5.0, tune=20, epochs=5, workers=0,
                       cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "run"), record=False)
    results = run(config, echo=echo)
    entry = results.run_dir / "efficientnet_lite0-head"
    search = json.loads((entry / "metrics.json").read_text())["tuning"]
    assert len(search["trials"]) == 20 and (entry / "search.db").is_file()
    assert search["best_val_loss"] < search["default_val_loss"] and search["chosen"] == "search"
    # The chosen values are the entry's configuration, and its final training reproduces the best trial.
    chosen = yaml.safe_load((entry / "config.yaml").read_text())
    assert chosen["lr"] == search["values"]["lr"] != 5.0 and chosen["tune"] == 0
    final = min(float(row["val_loss"]) for row in _rows(entry / "history.csv"))
    assert final == pytest.approx(search["best_val_loss"], rel=1e-5)

    dataset = load_dataset("demo")
    test_files = {str(path) for path, _ in dataset.splits["test"]}
    seen_files = {str(path) for split in ("train", "val") for path, _ in dataset.splits[split]}
    during_search = set(loaded[:search_ended[0]])
    assert during_search == seen_files  # the search decoded every training and validation image ...
    assert not during_search & test_files  # ... and no test image
    assert set(loaded[search_ended[0]:]) == test_files  # the final evaluation reads them, once the search is over
    assert "Hyper-parameter search" in (results.run_dir / "report.md").read_text()


def test_resume_continues_the_search_where_it_stopped(tmp_path, capsys):
    out = tmp_path / "run"
    run(RunConfig(models=["efficientnet_lite0"], image_size=64, tune=2, epochs=2, workers=0, out=str(out),
                  cache_dir=str(tmp_path / "cache"), record=False, report=False), echo=lambda *_: None)
    progress = capsys.readouterr().err  # trial by trial, with the best so far
    assert "search trial 1/2 done" in progress and "search trial 2/2 done; best validation loss so far" in progress
    entry = out / "efficientnet_lite0-head"
    first = json.loads((entry / "metrics.json").read_text())["tuning"]["trials"]
    # As if killed during its third trial with a budget of four: the entry is unfinished, its study is kept, with
    # the trial the kill cut short (Optuna marks it failed).
    (entry / "metrics.json").unlink()
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{entry / 'search.db'}")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    config = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump({**config, "tune": 4}))
    resume_run(out, echo=lambda *_: None)
    resumed = capsys.readouterr().err
    assert "search trial 3/4 done" in resumed and "search trial 4/4 done" in resumed and "5/4" not in resumed
    trials = json.loads((entry / "metrics.json").read_text())["tuning"]["trials"]
    assert [t["number"] for t in trials] == [0, 1, 3, 4]  # the cut one (2) is not a finished trial
    assert trials[:2] == first  # the trials it had are kept, not repeated
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 4  # the new ones draw new values


def test_folds_test_every_image_once_on_one_feature_extraction(tmp_path, capsys):
    config = RunConfig(models=["efficientnet_lite0", "efficientnet_lite1"], image_size=64, folds=5, repeats=2,
                       epochs=3, workers=0, cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "run"),
                       record=False)
    results = run(config, echo=lambda *_: None)
    progress = capsys.readouterr().err
    assert "[4/4] efficientnet_lite1/head (seed 1)" in progress and "fold 5 of 5" in progress
    assert "efficientnet_lite1/head (seed 1) fold 5/5 [head] epoch 3/3" in progress
    images = {str(path) for path, _ in all_items(load_dataset("demo"))}
    assert len(images) == 250
    # each backbone ran once per image, for all folds
    frozen_passes = json.loads((results.run_dir / "summary.json").read_text())["frozen_passes"]
    assert frozen_passes["images"] == 2 * 250
    assert len(results.rows) == 4  # 2 backbones x 2 seeds, each pooled over its 5 folds
    entry = results.run_dir / "efficientnet_lite0-head-seed0"
    fold_tests = [[row["path"] for row in _rows(entry / f"fold{k}" / "predictions.csv")] for k in range(1, 6)]
    assert sorted(path for fold in fold_tests for path in fold) == sorted(images)  # each image in one test fold
    pooled = _rows(entry / "predictions.csv")
    assert [row["path"] for row in pooled] == sorted(images)
    metrics = json.loads((entry / "metrics.json").read_text())
    assert [f["fold"] for f in metrics["fold_metrics"]] == [1, 2, 3, 4, 5]
    assert metrics["accuracy"] == pytest.approx(sum(r["true"] == r["pred"] for r in pooled) / 250)
    accuracies = [f["accuracy"] for f in metrics["fold_metrics"]]
    assert metrics["fold_accuracy_mean"] == pytest.approx(sum(accuracies) / 5) and metrics["fold_accuracy_std"] > 0
    report = (results.run_dir / "report.md").read_text()
    assert "## Cross-validation" in report and f"{accuracies[0]:.4f}" in report
    assert "same 250 images" in report  # the fairness check: pooled predictions cover the same images
    assert "sign-flip permutation p = " in report  # image by image on the pooled predictions (two seeds: shares)
    assert (results.run_dir / "folds.csv").is_file()
    # Had one entry seen larger images, the fairness check would name it.
    records = [r for r in load_run(results.run_dir) if r.seed == 0]
    records[1].metrics["setup"]["input_size"] = 128
    found = {c.name: c for c in checks(records)}
    assert found["test images"].same and not found["input size"].same
    assert "efficientnet_lite1 / head" in found["input size"].text and verdict(list(found.values())).startswith(
        "Differs in input size")


def test_accuracy_gate_fails_the_run_after_writing_it(tmp_path, capsys, demo_copy):
    from showdown.cli import main

    args = ["run", "--data", str(demo_copy), "--models", "efficientnet_lite0", "--no-pretrained", "--image-size",
            "64", "--epochs", "1", "--workers", "0", "--no-record", "--quiet"]  # stderr: the error alone
    assert main([*args, "--out", str(tmp_path / "low"), "--assert-accuracy-at-least", "0.99"]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: best test accuracy ") and "Traceback" not in stderr
    assert "--assert-accuracy-at-least 0.99" in stderr and len(stderr.strip().splitlines()) == 1
    assert (tmp_path / "low" / "summary.json").is_file() and (tmp_path / "low" / "report.html").is_file()
    assert main([*args, "--out", str(tmp_path / "ok"), "--assert-accuracy-at-least", "0"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--tune", "-1"], "--tune must be 0"),
    (["--tune-minutes", "0"], "--tune-minutes must be positive"),
    (["--folds", "1"], "--folds must be at least 2"),
    (["--folds", "1000"], "--folds 1000 needs at least 1000 images in every class"),
    (["--assert-accuracy-at-least", "2"], "between 0 and 1"),
    (["--tune", "1", "--tune-storage", "postgresql://nohost/db", "--image-size", "64", "--epochs", "1", "--quiet",
      "--no-record"], "--tune-storage postgresql://nohost/db cannot be opened"),
])
def test_bad_fairness_values_are_one_line_errors(tmp_path, capsys, demo_copy, args, message):
    from showdown.cli import main

    assert main(["run", "--data", str(demo_copy), *args, "--out", str(tmp_path / "err")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_two_processes_search_one_study_through_a_journal_file(tmp_path):
    """--tune-storage: two processes with --tune 10 each fill one study with 20 distinct trials, and the last to
    finish trains with the best of all of them."""
    import subprocess
    import sys

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "search.journal"
    command = [sys.executable, "-m", "showdown", "run", "--data", "demo", "--models", "efficientnet_lite0",
               "--strategy", "head", "--image-size", "64", "--epochs", "3", "--workers", "0", "--precision", "fp32",
               "--tune", "10", "--tune-storage", str(journal), "--no-report", "--no-record", "--label-issues", "off",
               "--gradcam", "0"]
    processes = [subprocess.Popen([*command, "--out", str(tmp_path / name)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    records = [json.loads((tmp_path / name / "efficientnet_lite0-head" / "metrics.json").read_text())["tuning"]
               for name in ("a", "b")]
    (name,) = {record["study"] for record in records}  # one study: the same entry, images and seed
    assert name.startswith("efficientnet_lite0-head-")
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 20
    assert len({json.dumps(t.params, sort_keys=True) for t in finished}) == 20  # distinct draws
    last = max(records, key=lambda r: len(r["trials"]))
    assert len(last["trials"]) == 20  # the last to choose saw every trial of both processes
    complete = [t.value for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    assert last["best_val_loss"] == pytest.approx(min(complete))


def _search_of(losses, tmp_path, interrupt_at=None, **options):
    """tune() over an objective that takes a tenth of a second a trial and reports `losses` epoch by epoch (each
    call's, where `losses` is a function of the call's number), the last ending its fit (the epoch count's or, with
    `epochs` above it, early stopping's)."""
    import time

    from showdown.config.strategy import HEAD
    from showdown.experiment.tuning import tune

    calls = []

    def train_trial(config, on_epoch):
        calls.append(config)
        time.sleep(0.1)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        trial_losses = losses(len(calls)) if callable(losses) else losses
        for epoch, loss in enumerate(trial_losses, 1):
            if on_epoch:
                on_epoch(loss, epoch == len(trial_losses))
        return [{"val_loss": loss} for loss in trial_losses]
    config = RunConfig(**{"epochs": len(losses(1) if callable(losses) else losses), **options})
    return tune(config, HEAD, train_trial, tmp_path / "search.db"), calls


def test_a_time_budget_a_ctrl_c_cut_short_is_not_given_again_on_resume(tmp_path):
    """The search's seconds were saved only once it ended: a resumed --tune-minutes search got its whole time
    again (28 s of trials for a budget of 12)."""
    with pytest.raises(KeyboardInterrupt):
        _search_of([1.0, 0.9], tmp_path, interrupt_at=6, tune_minutes=1.0)
    spent = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'search.db'}").user_attrs["seconds"]
    assert spent >= 0.4  # the default's measurement and four trials, kept trial by trial
    (_, record), _ = _search_of([1.0, 0.9], tmp_path, tune_minutes=(spent + 0.5) / 60)
    assert record["seconds"] == pytest.approx(spent + 0.5, abs=0.35)  # what was left of the minute, not a minute


def test_a_trial_at_its_last_epoch_is_not_pruned(tmp_path):
    """Median pruning at the last epoch threw away a trial that had finished (17 of 102 in one search)."""
    # each trial worse than all before it: from the sixth on, the median pruner would stop it at its second epoch
    (_, record), _ = _search_of(lambda call: [1.0 + call, 0.9 + call], tmp_path, tune=8)
    assert record["n_pruned"] == 0 and record["n_complete"] == 8


def test_a_trial_early_stopping_ended_is_not_pruned(tmp_path):
    """A trial whose fit early stopping ended before --epochs was still pruned at that last epoch."""
    (_, record), _ = _search_of(lambda call: [1.0 + call, 0.9 + call], tmp_path, tune=8, epochs=10)
    assert record["n_pruned"] == 0 and record["n_complete"] == 8


def test_a_shared_study_says_whose_trials_it_holds(tmp_path):
    """Two processes sharing --tune-storage: the record said "TPE, seed 0" (the sampler draws from the OS then)
    and "searched 5 trials in 0.1 s", the other process's trials with this one's time."""
    import multiprocessing

    from showdown.experiment.tuning import describe

    journal = str(tmp_path / "search.journal")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    other = multiprocessing.get_context("fork").Process(target=_search_of, args=([1.0, 0.9], tmp_path / "a"),
                                                        kwargs={"tune": 3, "tune_storage": journal})
    other.start()
    other.join(60)
    assert other.exitcode == 0
    (_, record), _ = _search_of([1.0, 0.9], tmp_path / "b", tune=2, tune_storage=journal)
    assert len(record["trials"]) == 5 and record["n_this_process"] == 2
    assert record["budget"]["sampler"] == "TPE, seeded by the OS (a shared study)"
    assert describe(record).startswith("searched 5 trials of a shared study (2 here; 0 pruned) in ")


def test_a_shared_study_is_named_for_its_entry_fold_images_and_seed():
    """--tune-storage named a study after the entry's folder alone: both backbones' 'fold1' shared one study,
    and another split or dataset read trials scored on its own test images."""
    from showdown.experiment.tuning import shared_study_name

    root = Path("/data/photos")
    splits = {"train": [(root / "a.jpg", 0), (root / "b.jpg", 1)], "val": [(root / "c.jpg", 0)],
              "test": [(root / "d.jpg", 1)]}

    def name(entry="efficientnet_lite0-head", seed=0, **changed):
        return shared_study_name(entry, {**splits, **changed}, seed, root)
    assert name().startswith("efficientnet_lite0-head-") and name() == name()
    assert name() != name(seed=1) and name() != name(val=[(root / "d.jpg", 1)])  # another seed, another split
    assert name() != name("mobilenet_v2-head-fold1")
    assert name() == name(test=[])  # the test split is never read by a trial
    elsewhere = Path("/mnt/other/photos")  # another machine, the same data mounted elsewhere: the same study
    assert name() == shared_study_name("efficientnet_lite0-head", {
        split: [(elsewhere / path.relative_to(root), label) for path, label in items]
        for split, items in splits.items()}, 0, elsewhere)


def test_a_time_budget_that_ran_other_numbers_of_trials_is_not_called_the_same_search(tmp_path):
    """--tune-minutes: "Fair on every count, same budget" where one entry ran 0 trials and another 3."""
    results = run(RunConfig(models=["efficientnet_lite0", "efficientnet_lite1"], image_size=64, tune_minutes=0.01,
                            epochs=1, workers=0, out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                            record=False, report=False, label_issues="off", gradcam=0), echo=lambda *_: None)
    records = [r for r in load_run(results.run_dir) if r.strategy == "head"]
    trials = records[0].metrics["tuning"]["trials"] or [{}]  # as many as 0.6 s gave: set to 3 and 0 below
    for record, ran in zip(records, (3, 0)):
        record.metrics["tuning"]["trials"] = (trials * 3)[:ran]
    found = {c.name: c for c in checks(records)}["tuning budget"]
    assert not found.same and "but not the same search: 3 trials: efficientnet_lite0 / head; 0 trials: " in found.text
    records[1].metrics["tuning"]["trials"] = trials[:1]
    found = {c.name: c for c in checks(records)}["tuning budget"]
    assert found.same and found.caveat.startswith("the same minutes of search, not the same number of trials")


def test_a_depth_the_user_chose_is_not_searched():
    """`--strategy finetune --unfreeze all --tune N` searched blocks:1-4 and trained what it found, not all; so did
    `--unfreeze blocks:2`, the default's value given by hand."""
    from showdown.config.strategy import Strategy
    from showdown.experiment.tuning import space_for

    finetune = Strategy.parse("finetune")
    assert "unfreeze" in space_for(finetune) and "unfreeze" not in space_for(finetune, "blocks:2")
    assert "unfreeze" not in space_for(finetune, "all") and "unfreeze" not in space_for(finetune, "layers:20")
    assert "unfreeze" not in space_for(Strategy.parse("finetune=blocks:1"))
