"""The report's pictures of test images: the most confidently wrong, the suspected label errors, and where each
model looked (Grad-CAM overlays the run wrote into the entry folders). Every picture is an embedded thumbnail
counted against the page's budget (thumbnails.py)."""
from __future__ import annotations

import csv
import html
from pathlib import Path

from showdown.reporting.label_issues import Suspects
from showdown.reporting.run_records import EntryRecord
from showdown.reporting.thumbnails import Thumbnails
from showdown.run_schema import GRADCAM_DIR, GRADCAM_INDEX  # noqa: F401  (the names explanations.py imports)

GRADCAM_SIDE = 336  # an overlay is the image and its heat map side by side
GALLERY_SIZE = 8
ISSUES_SHOWN = 20  # the most suspect labels, with thumbnails


def card(path: str, caption: str, thumbs: Thumbnails, side: int | None = None, name: str | None = None,
         keep: bool = True) -> str:
    """A thumbnail with its caption (already escaped) and the file name; `keep`: see Thumbnails.uri."""
    e = html.escape
    name = name or Path(path).name
    uri = thumbs.uri(path, side, keep)
    picture = f'<img src="{uri}" alt="{e(name)}">' if uri else "<div class=missing>image not shown</div>"
    return f"<figure>{picture}<figcaption>{caption}<br><small>{e(name)}</small></figcaption></figure>"


def gallery(record: EntryRecord, thumbs: Thumbnails) -> str:
    wrong = [p for p in record.predictions if p["true"] != p["pred"]]
    wrong.sort(key=lambda p: -float(p["confidence"]))
    if not wrong:
        return "<p>No test image was misclassified.</p>"
    e = html.escape
    cards = [card(p["path"], f"true <b>{e(p['true'])}</b><br>predicted <b>{e(p['pred'])}</b> "
                             f"({float(p['confidence']):.0%})", thumbs) for p in wrong[:GALLERY_SIZE]]
    return f"<div class=gallery>{''.join(cards)}</div>"


def issues(suspects: Suspects, thumbs: Thumbnails) -> str:
    """The most suspect labels, given against suggested: of the test split, then of training and validation."""
    e = html.escape
    facts = suspects.summary
    per_split = ", ".join(f"{split} {c['flagged']} of {c['images']}" for split, c in facts["per_split"].items())
    head = (f"<p>cleanlab's <code>find_label_issues</code> on out-of-fold probabilities (K heads on "
            f"{e(facts['backbone'])} features, each image scored by a head that never saw it) flags "
            f"{facts['flagged']} image(s): {e(per_split)}. All of them, ranked, are in "
            "<code>label_issues.csv</code>. Suspect, not proven: look at them.</p>")
    galleries = []
    # The test split's first: its labels decide the verdicts. Training's are far more numerous and would hide them.
    for title, splits in (("Test images", {"test"}), ("Training and validation images", {"train", "val"})):
        rows = [row for row in suspects.rows if row["split"] in splits][:ISSUES_SHOWN]
        cards = [card(row["path"], f"#{row['rank']} {e(row['split'])}<br>given <b>{e(row['given'])}</b><br>"
                                   f"suggested <b>{e(row['suggested'])}</b>", thumbs) for row in rows]
        if cards:
            galleries.append(f"<h3>{title}: the {len(cards)} most suspect</h3>"
                             f"<div class=gallery>{''.join(cards)}</div>")
    return head + "".join(galleries)


def gradcam(record: EntryRecord, thumbs: Thumbnails) -> str:
    """The entry's Grad-CAM overlays with their verdicts, or "" when the run wrote none."""
    folder = Path(record.run) / record.folder / GRADCAM_DIR
    index = folder / GRADCAM_INDEX
    if not index.is_file():
        return ""
    e = html.escape
    with index.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cards = [card(str(folder / row["png"]), f"{'WRONG' if row['kind'] == 'wrong' else 'right'}: true "
                  f"<b>{e(row['true'])}</b>, predicted <b>{e(row['pred'])}</b> ({float(row['confidence']):.0%})",
                  thumbs, GRADCAM_SIDE, Path(row["path"]).name, keep=False) for row in rows]  # this run's own
    return f"<div class='gallery wide'>{''.join(cards)}</div>"
