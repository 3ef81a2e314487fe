"""What `showdown predict` and `showdown explain` read: image files, folders and globs, and the true labels that
class-named sub-folders give."""
from __future__ import annotations

import glob
import logging
import os
import unicodedata
from pathlib import Path

from showdown.data.folder import identity, image_name, images_in
from showdown.data.formats import IMAGE_SUFFIXES, check_readable
from showdown.errors import DataError

log = logging.getLogger(__name__)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image files, folders (searched recursively, hidden files skipped) and glob patterns, in a stable order."""
    files: list[Path] = []
    passed_over: list[Path] = []
    for text in inputs:
        pattern = glob.has_magic(text) and not os.path.lexists(text)  # "photo[1].jpg" that exists is that file
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))] if pattern else [Path(text)]
        if not matches:
            raise DataError(f"'{text}' matches no files")
        for path in matches:
            if path.is_dir():
                files += images_in(path)
            elif pattern and path.is_file() and not image_name(path.name):  # passed over, as in a folder
                passed_over.append(path)
            elif path.is_file():
                files.append(path)
            elif path.exists():  # a device, a socket, a pipe
                raise DataError(f"{path} is neither an image file nor a folder")
            elif path.is_symlink() and pattern:  # a glob's match: passed over, as in a folder
                log.warning("%s is a broken symbolic link (to %s), skipped", path, os.readlink(path))
            elif path.is_symlink():
                raise DataError(f"{path} is a broken symbolic link (to {os.readlink(path)}, which does not exist)")
            else:
                raise DataError(f"{path} does not exist")
    if passed_over:
        log.warning("%d file(s) the patterns matched have no image suffix and were passed over, e.g. %s",
                    len(passed_over), passed_over[0])
    unique, seen = [], set()
    for path in files:  # each image once, however it was reached (twice in the inputs, a link looping back)
        try:  # device and inode, one stat each: resolving every path took 9x as long (160 ms for TF-Flowers)
            same = identity(path)
        except OSError:  # gone since it was listed: kept, and said unreadable when decoded
            same = (str(path),)
        if same not in seen:  # a hidden file is read where it was named (folders and globs pass over hidden ones)
            seen.add(same)
            unique.append(path)
    files = unique
    check_readable(files, ", ".join(inputs))  # a HEIC file given by name, without pillow-heif: said, not skipped
    if not files:
        raise DataError(f"no images found in {', '.join(inputs)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def folder_labels(files: list[Path], inputs: list[str], classes: list[str]) -> tuple[list[str | None], str | None]:
    """True labels from the input folders: a class-named sub-folder of one (`test/roses/x.jpg`), or an input folder
    named after a class itself (`test/roses`); and a warning when the sub-folders do not name the model's classes
    (a model trained on other classes). Names match in Unicode's composed form: macOS writes "Rosé" decomposed
    (e + a combining accent), Linux and Windows as they are given, and a model trained on one meets folders of the
    other."""
    roots = [Path(t) for t in inputs if Path(t).is_dir()]
    known = {_composed(name): name for name in classes}
    labels: list[str | None] = []
    seen_folders = set()
    for path in files:
        root = next((r for r in roots if r in path.parents), None)
        below = path.relative_to(root).parts[:-1] if root else ()
        if below and _composed(below[0]) in known:
            labels.append(known[_composed(below[0])])
        elif root is not None and _composed(_name(root)) in known:
            labels.append(known[_composed(_name(root))])
        else:
            labels.append(None)
            if below:
                seen_folders.add(below[0])
    unknown = sorted(seen_folders)
    warning = None
    if unknown:
        warning = (f"input folder(s) {', '.join(unknown[:5])} are not classes of this model, which knows only "
                   f"{', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}; "
                   "their images get the model's classes")
    return labels, warning


def _composed(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _name(folder: Path) -> str:
    """The folder's own name, also where it is given as "." or "..": os.path.abspath, which follows no link."""
    return os.path.basename(os.path.abspath(folder))
