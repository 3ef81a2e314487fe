"""How fair was the showdown? The report's checks that every entry had the same test images, the same tuning
budget, the same augmentation and the same input size (or which differ), and what each search and each fold
found.

Plain data in, plain sentences and small tables out: report.py renders them as HTML and Markdown.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from showdown.config.strategy import Strategy
from showdown.reporting.run_records import EntryRecord


@dataclass
class Check:
    name: str
    same: bool
    text: str
    caveat: str = ""  # the same for all, but not the fair kind (nobody was tuned)


def _setup(record: EntryRecord) -> dict:
    """metrics.json "setup", with what older runs recorded elsewhere."""
    setup = dict(record.metrics.get("setup") or {})
    setup.setdefault("evaluation", record.dataset.get("split", "unknown split"))
    setup.setdefault("augment", record.config.get("augment", "none"))
    setup.setdefault("tta", record.config.get("tta", "none"))
    setup.setdefault("test_images", len(record.predictions))
    setup.setdefault("tuning", (record.metrics.get("tuning") or {}).get("budget"))
    return setup


def _test_images(record: EntryRecord) -> str:
    paths = sorted(p["path"] for p in record.predictions)
    return hashlib.sha256("\n".join(paths).encode(errors="surrogateescape")).hexdigest()


def _budget_text(budget: dict | None, with_space: bool = False) -> str:
    if not budget:
        return "not tuned"
    amount = " or ".join(part for part in (f"{budget['trials']} trials" if budget.get("trials") else "",
                                           f"{budget['minutes']:g} minutes" if budget.get("minutes") else "") if part)
    return f"{amount} over {', '.join(budget['space'])}" if with_space else amount


def _by_value(labels: list[str], values: list[str]) -> str:
    groups: dict[str, list[str]] = {}
    for label, value in zip(labels, values):
        groups.setdefault(value, []).append(label)
    return "; ".join(f"{value}: {', '.join(names)}" for value, names in groups.items())


def checks(records: list[EntryRecord], labels: list[str] | None = None) -> list[Check]:
    """One record per entry (first seed): same test images, tuning budget, augmentation, input size? `labels` name
    the entries where their own labels would not tell them apart (entries of several runs)."""
    labels = labels or [r.label for r in records]
    setups = [_setup(r) for r in records]
    out = []

    images = [_test_images(r) for r in records]
    evaluation = setups[0]["evaluation"]
    if len(set(images)) == 1:
        out.append(Check("test images", True, f"every entry was tested on the same {setups[0]['test_images']} "
                                               f"images ({evaluation})"))
    else:
        out.append(Check("test images", False, "the entries were tested on different images: " + _by_value(
            labels, [f"{s['test_images']} images ({s['evaluation']})" for s in setups])))

    # The same amount for every entry, and the same space for every entry of a strategy (finetune's space adds
    # its own two parameters to the head's).
    amounts = [_budget_text(s["tuning"]) for s in setups]
    spaces: dict[str, set] = {}
    for record, setup in zip(records, setups):
        kind = Strategy.parse(record.strategy).kind
        spaces.setdefault(kind, set()).add(tuple((setup["tuning"] or {}).get("space", ())))
    if len(set(amounts)) > 1 or any(len(s) > 1 for s in spaces.values()):
        budgets = [_budget_text(s["tuning"], with_space=True) for s in setups]
        out.append(Check("tuning budget", False, "the tuning budgets differ: " + _by_value(labels, budgets)))
    elif setups[0]["tuning"]:
        per_strategy = "; ".join(f"{strategy}: {', '.join(next(iter(space)))}" for strategy, space in spaces.items())
        said = (f"every entry searched its hyper-parameters with the same budget, {amounts[0]}, on its validation "
                f"split (space: {per_strategy})")
        tuning = [r.metrics.get("tuning") or {} for r in records]
        ran = [len(t.get("trials") or []) for t in tuning]
        # Counts tell apart only searches of their own under minutes alone: --tune N runs N each, and a shared
        # study (--tune-storage) lists every process's trials.
        timed = not setups[0]["tuning"].get("trials") and not any(t.get("study") for t in tuning)
        if len(set(ran)) == 1 or not timed:
            out.append(Check("tuning budget", True, said))
        else:  # a time budget: a slower backbone runs fewer trials, and one may run none
            counts = _by_value(labels, [f"{n} trials" for n in ran])
            out.append(Check("tuning budget", 0 not in ran, f"{said}, but not the same search: {counts}",
                             caveat="" if 0 in ran else "the same minutes of search, not the same number of trials "
                                                         "(--tune N gives each the same)"))
    else:
        out.append(Check("tuning budget", True, "no entry was tuned: all trained with the same hand-set "
                                                "hyper-parameters, which may suit some backbones better than "
                                                "others (--tune N gives each the same search)",
                         caveat="none was tuned (one hand-set configuration for all)"))

    augments = [f"augment {s['augment']}, test-time {s['tta']}" for s in setups]
    out.append(Check("augmentation", len(set(augments)) == 1,
                     f"every entry: {augments[0]}" if len(set(augments)) == 1
                     else "the augmentation differs: " + _by_value(labels, augments)))

    sizes = [f"{s['input_size']} px" if s.get("input_size") else "unknown" for s in setups]
    out.append(Check("input size", len(set(sizes)) == 1,
                     f"every entry saw {sizes[0]} images" if len(set(sizes)) == 1 else
                     "the input size differs (each backbone's own, from its weights; --image-size sets one for "
                     "all): " + _by_value(labels, sizes)))
    return out


def verdict(found: list[Check]) -> str:
    differ = [c.name for c in found if not c.same]
    same = [c.name for c in found if c.same and not c.caveat]
    caveats = "".join(f"; {c.caveat}" for c in found if c.caveat)
    if not differ and not caveats:
        return "Fair on every count: " + ", ".join(same) + " were the same for every entry."
    if not differ:
        return "The same " + ", ".join(same) + " for every entry" + caveats + "."
    return f"Differs in {', '.join(differ)}" + (f"; the same {', '.join(same)}" if same else "") + caveats + "."


def searches(record: EntryRecord) -> list[tuple[str, dict]]:
    """(label, search record) per search of an entry: one, or one per fold."""
    tuning = record.metrics.get("tuning")
    if not tuning:
        return []
    if "folds" in tuning:
        return [(f"fold {i}", s) for i, s in enumerate(tuning["folds"], start=1) if s]
    return [("", tuning)]


def search_rows(record: EntryRecord) -> list[list[str]]:
    rows = []
    for label, search in searches(record):
        best = search.get("best_val_loss")
        values = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in search["values"].items())
        rows.append([label or "all", f"{len(search['trials'])} ({search['n_pruned']} pruned)",
                     f"{search['default_val_loss']:.4f}", "–" if best is None else f"{best:.4f}",
                     values or search["chosen"], f"{search['seconds']:.1f}"])
    return rows


SEARCH_HEADER = ["search", "trials", "val loss, default config", "val loss, best sampled trial", "chosen values",
                 "search s"]


def fold_rows(labelled: list[tuple[str, EntryRecord]]) -> tuple[list[str], list[list[str]]]:
    """Per-fold test accuracy of every cross-validated (label, record), with mean ± std and the pooled figure."""
    folded = [(label, r) for label, r in labelled if r.metrics.get("fold_metrics")]
    if not folded:
        return [], []
    k = max(len(r.metrics["fold_metrics"]) for _, r in folded)
    header = ["entry", *[f"fold {i}" for i in range(1, k + 1)], "mean ± std", "pooled (all images)"]
    rows = []
    for label, r in folded:
        m = r.metrics
        rows.append([label, *[f"{f['accuracy']:.4f}" for f in m["fold_metrics"]],
                     f"{m['fold_accuracy_mean']:.4f} ± {m['fold_accuracy_std']:.4f}", f"{m['accuracy']:.4f}"])
    return header, rows
