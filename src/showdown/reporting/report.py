"""The showdown report: one self-contained HTML page (and a Markdown summary) that says who won, by how much,
at what cost, and whether the difference is real.

Everything is inline (styles, figures, thumbnails, one script that sorts and opens confusion cells,
interactive.py) and a Content-Security-Policy allows that script alone, by its hash, and forbids any
request, so the page works from file:// and cannot phone home. Every user-supplied string (class names, paths,
configuration) is HTML-escaped.

Long because the page is one template read top to bottom (leaderboard, fairness, folds, searches, verdicts,
per-entry figures, gallery of mistakes, cost); its parts share the escaping and the grouping of entries, and the
statistics, fairness checks, plots and tables it shows live in their own modules.
"""
from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from showdown.config.strategy import Strategy
from showdown.fileio import write_atomic
from showdown.ranking import rank_key, same_mean
from showdown.reporting.fairness import (
    SEARCH_HEADER,
    checks,
    fold_rows,
    search_rows,
    searches,
    verdict,
)
from showdown.reporting.interactive import CellImages, confusion_table, script_policy, script_tag
from showdown.reporting.label_issues import WITHOUT_LABEL_ISSUES, Suspects, accuracy_without, trusted
from showdown.reporting.plots import (
    confusion_png,
    curves_png,
    data_uri,
    png_uri,
    search_figure,
    tradeoff_figure,
)
from showdown.reporting.report_images import gallery, gradcam, issues
from showdown.reporting.run_records import EntryRecord, load_run
from showdown.reporting.stats import Comparison, adjusted, compare, wilson_interval
from showdown.reporting.tables import render
from showdown.reporting.thumbnails import Thumbnails
from showdown.run_schema import REPORT_HTML, REPORT_MD

TOP_FOR_TESTS = 4  # every pair among the best four entries is tested (six pairs: Holm adjusts for them)


@dataclass
class Group:
    """The repeats (seeds) of one configuration."""

    label: str
    records: list[EntryRecord]

    @property
    def first(self) -> EntryRecord:
        return self.records[0]

    def mean(self, key: str) -> float | None:
        values = [r.metrics[key] for r in self.records if r.metrics.get(key) is not None]
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        values = [r.metrics[key] for r in self.records if r.metrics.get(key) is not None]
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def first_label(self) -> str:
        """The label of the first seed, for what shows that seed alone (its curves, its image-by-image tests)."""
        return self.seeds()[0][0]

    def seeds(self) -> list[tuple[str, EntryRecord]]:
        """Every repeat with the label its table row shows: the group's, and the seed where there are several."""
        several = len(self.records) > 1
        return [(self.label + (f" (seed {r.seed})" if several else ""), r) for r in self.records]

    def correct(self) -> np.ndarray:
        """Each test image's share of the seeds that got it right (1 or 0 with one seed): what the tests compare,
        so that they are of the mean accuracy the leaderboard shows. A seed tested on other images is left out."""
        paths = [p["path"] for p in self.first.predictions]
        same = [r for r in self.records if [p["path"] for p in r.predictions] == paths]
        return np.mean([np.asarray(r.correct(), float) for r in same], axis=0)

    def accuracy_ci(self) -> tuple[float, float]:
        """Wilson's 95 % interval of the mean test accuracy, over the test images."""
        return wilson_interval(self.mean("accuracy"), len(self.first.predictions))


def group_records(records: list[EntryRecord]) -> list[Group]:
    """Repeats of a configuration together; best mean accuracy first."""
    several_runs = len({r.run for r in records}) > 1
    groups: dict[tuple, Group] = {}
    for record in records:
        label = record.label + (f" ({record.run})" if several_runs else "")
        groups.setdefault((record.run, record.model, record.strategy), Group(label, [])).records.append(record)
    return sorted(groups.values(), key=lambda g: rank_key(g.label, [g.mean("accuracy")]))


