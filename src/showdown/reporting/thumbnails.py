"""Small JPEGs embedded in the report as data: URIs, so the page stays one offline file.

Every thumbnail counts against a budget per page: past it, further images are left out and the page says how
many, so a run over thousands of test images still gives a report that opens quickly.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

from showdown.data.images import load_rgb

SIDE = 112
BUDGET_BYTES = 8 * 2**20  # all thumbnails of one page together


class Thumbnails:
    """Thumbnails made once per path and counted against the page's budget."""

    def __init__(self, budget: int = BUDGET_BYTES, side: int = SIDE):
        self.budget, self.side = budget, side
        self.spent, self.left_out = 0, 0
        self._made: dict[tuple, str | None] = {}

    def uri(self, path: str, side: int | None = None) -> str | None:
        """The data: URI of a thumbnail of `path` (at most `side` px, default the page's); None when unreadable or
        over the budget (counted)."""
        key = (path, side)
        if key in self._made:
            return self._made[key]
        if self.spent >= self.budget:
            self.left_out += 1
            return None
        uri = thumbnail(path, side or self.side)
        self.spent += len(uri or "")
        self._made[key] = uri
        return uri

    def note(self) -> str:
        """One sentence for the page when the budget left images out, else ""."""
        if not self.left_out:
            return ""
        return (f"{self.left_out} thumbnail(s) left out: the page embeds at most {self.budget / 2**20:.0f} MB of "
                "images; the paths are in the run folder's predictions.csv.")


def thumbnail(path: str, side: int = SIDE) -> str | None:
    try:
        image = load_rgb(Path(path), min_side=side)  # a JPEG decoded at 1/2 to 1/8 scale: a thumbnail needs no more
    except (OSError, ValueError):
        return None
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
