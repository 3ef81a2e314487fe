"""Small JPEGs embedded in the report as data: URIs, so the page stays one offline file.

Every thumbnail counts against a budget per page: past it, further images are left out and the page says how
many, so a run over thousands of test images still gives a report that opens quickly.

Thumbnails are kept in the cache (`thumbnails/`), one bundle per image folder and size: a report over the same
images, a re-run's or `showdown report`'s, reads its few bundles instead of decoding and encoding every image
again (0.4-0.6 s for TF-Flowers' 551 test photos on the 2-core CPU, up to the budget's ~2,000 images for larger
test sets). An image is made again when its size or modification time changed; a bundle whose bytes do not match
its checksum is discarded (cache.py).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

from showdown.cache import kind_folder, read_named, write_named
from showdown.data.images import load_rgb

SIDE = 112
BUDGET_BYTES = 8 * 2**20  # all thumbnails of one page together


class Thumbnails:
    """Thumbnails made once per path and counted against the page's budget."""

    def __init__(self, budget: int = BUDGET_BYTES, side: int = SIDE, kept: Bundles | None = None):
        self.budget, self.side = budget, side
        self.spent, self.left_out = 0, 0
        self._made: dict[tuple, str | None] = {}
        self.kept = kept or Bundles(kind_folder("thumbnails"))

    def uri(self, path: str, side: int | None = None, keep: bool = True) -> str | None:
        """The data: URI of a thumbnail of `path` (at most `side` px, default the page's); None when unreadable or
        over the budget (counted). `keep`: from and into the cache (not for pictures a run makes anew)."""
        key = (path, side)
        if key in self._made:
            return self._made[key]
        if self.spent >= self.budget:
            self.left_out += 1
            return None
        uri = self.kept.get(path, side or self.side) if keep else thumbnail(path, side or self.side)
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


class Bundles:
    """Thumbnails on disk: one JSON bundle per (image folder, side), {file name: [size, mtime_ns, uri]}."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._open: dict[tuple[str, int], dict] = {}
        self._changed: set[tuple[str, int]] = set()

    def get(self, path: str, side: int) -> str | None:
        """The thumbnail of `path` from its bundle when the file is unchanged, else made (and kept at `save`)."""
        try:
            where = Path(path).resolve()
            facts = where.stat()
        except OSError:
            return None
        bundle_key = (str(where.parent), side)
        bundle = self._open.get(bundle_key)
        if bundle is None:
            bundle = self._open[bundle_key] = read_named(self.folder, _name(bundle_key), ".json",
                                                         lambda _, data: json.loads(data)) or {}
        stamp = [facts.st_size, facts.st_mtime_ns]
        kept = bundle.get(where.name)
        if kept and kept[:2] == stamp:
            return kept[2]
        uri = thumbnail(path, side)
        if uri:
            bundle[where.name] = [*stamp, uri]
            self._changed.add(bundle_key)
        return uri

    def save(self) -> None:
        """Write the bundles that gained thumbnails, each replacing its older version."""
        for bundle_key in self._changed:
            name, bundle = _name(bundle_key), self._open[bundle_key]
            for gone in [file for file in bundle if not (Path(bundle_key[0]) / file).exists()]:
                del bundle[gone]  # images deleted since they were kept
            written = write_named(self.folder, name, ".json", json.dumps(bundle).encode())
            for entry in self.folder.glob(f"{name}-*.json") if written else ():
                if entry != written:
                    entry.unlink(missing_ok=True)
        self._changed.clear()


def _name(bundle_key: tuple[str, int]) -> str:
    return hashlib.sha256(json.dumps(bundle_key).encode()).hexdigest()[:24]