def significance(groups: list[Group]) -> list[Comparison | str]:
    """McNemar + bootstrap for every pair among the top entries (their seeds' shares per image), on the same test
    images; significant after Holm's adjustment over the pairs."""
    cut = same_mean(groups[min(TOP_FOR_TESTS, len(groups)) - 1].mean("accuracy"))
    top = [g for g in groups if same_mean(g.mean("accuracy")) >= cut]  # one tied with the last is tested too
    out: list[Comparison | str] = []
    for i, a in enumerate(top):
        for b in top[i + 1:]:
            paths_a = [p["path"] for p in a.first.predictions]
            if paths_a != [p["path"] for p in b.first.predictions]:
                out.append(f"{a.label} and {b.label} were tested on different images, so they are not compared "
                           "image by image")
                continue
            out.append(compare(a.label, a.correct(), b.label, b.correct()))
    tests = iter(adjusted([test for test in out if isinstance(test, Comparison)]))
    return [next(tests) if isinstance(test, Comparison) else test for test in out]


def _fmt(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def suspects_of(groups: list[Group]) -> Suspects | None:
    return groups[0].first.extra.get("suspects")


def rerun_of(groups: list[Group]) -> list[Group] | None:
    """The entries of the --drop-label-issues re-run, best first, or None."""
    records = groups[0].first.extra.get("without_label_issues")
    return group_records(records) if records else None


def same_order(groups: list[Group], others: list[Group]) -> bool:
    return [g.first.label for g in groups] == [g.first.label for g in others]


def leaderboard_rows(groups: list[Group]) -> list[dict]:
    suspects = suspects_of(groups)
    rows = []
    for rank, group in enumerate(groups, 1):
        low, high = group.accuracy_ci()
        bench = group.first.bench or {}
        std = group.std("accuracy")
        rows.append({
            "rank": rank, "entry": group.label, "seeds": len(group.records),
            "accuracy": f"{group.mean('accuracy'):.4f}" + (f" ± {std:.4f}" if std is not None else ""),
            "ci": "–" if math.isnan(low) else f"{low:.3f}–{high:.3f}",  # NaN: no predictions.csv to resample
            "w/o suspects": _fmt(_without_suspects(group, suspects.test_paths), ".4f") if suspects else "–",
            "macro F1": _fmt(group.mean("macro_f1"), ".3f"),
            "weighted F1": _fmt(group.mean("weighted_f1"), ".3f"), "loss": _fmt(group.mean("loss"), ".3f"),
            "train s": _fmt(group.mean("train_seconds"), ".1f"),
            "latency ms": _fmt(bench.get("latency_ms"), ".1f"), "size MB": _fmt(bench.get("size_mb"), ".1f"),
            "params M": _params(group.first.metrics),
            "weights": ("RANDOM INIT: " if group.first.metrics.get("pretrained") is False
                        and not Strategy.parse(group.first.strategy).from_scratch else "")
            + str(group.first.metrics.get("weights")),
        })
    return rows


def _params(metrics: dict) -> str:
    """Millions of parameters; with --folds and --tune each fold's search may choose another head: their range."""
    per_fold = {f["params_m"] for f in metrics.get("fold_metrics") or [] if f.get("params_m") is not None}
    if len(per_fold) > 1:
        return f"{min(per_fold):.2f}–{max(per_fold):.2f}"
    return _fmt(metrics.get("params_m"), ".2f")


COLUMNS = ["rank", "entry", "seeds", "accuracy", "ci", "w/o suspects", "macro F1", "weighted F1", "loss", "train s",
           "latency ms", "size MB", "params M", "weights"]
HEADINGS = {"accuracy": "test accuracy", "latency ms": "latency ms (PyTorch fp32, batch 1)",
            "loss": "test log loss",  # of the softmax, without the label smoothing of the training loss
            "w/o suspects": "accuracy without suspect labels"}


def headings(groups: list[Group]) -> dict[str, str]:
    """The leaderboard's headings: what the ± spans where entries have several seeds (the seeds' standard
    deviation, n - 1), and the interval's kind, over the folds' pooled test images with --folds."""
    seeds = max(len(g.records) for g in groups) > 1
    folds = any(g.first.metrics.get("fold_metrics") for g in groups)
    return {**HEADINGS, "accuracy": "test accuracy (mean ± std of the seeds)" if seeds else "test accuracy",
            "ci": f"95 % CI (Wilson{', folds pooled' if folds else ''})"}


def _without_suspects(group: Group, paths) -> float | None:
    """The entry's accuracy on the test images whose labels nobody doubts: the mean over its seeds (None without
    predictions to count)."""
    values = [value for record in group.records
              if (value := accuracy_without(record.predictions, paths)[0]) is not None]
    return sum(values) / len(values) if values else None


def columns(groups: list[Group]) -> list[str]:
    """The leaderboard's columns; the accuracy without suspect labels only when the run looked for them, its
    flags can be trusted and it flagged a test image (else the column repeats the accuracy)."""
    suspects = suspects_of(groups)
    shown = suspects is not None and bool(suspects.test_paths) and trusted(suspects, groups[0].first.metrics.get(
        "n_test"))
    return [c for c in COLUMNS if c != "w/o suspects" or shown]


def suspects_note(groups: list[Group]) -> str:
    """How many test images are suspected label errors: the leaderboard's footnote ("" when none looked for)."""
    suspects = suspects_of(groups)
    if suspects is None:
        return ""
    n_test = groups[0].first.metrics.get("n_test")
    flagged, backbone = len(suspects.test_paths), suspects.summary["backbone"]
    judged = suspects.summary.get("out_of_fold_accuracy")
    note = (f"{flagged} of the {n_test} test images are suspected label errors (cleanlab, out-of-fold heads on "
            f"{backbone} features" + (f", which score {judged:.2f} on the images they did not train on" if judged
                                      is not None else "") + ").")
    if not flagged:
        return note
    if not trusted(suspects, n_test):
        return note + (" The heads that flag them are too weak, or flag too many, for the flags to be trusted: many "
                       "are the heads' own mistakes, so no accuracy without them is shown.")
    note += (f" 'accuracy without suspect labels' is each entry's accuracy on the other {n_test - flagged}; the "
             f"flags come from {backbone}'s features, so its own entries' mistakes are the likeliest to be left "
             "out.")
    if len(groups) < 2:
        return note
    # The same entries ranked on the test images whose labels nobody doubts (the mean over seeds, as ranked above).
    clean = sorted(groups, key=lambda g: rank_key(g.label, [_without_suspects(g, suspects.test_paths) or 0]))
    if same_order(groups, clean):
        return note + " Without them the ranking is the same."
    return note + " Without them the ranking changes: " + ", ".join(g.label for g in clean) + "."


def markdown(groups: list[Group], tests: list, title: str) -> str:
    rows, shown, named = leaderboard_rows(groups), columns(groups), headings(groups)
    table = render([named.get(c, c) for c in shown], [[row[c] for c in shown] for row in rows], markdown=True)
    lines = [f"# {title}", "", winner_sentence(groups, tests), "", table]
    if suspects_of(groups):
        lines += ["", suspects_note(groups)]
    lines += [line for note in notes(groups) for line in ("", note)]
    found = checks([g.first for g in groups], [g.label for g in groups])
    lines += ["", "## How fair was it?", "", verdict(found), ""]
    lines += [f"- {'same' if c.same else 'DIFFERS'}: {c.name}: {c.text}" for c in found]
    header, folds = fold_rows([seed for g in groups for seed in g.seeds()])
    if folds:
        lines += ["", "## Cross-validation: test accuracy per fold", "", render(header, folds, markdown=True)]
    tuned = [(label, search_rows(r)) for g in groups for label, r in g.seeds() if searches(r)]
    if tuned:
        lines += ["", "## Hyper-parameter search (validation split only)", ""]
        lines += [render(["entry", *SEARCH_HEADER], [[label, *row] for label, rows in tuned for row in rows],
                         markdown=True)]
    clean = rerun_of(groups)
    if clean:
        lines += ["", "## Trained and tested again without the suspected label errors", "",
                  f"The ranking {'is the same' if same_order(groups, clean) else 'changes'}: " + ", ".join(
                      f"{g.label} {g.mean('accuracy'):.4f}" for g in clean) + f" ({WITHOUT_LABEL_ISSUES}/)."]
    lines += ["", "## Is the difference real?", "", SIGNIFICANCE_NOTE, ""]
    lines += [f"- {t.verdict() if isinstance(t, Comparison) else t}" for t in tests] or ["- only one entry"]
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1, css: str = "",
           numeric_until: int | None = None) -> str:
    """Columns numeric_from to numeric_until (exclusive; None: the last) are numbers, aligned right."""
    e = html.escape
    until = len(header) if numeric_until is None else numeric_until
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if numeric_from <= i < until else ''}>{e(str(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table{f' class={css}' if css else ''}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tradeoffs(groups: list[Group]) -> str:
    if len(groups) < 2:  # a lone point is its own Pareto front: no figure (two of them took 0.3 s to draw)
        return ("<p class=note>One configuration in this run: nothing to trade its accuracy off against. Its size and "
                "training time are in the leaderboard.</p>")
    figures = []
    labels = [g.label for g in groups]
    accuracy = [g.mean("accuracy") for g in groups]
    benched = [g.first.bench for g in groups]
    if all(benched):
        figures.append(tradeoff_figure(labels, [b["latency_ms"] for b in benched], accuracy,
                                       "latency at batch 1, PyTorch fp32 (ms, median)", "accuracy vs latency"))
        figures.append(tradeoff_figure(labels, [b["size_mb"] for b in benched], accuracy, "size on disk (MB)",
                                       "accuracy vs size"))
        note = ""
    else:
        which = "some of these entries lack" if any(benched) else "this run has no"  # a comparison of runs: some
        note = (f"<p class=note>{which.capitalize()} <code>showdown bench</code> figures (run with "
                "<code>--bench</code>); parameters and training time stand in for latency and size.</p>")
        figures.append(tradeoff_figure(labels, [g.first.metrics["params_m"] for g in groups], accuracy,
                                       "parameters (millions)", "accuracy vs size"))
        figures.append(tradeoff_figure(labels, [g.mean("train_seconds") for g in groups], accuracy,
                                       "training time (s)", "accuracy vs training time"))
    images = "".join(f'<img src="{data_uri(f)}" alt="trade-off plot">' for f in figures)
    return note + f"<div class=row>{images}</div>"


def _per_class(groups: list[Group]) -> str:
    classes = groups[0].first.metrics["classes"]
    header = ["class"] + [f"{g.first_label} {m}" for g in groups for m in ("P", "R", "F1")]
    rows = []
    for name in classes:
        cells = [name]
        for g in groups:
            values = g.first.metrics["per_class"].get(name)
            cells += [f"{values[m]:.2f}" if values else "–" for m in ("precision", "recall", "f1")]
        rows.append(cells)
    return _table(header, rows)


def _device_text(env: dict) -> str:
    """What trained it: the device (GPU name, memory, CUDA and driver versions) and the torchrun processes."""
    device = env.get("device") or {"type": "cuda" if env.get("cuda") else "cpu"}  # runs recorded before --device
    text = device.get("name") or device["type"]
    if device["type"] == "cuda":
        text = f"{text}, {device.get('memory_gb')} GB, CUDA {device.get('cuda')}, driver {device.get('driver')}"
    processes = env.get("processes", 1)
    return f"{device['type']}: {text}" + (f"; {processes} processes (torchrun)" if processes > 1 else "")


def _reproduce(record: EntryRecord) -> str:
    e = html.escape
    env = record.environment
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)
    facts = [["run", record.run], ["seed", record.seed], ["precision", env.get("precision")],
             ["frozen layers run by", env.get("runtime", "torch")],
             ["CPU", f"{env.get('cpu')} ({env.get('cpu_count')} cores, {env.get('torch_threads')} torch threads)"],
             ["device", _device_text(env)], ["platform", env.get("platform")],
             ["Python", env.get("python")], ["packages", packages],
             ["data", f"{record.dataset.get('name')} ({record.dataset.get('root')}), fingerprint "
                      f"{record.dataset.get('fingerprint')}, split {record.dataset.get('split')}"],
             ["weights", record.metrics.get("weights")]]
    for label, search in searches(record):  # the configuration above, with the search's choices
        facts.append([f"tuned values {label}".strip(), ", ".join(f"{k} = {v}" for k, v in search["values"].items())
                      or search["chosen"]])
    config = json.dumps(record.config, indent=2, default=str)
    return (_table(["what", "value"], [[k, v] for k, v in facts], numeric_from=99)
            + f"<details><summary>configuration</summary><pre>{e(config)}</pre></details>")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;color:#222;
line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:2px solid #1f77b4;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}th{background:#eef3f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;height:auto}
.verdict{margin:.3rem 0}.yes{color:#1b5e20}.no{color:#8a6d00}.note{color:#555;font-style:italic}
.row{display:flex;flex-wrap:wrap;gap:1rem}.row img{max-width:560px;width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:.6rem}figure{margin:0;width:130px;font-size:.75rem}
figure img{width:112px;height:112px;object-fit:cover;border:1px solid #ccc}figcaption{overflow-wrap:anywhere}
table.sortable th{cursor:pointer}th[data-order=asc]::after{content:" ▲"}th[data-order=desc]::after{content:" ▼"}
td.cell{cursor:pointer}td.hit{background:#e8f5e9}td.miss{background:#fdecea}.cell-view figure{width:80px}
.cell-view figure img{width:64px;height:64px}.wide figure{width:340px}.wide figure img{width:336px;height:auto}
.missing{width:112px;height:112px;background:#eee;display:flex;align-items:center;justify-content:center}
pre{background:#f6f6f6;padding:.6rem;font-size:.75rem;overflow-x:auto}
@media print{body{max-width:none}h2{break-before:auto}}
"""


def render_html(groups: list[Group], tests: list, title: str) -> str:
    e = html.escape
    thumbs = Thumbnails()
    sections = []
    winner = groups[0]
    sections.append(("leaderboard", "Leaderboard", _leaderboard(groups, tests)))
    verdicts = _verdicts(tests)
    found = checks([g.first for g in groups], [g.label for g in groups])
    sections.append(("fairness", "How fair was it?", f"<p><b>{e(verdict(found))}</b></p><ul>" + "".join(
        f"<li class={'yes' if c.same else 'no'}>{'same' if c.same else 'differs'}: <b>{e(c.name)}</b>: "
        f"{e(c.text)}</li>" for c in found) + "</ul>"))
    header, folds = fold_rows([seed for g in groups for seed in g.seeds()])
    if folds:
        sections.append(("folds", "Cross-validation: test accuracy per fold",
                         "<p class=note>Every image is in exactly one fold's test part; the leaderboard and the tests "
                         "below use the pooled predictions of all folds.</p>" + _table(header, folds)))
    tuned = [(label, r) for g in groups for label, r in g.seeds() if searches(r)]
    if tuned:
        sections.append(("search", "Hyper-parameter search (validation split only)", "".join(
            f"<h3>{e(label)}</h3>" + _table(SEARCH_HEADER, search_rows(r), numeric_from=1)
            + f"<img src=\"{data_uri(search_figure(searches(r), label))}\" alt=\"search trials\">"
            for label, r in tuned)))
    sections.append(("significance", "Is the difference real?",
                     f"<p class=note>{SIGNIFICANCE_NOTE}</p>" + verdicts))
    sections.append(("tradeoffs", "Accuracy and cost", _tradeoffs(groups)))
    curves = "".join(f"<h3>{e(g.first_label)}</h3><img src=\"{png_uri(curves_png(g.first.history, g.label))}\" "
                     f"alt=\"training curves\">" for g in groups if g.first.history)
    sections.append(("curves", "Training curves", curves))
    classes = winner.first.metrics["classes"]
    matrices = "".join(
        f"<img src=\"{png_uri(confusion_png(g.first.metrics['confusion_matrix'], classes, g.first_label))}\" "
        f"alt=\"confusion matrix\">" for g in groups)
    cells = CellImages(thumbs)
    clickable = "".join(confusion_table(g.first_label, n, classes, g.first.predictions, cells)
                        for n, g in enumerate(groups))
    sections.append(("confusion", "Confusion matrices and per-class scores",
                     f"<div class=row>{matrices}</div>" + _per_class(groups)
                     + "<h3>Click a cell to see its test images</h3>" + clickable + cells.data_block()))
    wrong = "".join(f"<h3>{e(g.first_label)}</h3>{gallery(g.first, thumbs)}" for g in groups)
    sections.append(("gallery", "Most confidently wrong test images", wrong))
    overlays = [(g.first_label, gradcam(g.first, thumbs)) for g in groups]
    looked = "".join(f"<h3>{e(label)}</h3>{cards}" for label, cards in overlays if cards)
    if looked:
        sections.append(("gradcam", "Where each model looked (Grad-CAM)",
                         "<p class=note>Each entry's most confidently wrong test images and a few it got right: the "
                         "image as the model saw it, and the heat map of the class it predicted.</p>" + looked))
    if suspects_of(groups):
        sections.append(("issues", "Suspected label errors", issues(suspects_of(groups), thumbs)))
    clean = rerun_of(groups)
    if clean:
        sections.append(("rerun", "Trained and tested again without the suspected label errors", _rerun(groups, clean)))
    sections.append(("reproduce", "Configuration and environment",
                     "".join(f"<h3>{e(g.first_label)}</h3>{_reproduce(g.first)}" for g in groups)))
    if thumbs.note():
        sections.insert(-1, ("capped", "Images left out", f"<p class=note>{e(thumbs.note())}</p>"))
    thumbs.kept.save()
    body = "".join(f"<section id={sid}><h2>{e(heading)}</h2>{content}</section>" for sid, heading, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; \
script-src {script_policy()}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{CSS}</style></head>
<body><h1>{e(title)}</h1>
<p class=note>Generated by tl-showdown on {datetime.now():%Y-%m-%d %H:%M}.</p>{body}{script_tag()}</body></html>
"""


def winner_sentence(groups: list[Group], tests: list, strong=lambda label: f"**{label}**") -> str:
    """The winner, tied where the next has the same mean accuracy, and said not to be told apart from the runner-up
    where the image-by-image test finds no difference (`tests`, significance(groups): its first compares the top
    two). `strong` marks a label up (Markdown's bold by default)."""
    first, n_test = groups[0], groups[0].first.metrics.get("n_test")
    seeds = f" of {len(first.records)} seeds" if len(first.records) > 1 else ""
    accuracy = f"{'mean ' if seeds else ''}test accuracy {first.mean('accuracy'):.4f}{seeds} on {n_test} test images"
    tied = [g for g in groups if same_mean(g.mean("accuracy")) == same_mean(first.mean("accuracy"))]
    if len(tied) > 1:
        return f"Tied: {', '.join(strong(g.label) for g in tied)}, {accuracy}."
    versus = tests[0] if len(groups) > 1 and tests and isinstance(tests[0], Comparison) else None
    sentence = f"Winner: {strong(first.label)}, {accuracy}"
    if versus is not None and not versus.significant:
        sentence += f"; not distinguishable from {strong(groups[1].label)} on this data ({versus.tested()}, below)"
    if seeds:  # what ships is one model, not the mean (trained.choose_entry)
        served = min(first.records, key=lambda record: record.seed)
        sentence += (f". `showdown predict` and `export` serve its seed {served.seed} model, test accuracy "
                     f"{served.metrics['accuracy']:.4f}")
    return sentence + "."


def _html_strong(label: str) -> str:
    return f"<b>{html.escape(label)}</b>"


SIGNIFICANCE_NOTE = (
    f"Every pair among the {TOP_FOR_TESTS} best entries by mean test accuracy (and any tied with the last) is "
    "tested on the same test images: McNemar's exact test on the images one entry gets right and the other wrong "
    "(with several seeds, a sign-flip permutation test on each image's share of seeds right, so that it tests "
    "the mean accuracy; with --folds, the folds' pooled predictions), its p-value adjusted by Holm's method for "
    "the pairs tested; and a 95 % percentile bootstrap interval of the accuracy difference (2,000 resamples of the "
    "test images, seed 0). Accuracies' intervals are Wilson's, over the test images.")


def notes(groups: list[Group]) -> list[str]:
    """What the leaderboard's numbers leave out: unreadable images, training times that skipped the frozen pass."""
    out = []
    skipped = sorted({path for g in groups for path in g.first.extra.get("skipped", [])})
    if skipped:
        out.append(f"{len(skipped)} unreadable image file(s) were left out of every entry (listed in skipped.txt): "
                   + ", ".join(Path(path).name for path in skipped[:5]) + (", ..." if len(skipped) > 5 else "") + ".")
    if any(r.metrics.get("feature_cache_hit") for g in groups for r in g.records):
        out.append("'train s' counts the frozen backbone's pass over the images only where this run computed it; "
                   "entries whose features came from the cache show the head's training alone.")
    return out


def _leaderboard(groups: list[Group], tests: list) -> str:
    """The winner in a sentence, then the leaderboard table."""
    rows, shown, named = leaderboard_rows(groups), columns(groups), headings(groups)
    said = [suspects_note(groups)] * bool(suspects_of(groups)) + notes(groups)
    note = "".join(f"<p class=note>{html.escape(line)}</p>" for line in said)
    return (f"<p>{winner_sentence(groups, tests, _html_strong)}</p>"
            + _table([named.get(c, c) for c in shown], [[row[c] for c in shown] for row in rows],
                     numeric_from=2, numeric_until=len(shown) - ("weights" in shown), css="sortable") + note)


def _rerun(groups: list[Group], clean: list[Group]) -> str:
    """--drop-label-issues: each entry's rank and accuracy with all images and retrained without the suspect ones,
    whether the ranking changed, and the re-run's verdicts (on the same kept test images)."""
    after = {g.first.label: (rank, g) for rank, g in enumerate(clean, start=1)}
    rows = []
    for rank, group in enumerate(groups, start=1):
        new_rank, new = after.get(group.first.label, (None, None))
        rows.append([group.label, str(rank), _fmt(group.mean("accuracy"), ".4f"), _fmt(new_rank, "d"),
                     _fmt(new.mean("accuracy") if new else None, ".4f"),
                     str(new.first.metrics.get("n_test", "–")) if new else "–"])
    return (f"<p><b>{'The ranking is the same' if same_order(groups, clean) else 'The ranking changes'}</b> when "
            "every entry trains and is tested again without the images flagged as suspected label errors (the run "
            f"folder {WITHOUT_LABEL_ISSUES}/ holds that run, with its own report).</p>"
            + _table(["entry", "rank", "accuracy", "rank without", "accuracy without", "test images without"], rows,
                     numeric_from=1)
            + "<h3>Is the difference real without them?</h3>" + _verdicts(significance(clean)))


def _verdicts(tests: list) -> str:
    return "".join(
        f"<p class='verdict {'yes' if isinstance(t, Comparison) and t.significant else 'no'}'>"
        f"{html.escape(t.verdict() if isinstance(t, Comparison) else t)}</p>" for t in tests
    ) or "<p>Only one entry.</p>"


def leaderboard_html(run_dir: str | Path) -> str:
    """A run's leaderboard and verdicts as an HTML fragment (a notebook shows it for `Results`)."""
    groups = group_records(load_run(run_dir))
    tests = significance(groups)
    return (f"<div class=tl-showdown>{_leaderboard(groups, tests)}<p><b>Is the difference real?</b></p>"
            f"{_verdicts(tests)}<p class=note>Run folder: {html.escape(str(run_dir))}</p></div>")


def write_report(records: list[EntryRecord], out_dir: Path, title: str | None = None) -> tuple[Path, Path]:
    """report.html and report.md in `out_dir`."""
    groups = group_records(records)
    tests = significance(groups)
    dataset = records[0].dataset.get("name", "data")
    title = title or f"tl-showdown: {dataset}, {len(groups)} entr{'y' if len(groups) == 1 else 'ies'}"
    html_path, md_path = out_dir / REPORT_HTML, out_dir / REPORT_MD
    write_atomic(html_path, render_html(groups, tests, title), "the report")
    write_atomic(md_path, markdown(groups, tests, title), "the report")
    return html_path, md_path


def report_run(run_dir: str | Path) -> tuple[Path, Path]:
    return write_report(load_run(run_dir), Path(run_dir))
