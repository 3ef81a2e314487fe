"""Every table tl-showdown prints or writes goes through `render` (tabulate): as text or as Markdown."""
from __future__ import annotations

import statistics

import tabulate as tabulate_module
from tabulate import tabulate

from showdown.ranking import rank_key, ranked_setups

# The showdown table: (row key, heading, format).
SUMMARY_COLUMNS = [
    ("model", "model", "{}"), ("strategy", "strategy", "{}"), ("accuracy", "test acc", "{:.4f}"),
    ("loss", "loss", "{:.4f}"), ("macro_precision", "macro P", "{:.3f}"), ("macro_recall", "macro R", "{:.3f}"),
    ("macro_f1", "macro F1", "{:.3f}"), ("weighted_f1", "wtd F1", "{:.3f}"), ("train_seconds", "train s", "{:.1f}"),
    ("params_m", "params M", "{:.2f}"), ("weights", "weights", "{}"),
]


def render(header: list[str], rows: list[list], *, markdown: bool = False, right: set[int] = frozenset()) -> str:
    """Cells are shown as given (already formatted); columns whose index is in `right` are right-aligned."""
    if markdown:  # a "|" inside a cell would end it
        header = [str(h).replace("|", "\\|") for h in header]
        rows = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    align = ["right" if i in right else "left" for i in range(len(header))]
    padding, tabulate_module.MIN_PADDING = tabulate_module.MIN_PADDING, 0  # no extra padding around headings
    try:
        return tabulate(rows, headers=header, tablefmt="github" if markdown else "simple", disable_numparse=True,
                        colalign=align)
    finally:
        tabulate_module.MIN_PADDING = padding


def format_table(rows: list[dict], *, markdown: bool = False) -> str:
    """The showdown table, best test accuracy first. With --repeats, by the mean over the seeds, as the report
    ranks: each setup's seeds together, then a row of their means."""
    seeds = len({row.get("seed") for row in rows}) > 1  # --repeats: each row names its seed, 0 included
    shown = _with_means(rows) if seeds else sorted(rows, key=lambda r: rank_key(_label(r), [r["accuracy"]]))
    body = [[_cell(row, key, fmt, seeds) for key, _, fmt in SUMMARY_COLUMNS] for row in shown]
    numeric = {i for i, (_, _, fmt) in enumerate(SUMMARY_COLUMNS) if fmt != "{}"}
    return render([title for _, title, _ in SUMMARY_COLUMNS], body, markdown=markdown, right=numeric)


def _label(row: dict) -> str:
    return f"{row['model']} / {row['strategy']}"


def _with_means(rows: list[dict]) -> list[dict]:
    """Each setup's seeds (in seed order), then a row of their means where it has several; best mean first."""
    shown = []
    for _, setup in ranked_setups(rows, _label, lambda row: row["accuracy"]):
        seeds = sorted(setup, key=lambda r: r["seed"])
        shown += seeds
        if len(seeds) > 1:  # a column some seed lacks is no mean: "-", not the first seed's value
            means = {key: statistics.fmean(r[key] for r in seeds) if all(r.get(key) is not None for r in seeds)
                     else None for key, _, fmt in SUMMARY_COLUMNS if fmt != "{}"}
            shown.append({**seeds[0], **means, "seed": None,
                          "strategy": f"{seeds[0]['strategy']} (mean of {len(seeds)})"})
    return shown


def _cell(row: dict, key: str, fmt: str, seeds: bool) -> str:
    if row.get(key) is None:
        return "-"
    return fmt.format(row[key]) + (f" (seed {row['seed']})" if key == "strategy" and seeds and row["seed"] is not None
                                   else "")


def format_markdown(rows: list[dict]) -> str:
    return format_table(rows, markdown=True) + "\n"
