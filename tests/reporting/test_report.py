"""The report over real runs, opened in headless Chromium; the results database, killed mid-run."""
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from showdown import RunConfig, run
from showdown.reporting import database as db
from showdown.reporting.report import group_records
from showdown.reporting.run_records import load_run
from tests.conftest import run_cli

MALICIOUS = "<img src=x onerror=alert(1)>"  # a folder name cannot hold '/', so no </script>; this one runs too
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, demo_dir):
    data = tmp_path_factory.mktemp("data") / "flowers"
    for cls in ("daisy", "dandelion", "sunflowers"):
        shutil.copytree(demo_dir / cls, data / (MALICIOUS if cls == "dandelion" else cls))
    out = tmp_path_factory.mktemp("run") / "report"
    config = RunConfig(data=str(data), models=["efficientnet_lite0", "efficientnet_lite1"],
                       strategies=["head", "scratch-cnn"], image_size=64, epochs=2, repeats=2, workers=0,
                       out=str(out))
    return run(config, echo=lambda *_: None)


@pytest.mark.parametrize("damage", ["summary.json:{", "summary.json:{}", "environment.json:[1]", "config.yaml:a: [",
                                    "metrics.json gone", "predictions.csv of other columns",
                                    "predictions.csv of other values"])
def test_a_damaged_run_folder_is_one_line_in_report(report_run, tmp_path, damage):
    """A hand edit, a cut copy: `showdown report` names the folder or the file in one line, exit 2."""
    copy = tmp_path / "run"
    shutil.copytree(report_run.run_dir, copy)
    if damage == "metrics.json gone":
        next(copy.glob("*/metrics.json")).unlink()
    elif damage.startswith("predictions.csv"):
        text = "a,b\n1,2\n" if "columns" in damage else "path,true,pred,confidence\nx.jpg,daisy,daisy,high\n"
        next(copy.glob("*/predictions.csv")).write_text(text)
    else:
        name, text = damage.split(":", 1)
        (copy / name).write_text(text)
    result = run_cli("report", copy)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "is damaged" in result.stderr or "is missing" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_entry_without_its_predictions_has_no_interval_rather_than_nan(report_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(report_run.run_dir, copy)
    for predictions in copy.glob("*/predictions.csv"):
        predictions.unlink()
    result = run_cli("report", copy)
    assert result.returncode == 0, result.stderr
    assert "nan" not in (copy / "report.md").read_text()


def test_run_writes_a_report_and_records_itself(report_run):
    run_dir = report_run.run_dir
    html = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    assert len(report_run.rows) == 6  # (2 models x head + scratch-cnn once) x 2 seeds
    assert "± " in md and "efficientnet_lite0 / head" in md and "## Is the difference real?" in md
    assert "sign-flip permutation p = " in md and "McNemar p" not in md  # two seeds: the test of their shares
    assert "test images are suspected label errors" in md
    # 2 epochs on 64 px images: heads this weak flag their own mistakes, and the report says so instead of ranking
    trusted = "accuracy without suspect labels" in md and "Without them the ranking" in md
    assert trusted != ("so no accuracy without them is shown" in md) or "\n0 of the " in md
    assert MALICIOUS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "http://" not in html.replace("http-equiv", "") and "https://" not in html
    recorded = db.list_runs()
    assert any(r["run_dir"] == str(run_dir.resolve()) and r["entries"] == 6 for r in recorded)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_opens_in_headless_chromium_cleanly(report_run, tmp_path):
    from playwright.sync_api import sync_playwright

    page_file = report_run.run_dir / "report.html"
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        for section in ("leaderboard", "significance", "tradeoffs", "curves", "confusion", "gallery", "reproduce"):
            assert page.locator(f"section#{section} h2").count() == 1, section
        assert page.locator("section#leaderboard tbody tr").count() == 3  # 3 configurations, 2 seeds each
        assert page.locator("section#gallery figure img").count() > 0
        assert MALICIOUS in page.inner_text("body")  # shown as text, never as an element
        assert page.locator("img[src='x']").count() == 0
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == [] and requests == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_runs_cli_lists_shows_and_compares(report_run, tmp_path):
    run_id = next(r["id"] for r in db.list_runs() if r["run_dir"] == str(report_run.run_dir.resolve()))
    listed = run_cli("runs", "list")
    assert listed.returncode == 0 and str(report_run.run_dir.resolve()) in listed.stdout
    assert run_cli("runs").stdout == listed.stdout  # list is the default
    shown = run_cli("runs", "show", run_id)
    assert shown.returncode == 0 and "efficientnet_lite1" in shown.stdout and "seed 1" in shown.stdout
    compared = run_cli("runs", "compare", run_id, "--out", tmp_path / "cmp")
    assert compared.returncode == 0, compared.stderr
    summary = (tmp_path / "cmp" / "report.md").read_text()
    assert f"runs {run_id} compared" in summary and "efficientnet_lite1 / head" in summary
    assert (tmp_path / "cmp" / "report.html").is_file()
    kept = run_cli("runs", "compare", run_id, "--out", report_run.run_dir)  # a run's folder: never written over
    assert kept.returncode == 2 and "holds a run; name a new folder" in kept.stderr
    twice = run_cli("runs", "compare", run_id, run_id, "--out", tmp_path / "cmp2")  # one run, not two seeds of it
    assert twice.returncode == 0 and (tmp_path / "cmp2" / "report.md").read_text() == summary
    nowhere = tmp_path / "no-folder" / "results.db"  # commands that read make no database, nor its folder
    listed = run_cli("runs", "list", "--db", nowhere)
    shown = run_cli("runs", "show", "1", "--db", nowhere)
    assert listed.returncode == 0 and "no runs recorded" in listed.stdout
    assert shown.returncode == 2 and "no results database at" in shown.stderr
    assert not nowhere.parent.exists()
    missing = run_cli("runs", "show", "99999")
    assert missing.returncode == 2 and "no run 99999" in missing.stderr and "Traceback" not in missing.stderr
    huge = run_cli("runs", "show", "9" * 23)  # past SQLite's integers: one line, not its OverflowError
    assert huge.returncode == 2 and "Traceback" not in huge.stderr and len(huge.stderr.splitlines()) == 1
    listing = run_cli("runs", "list", "5")
    assert listing.returncode == 2 and "`showdown runs show ID` shows one" in listing.stderr
    recorded = [row["id"] for row in db.list_runs()][:2]
    both = run_cli("runs", "show", *recorded)  # each run's own configuration, not the first one's alone
    assert both.returncode == 0 and both.stdout.count("configuration: ") == len(recorded)
    assert "\n  models: " in both.stdout and "{" not in both.stdout  # the settings a line each, not one dict


def test_database_survives_a_run_killed_mid_training(tmp_path, demo_dir):
    database = tmp_path / "results.db"
    base = ["run", "--data", str(demo_dir), "--models", "efficientnet_lite0", "--image-size", "64", "--workers", "0",
            "--db", str(database), "--no-report"]
    first = run_cli(*base, "--epochs", "2", "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    before = db.list_runs(database)
    killed = subprocess.Popen([sys.executable, "-m", "showdown.cli", *base, "--strategy", "head,scratch-cnn",
                               "--epochs", "50", "--patience", "50", "--out", str(tmp_path / "b")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "b" / "scratch_cnn-scratch-cnn" / "checkpoint-scratch-cnn.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert db.list_runs(database) == before  # no partial row, earlier run intact
    with db.connect(database) as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("entries", "predictions")]
    assert counts[0] == 1 and counts[1] == 40
    third = run_cli(*base, "--epochs", "2", "--out", tmp_path / "c")
    assert third.returncode == 0, third.stderr
    after = db.list_runs(database)
    assert len(after) == 2 and after[-1]["run_dir"] == str((tmp_path / "c").resolve())
    assert load_run(tmp_path / "c")[0].metrics["accuracy"] == pytest.approx(after[-1]["best_accuracy"])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_cells_show_their_images_and_the_leaderboard_sorts_offline(report_run):
    """Three entries: a click on a confusion-matrix cell shows exactly that cell's test images, the leaderboard
    sorts by a clicked column, and the page makes no request."""
    from playwright.sync_api import sync_playwright

    groups = group_records(load_run(report_run.run_dir))
    assert len(groups) == 3
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.goto((report_run.run_dir / "report.html").as_uri())
        for number, group in enumerate(groups):
            matrix = page.locator("section#confusion table.matrix").nth(number)
            cell = matrix.locator("td.miss" if matrix.locator("td.miss").count() else "td.hit").first
            title = cell.get_attribute("data-title")
            true, pred = re.fullmatch(r".*: true (.+), predicted (.+) \(\d+ images?\)", title, re.S).groups()
            expected = sorted(Path(r["path"]).name for r in group.first.predictions
                              if r["true"] == true and r["pred"] == pred)
            cell.click()
            view = page.locator(f"#cell-view-{number}")
            assert sorted(view.locator("figcaption").all_inner_texts()) == expected
            assert view.locator("img").count() == len(expected)
        assert page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length") == 0
        page.locator("section#leaderboard th", has_text="test accuracy").click()
        shown = [float(t.split()[0]) for t in
                 page.locator("section#leaderboard tbody tr td:nth-child(4)").all_inner_texts()]
        assert shown == sorted(shown)
        browser.close()
    assert errors == [] and requests == []


def test_the_table_of_a_run_with_repeats_names_each_rows_seed():
    from showdown.reporting.tables import format_table

    rows = [{"model": "efficientnet_lite0", "strategy": "head", "seed": seed, "accuracy": 0.8 + seed / 100}
            for seed in (0, 1, 2)]
    lines = format_table(rows).splitlines()[2:]
    assert [line.split()[1:4] for line in lines] == [["head", "(seed", "0)"], ["head", "(seed", "1)"],
                                                      ["head", "(seed", "2)"], ["head", "(mean", "of"]]
    assert "(seed" not in format_table([{**rows[0], "seed": 5}])  # one run of --seed 5: nothing to tell apart


def test_a_run_recorded_again_keeps_its_id(report_run, tmp_path):
    """Recording a folder again (a resumed finished run, a merge into the same --out) replaces its rows under the ID
    it was given: "recorded as run N" stays true."""
    database = tmp_path / "results.db"
    first = db.record_run(report_run.run_dir, database)
    other = tmp_path / "other"
    shutil.copytree(report_run.run_dir, other)
    second = db.record_run(other, database)
    assert db.record_run(report_run.run_dir, database) == first and second != first
    assert sorted(row["id"] for row in db.list_runs(database)) == sorted([first, second])


def test_with_repeats_the_best_entry_and_the_gate_go_by_the_mean_over_seeds(report_run, tmp_path):
    """One lucky seed is no winner: Results.best, --assert-accuracy-at-least and `runs list` rank by the mean over
    the seeds, as the report does."""
    import pytest

    from showdown.errors import AccuracyGateError
    from showdown.experiment.results import Results

    rows = [{"model": "a", "strategy": "head", "seed": 0, "accuracy": 0.5},
            {"model": "a", "strategy": "head", "seed": 1, "accuracy": 0.4},
            {"model": "b", "strategy": "head", "seed": 0, "accuracy": 0.46},
            {"model": "b", "strategy": "head", "seed": 1, "accuracy": 0.46}]
    results = Results(tmp_path, rows, [])
    assert results.best()["model"] == "b" and results.best()["accuracy"] == pytest.approx(0.46)
    with pytest.raises(AccuracyGateError):
        results.gate(0.48)
    database = tmp_path / "results.db"
    run_id = db.record_run(report_run.run_dir, database)
    summary = report_run.rows
    means = {}
    for row in summary:
        means.setdefault((row["model"], row["strategy"]), []).append(row["accuracy"])
    top = max(sum(values) / len(values) for values in means.values())
    (listed,) = [row for row in db.list_runs(database) if row["id"] == run_id]
    assert listed["best_accuracy"] == pytest.approx(top)
    assert listed["best"] in {" / ".join(key) for key, values in means.items()
                              if sum(values) / len(values) == pytest.approx(top)}


def test_accuracy_without_suspect_labels_is_the_mean_over_seeds(report_run):
    """Beside the mean over seeds, the accuracy on the undoubted test images is a mean over seeds too (it was the
    first seed's), and so is the ranking the footnote compares."""
    from showdown.reporting.label_issues import accuracy_without
    from showdown.reporting.report import _without_suspects, group_records, suspects_of
    from showdown.reporting.run_records import load_run

    groups = group_records(load_run(report_run.run_dir))
    suspects = suspects_of(groups)
    if suspects is None or not suspects.test_paths:
        pytest.skip("no test image suspected in this run")
    for group in groups:
        seeds = [accuracy_without(record.predictions, suspects.test_paths)[0] for record in group.records]
        assert len(seeds) == 2 and _without_suspects(group, suspects.test_paths) == sum(seeds) / 2


def test_two_runs_fairness_names_each_entry_with_its_run(report_run):
    """`runs compare` of two runs: where the input sizes differ, the fairness line says which run's entry saw what
    (the model's name alone is in both runs)."""
    from showdown.reporting.report import markdown

    ours = [r for r in load_run(report_run.run_dir) if r.strategy == "head" and r.model == "efficientnet_lite0"]
    theirs = [r for r in load_run(report_run.run_dir) if r.strategy == "head" and r.model == "efficientnet_lite0"]
    for record in ours:
        record.run = "run 1"
    for record in theirs:
        record.run, record.metrics["setup"]["input_size"] = "run 2", 96
    text = markdown(group_records(ours + theirs), [], "compared")
    assert "efficientnet_lite0 / head (run 2)" in text.split("input size")[-1]
    assert "64 px: efficientnet_lite0 / head (run 1)" in text


def test_with_repeats_the_folds_and_searches_show_every_seed(tmp_path):
    """A cross-validated, tuned run with --repeats 2: the report's fold and search tables have a row for each seed,
    not the first seed's alone."""
    config = RunConfig(models=["efficientnet_lite0"], image_size=64, folds=2, repeats=2, tune=2, epochs=1, workers=0,
                       out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), record=False)
    results = run(config, echo=lambda *_: None)
    report = (results.run_dir / "report.md").read_text()
    folds = report.split("## Cross-validation")[1].split("##")[0]
    searches = report.split("## Hyper-parameter search")[1].split("##")[0]
    for seed in (0, 1):
        fold_accuracies = [f["accuracy"] for f in next(r for r in load_run(results.run_dir)
                                                       if r.seed == seed).metrics["fold_metrics"]]
        row = next(line for line in folds.splitlines() if f"(seed {seed})" in line)
        assert all(f"{accuracy:.4f}" in row for accuracy in fold_accuracies)
        assert searches.count(f"efficientnet_lite0 / head (seed {seed})") == 2  # one search per fold
    html = (results.run_dir / "report.html").read_text()
    assert html.count("<h3>efficientnet_lite0 / head (seed 1)</h3>") == 1
    assert "95 % CI (Wilson, folds pooled)" in report and "test accuracy (mean ± std of the seeds)" in report


def test_the_headings_say_what_the_spread_and_the_interval_are(report_run):
    """"± std of the seeds" only where an entry has several, "folds pooled" only with --folds."""
    from showdown.reporting.report import headings

    records = load_run(report_run.run_dir)  # two seeds of each entry
    said = headings(group_records(records))
    assert (said["accuracy"], said["ci"]) == ("test accuracy (mean ± std of the seeds)", "95 % CI (Wilson)")
    assert said["loss"] == "test log loss"  # not the smoothed training loss its curves show
    first_seeds = [record for record in records if record.seed == 0]
    assert headings(group_records(first_seeds))["accuracy"] == "test accuracy"
    for record in first_seeds:
        record.metrics["fold_metrics"] = [{"accuracy": 0.5}, {"accuracy": 0.6}]
    assert headings(group_records(first_seeds))["ci"] == "95 % CI (Wilson, folds pooled)"


def _seeds(model: str, *right_of_40: int) -> list:
    """An entry's seeds, each right on its first `right` of 40 test images."""
    from showdown.reporting.run_records import EntryRecord

    return [EntryRecord(run="r", folder=f"{model}-{seed}", history=[], config={}, environment={}, dataset={},
                        metrics={"model": model, "strategy": "head", "seed": seed, "accuracy": right / 40,
                                 "n_test": 40},
                        predictions=[{"path": f"{i}.jpg", "true": "a", "pred": "a" if i < right else "b",
                                      "confidence": 0.9} for i in range(40)])
            for seed, right in enumerate(right_of_40)]


def test_with_seeds_the_tests_and_interval_are_of_the_mean_the_leaderboard_ranks():
    """A: 24, 38 and 38 of 40 (mean 0.8333), B: 32 on every seed. The test was of the first seeds (24 vs 32:
    "B is better") beside "Winner: A", and the interval (first seed, 0.450-0.750) left out the 0.8333 beside it."""
    from showdown.reporting.report import leaderboard_rows, significance, winner_sentence

    groups = group_records(_seeds("A", 24, 38, 38) + _seeds("B", 32, 32, 32))
    (test,) = significance(groups)
    assert (test.a, test.only_a, test.only_b) == ("A / head", 6, 8) and not test.significant
    said = winner_sentence(groups, [test])
    assert said.startswith("Winner: **A / head**, mean test accuracy 0.8333 of 3 seeds on 40 test images; not "
                           "distinguishable from **B / head**")
    # what predict and export ship is one seed's model, whose accuracy is not the mean's
    assert said.endswith(". `showdown predict` and `export` serve its seed 0 model, test accuracy 0.6000."), said
    low, high = (float(x) for x in leaderboard_rows(groups)[0]["ci"].split("–"))
    assert low < 0.8333 < high
    # a float mean a hair under another is a tie: fmean([0.8, 0.775, 0.825]) is 0.7999999999999999
    tied = group_records(_seeds("A", 32, 31, 33) + _seeds("B", 32, 32, 32))
    said = winner_sentence(tied, significance(tied))
    assert said.startswith("Tied: **A / head**, **B / head**, mean test accuracy 0.8000")


def test_with_seeds_the_test_is_of_the_mean_difference_not_of_a_count_of_images():
    """A: 0.8 on the mean of five seeds, 4 of 5 seeds right on every image; B: 0.775, right on 31 images every
    time. B does better on 31 images and A on 9, by far more on each: a count of images (a sign test, p = 0.0005)
    called B better beside "Winner: A"; the mean difference, +2.5 points, is no evidence either way."""
    from showdown.reporting.report import significance, winner_sentence

    groups = group_records(_seeds("A", 40, 40, 40, 40, 0) + _seeds("B", 31, 31, 31, 31, 31))
    (test,) = significance(groups)
    assert groups[0].label == "A / head" and (test.only_a, test.only_b) == (9, 31) and not test.significant
    assert test.p_value > 0.5 and winner_sentence(groups, [test]).startswith("Winner: **A / head**")
    assert "not distinguishable from **B / head**" in winner_sentence(groups, [test])


def _twin_runs(report_run, lower_by: float):
    """The same entry twice, as if from two runs: the same predictions, the second's accuracy `lower_by` less."""
    ours = [r for r in load_run(report_run.run_dir) if r.strategy == "head" and r.model == "efficientnet_lite0"]
    theirs = [r for r in load_run(report_run.run_dir) if r.strategy == "head" and r.model == "efficientnet_lite0"]
    for record in ours:
        record.run = "run 1"
    for record in theirs:
        record.run, record.metrics["accuracy"] = "run 2", record.metrics["accuracy"] - lower_by
    return group_records(ours + theirs)


def test_the_winner_line_says_a_tie_and_a_runner_up_it_cannot_be_told_from(report_run):
    from showdown.reporting.report import markdown, significance, winner_sentence

    tied = _twin_runs(report_run, 0.0)
    assert winner_sentence(tied, significance(tied)).startswith(
        "Tied: **efficientnet_lite0 / head (run 1)**, **efficientnet_lite0 / head (run 2)**, mean test accuracy")
    groups = _twin_runs(report_run, 0.01)
    said = winner_sentence(groups, significance(groups))
    assert said.startswith("Winner: **efficientnet_lite0 / head (run 1)**") and (
        "; not distinguishable from **efficientnet_lite0 / head (run 2)** on this data (sign-flip permutation p = 1, "
        "below).") in said
    # with two seeds each, the image-by-image test is of each image's share of seeds right, and says so
    (test,) = significance(groups)
    assert test.a == "efficientnet_lite0 / head (run 1)"
    assert "a sign-flip permutation test on each image's share of seeds right" in markdown(groups, [test], "t")


def test_flags_from_weak_heads_give_no_accuracy_without_them(report_run):
    """cleanlab's flags are as good as the out-of-fold heads behind them: from heads scoring 0.56, a third of the
    test images flagged are mostly those heads' own mistakes, and the accuracy without them would favour the
    backbone whose features flagged them. The note says so and the column is not shown."""
    from showdown.reporting.label_issues import Suspects
    from showdown.reporting.report import columns, suspects_note

    records = load_run(report_run.run_dir)
    tests = [p["path"] for p in records[0].predictions]
    flagged = [{"path": path, "split": "test"} for path in tests[: len(tests) // 3]]
    for judged, shown in ((0.56, False), (0.9, False), (0.9, True)):
        rows = flagged if not shown else flagged[:2]  # a third of the test images, or two
        suspects = Suspects(rows, {"backbone": "efficientnet_lite1", "out_of_fold_accuracy": judged})
        for record in records:
            record.extra = {**record.extra, "suspects": suspects}
        groups = group_records(records)
        assert ("w/o suspects" in columns(groups)) == shown
        note = suspects_note(groups)
        assert f"which score {judged:.2f} on the images they did not train on" in note
        assert ("too weak, or flag too many" in note) != shown
        assert ("flags come from efficientnet_lite1's features" in note) == shown
    # none of the test images flagged: a column repeating the accuracy beside it says nothing
    for record in records:
        record.extra = {**record.extra, "suspects": Suspects([], {"backbone": "efficientnet_lite1",
                                                                  "out_of_fold_accuracy": 0.9})}
    groups = group_records(records)
    assert "w/o suspects" not in columns(groups) and suspects_note(groups).startswith("0 of the ")
    assert "accuracy without suspect labels" not in suspects_note(groups)


def test_a_diverged_trial_does_not_squash_the_search_figure():
    """One trial at loss 6 beside the others' 0.8-1.3: the axis stops at twice the median loss and counts the one
    above, so the trials that matter are not pressed into a few pixels."""
    from showdown.reporting.plots import search_figure

    trials = [{"number": i, "value": v, "state": "complete"} for i, v in enumerate([0.82, 0.95, 6.1, 1.2])]
    fig = search_figure([("", {"trials": trials, "default_val_loss": 0.9})], "lite0")
    (ax,) = fig.axes
    assert ax.get_ylim()[1] < 2.5 and ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.texts] == ["1 above ↑"]
    assert sorted(x for c in ax.collections for x, _ in c.get_offsets()) == [1, 2, 3, 4]  # numbered from 1


def test_with_folds_the_parameters_are_each_folds_range():
    """--folds with --tune: each fold's search may pick another head, so the leaderboard gives their range, not
    fold 1's count as the entry's."""
    from showdown.reporting.report import _params

    assert _params({"params_m": 4.69, "fold_metrics": [{"params_m": 4.69}, {"params_m": 5.45}]}) == "4.69–5.45"
    assert _params({"params_m": 4.69, "fold_metrics": [{"params_m": 4.69}, {"params_m": 4.69}]}) == "4.69"
    assert _params({"params_m": 4.69}) == "4.69"


def test_predict_and_export_take_the_winners_first_seed_not_the_luckiest(report_run, tmp_path):
    """A setup at 0.9 and 0.5 over two seeds (mean 0.7) against one at 0.8 and 0.8: the model a run folder serves
    is the second's (the report's winner), its first seed: the best single seed's test accuracy is luck."""
    from showdown.deploy.predict import open_model
    from showdown.deploy.trained import choose_entry

    copy = shutil.copytree(report_run.run_dir, tmp_path / "run")
    summary = json.loads((copy / "summary.json").read_text())
    setups = sorted({(row["model"], row["strategy"]) for row in summary["rows"]})
    lucky, steady = setups[0], setups[1]
    for row in summary["rows"]:
        setup = (row["model"], row["strategy"])
        row["accuracy"] = {lucky: [0.9, 0.5][row["seed"]], steady: 0.8}.get(setup, 0.1)
    (copy / "summary.json").write_text(json.dumps(summary))
    (chosen,) = [row["folder"] for row in summary["rows"] if (row["model"], row["strategy"]) == steady
                 and row["seed"] == 0]
    assert choose_entry(copy, None) == copy / chosen
    assert open_model(copy, device="cpu").name == f"{steady[0]} / {steady[1]}, seed 0"  # predict's summary says so


def test_the_terminal_table_ranks_setups_by_their_mean_with_a_row_of_means(report_run):
    """Its rows were single seeds, best first: a lucky seed topped it above the report's winner."""
    from showdown.reporting.tables import format_table

    lines = format_table(report_run.rows).splitlines()[2:]
    groups = group_records(load_run(report_run.run_dir))
    winner = groups[0]
    model, strategy = winner.first.model, winner.first.strategy
    assert [line.split()[:3] for line in lines[:3]] == [
        [model, strategy, "(seed"], [model, strategy, "(seed"], [model, strategy, "(mean"]]
    assert f"{winner.mean('accuracy'):.4f}" in lines[2]
    assert sum("(mean of 2)" in line for line in lines) == len(groups)


def test_a_comparison_where_some_runs_have_bench_figures_says_so(report_run):
    """`runs compare` of a run made with --bench and one without said 'No showdown bench figures in this run'."""
    from showdown.reporting.report import _tradeoffs

    groups = _twin_runs(report_run, 0.01)
    assert "This run has no <code>showdown bench</code> figures" in _tradeoffs(groups)
    groups[0].first.bench = {"latency_ms": 3.0, "size_mb": 13.0}
    assert "Some of these entries lack <code>showdown bench</code> figures" in _tradeoffs(groups)
