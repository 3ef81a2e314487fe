"""What makes the report clickable, still one offline file: a sortable leaderboard, and confusion matrices whose
cells show their test images when clicked.

The one inline script is allowed by its hash in the page's Content-Security-Policy (`script_policy`); nothing
else may run, and every request stays forbidden. Each test image is embedded once, as a small JPEG in a JSON
data block (counted against the page's thumbnail budget); a cell names its images by number, so three entries
share one copy of each image.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path

from showdown.reporting.thumbnails import Thumbnails

CELL_SIDE = 64  # thumbnails shown for a clicked cell

SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.tHead.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
    const ascending = th.dataset.order !== "asc";
    table.tHead.querySelectorAll("th").forEach(h => delete h.dataset.order);
    th.dataset.order = ascending ? "asc" : "desc";
    const key = row => { const text = row.cells[col].textContent.trim(); const n = parseFloat(text);
                         return isNaN(n) ? text : n; };
    const rows = [...table.tBodies[0].rows].sort((a, b) => {
      const x = key(a), y = key(b);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order; });
    rows.forEach(row => table.tBodies[0].appendChild(row));
  }));
}
const block = document.getElementById("cell-images");
const images = block ? JSON.parse(block.textContent) : {uris: [], names: []};
for (const cell of document.querySelectorAll("td[data-images]")) {
  cell.addEventListener("click", () => {
    const view = document.getElementById(cell.dataset.view);
    const title = document.createElement("h4");
    title.textContent = cell.dataset.title;
    const gallery = document.createElement("div");
    gallery.className = "gallery";
    let missing = 0;
    for (const id of cell.dataset.images.split(" ").filter(Boolean)) {
      const figure = document.createElement("figure");
      const uri = images.uris[Number(id)];
      if (uri) { const img = document.createElement("img"); img.src = uri; img.alt = images.names[Number(id)];
                 figure.appendChild(img); } else { missing += 1; }
      const caption = document.createElement("figcaption");
      caption.textContent = images.names[Number(id)];
      figure.appendChild(caption);
      gallery.appendChild(figure);
    }
    view.replaceChildren(title, gallery);
    if (missing) { const note = document.createElement("p"); note.className = "note";
                   note.textContent = missing + " image(s) not embedded: the page's size cap was reached.";
                   view.appendChild(note); }
  });
}
"""


def script_policy() -> str:
    """The CSP source that allows exactly SCRIPT."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode() + "'"


def script_tag() -> str:
    return f"<script>{SCRIPT}</script>"


class CellImages:
    """Test images numbered once for every clickable matrix of the page."""

    def __init__(self, thumbs: Thumbnails):
        self.thumbs = thumbs
        self.ids: dict[str, int] = {}

    def id(self, path: str) -> int:
        return self.ids.setdefault(path, len(self.ids))

    def data_block(self) -> str:
        """The JSON data block of every numbered image (null where the size cap left it out)."""
        paths = sorted(self.ids, key=self.ids.get)
        data = {"uris": [self.thumbs.uri(p, CELL_SIDE) for p in paths], "names": [Path(p).name for p in paths]}
        text = json.dumps(data).replace("<", "\\u003c")  # a file name cannot end the block early
        return f'<script type="application/json" id="cell-images">{text}</script>'


def confusion_table(label: str, number: int, classes: list[str], predictions: list[dict], cells: CellImages) -> str:
    """A confusion matrix of counts (rows: true class, columns: predicted) whose non-empty cells show their test
    images below the table when clicked."""
    e = html.escape
    index = {name: i for i, name in enumerate(classes)}
    members: dict[tuple[int, int], list[int]] = {}
    for p in predictions:
        if p["true"] in index and p["pred"] in index:
            members.setdefault((index[p["true"]], index[p["pred"]]), []).append(cells.id(p["path"]))
    view = f"cell-view-{number}"
    head = "<th>true \\ predicted</th>" + "".join(f"<th>{e(c)}</th>" for c in classes)
    rows = []
    for t, true in enumerate(classes):
        tds = []
        for p, pred in enumerate(classes):
            ids = members.get((t, p), [])
            kind = "hit" if t == p else "miss"
            if not ids:
                tds.append("<td class=num>0</td>")
                continue
            title = f"{label}: true {true}, predicted {pred} ({len(ids)} image{'s' if len(ids) > 1 else ''})"
            tds.append(f"<td class='num cell {kind}' data-view={view} data-title=\"{e(title)}\" "
                       f"data-images=\"{' '.join(map(str, ids))}\">{len(ids)}</td>")
        rows.append(f"<tr><th>{e(true)}</th>{''.join(tds)}</tr>")
    return (f"<h3>{e(label)}</h3><table class=matrix><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table><div class=cell-view id={view}></div>")
