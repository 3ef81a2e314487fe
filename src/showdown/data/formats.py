"""Which image files showdown reads: Pillow's formats, plus the phone formats, HEIC/HEIF through pillow-heif
(iPhones save it by default) and AVIF through Pillow's own codec where it has one (newer Android phones, the web).

Importing this module registers the openers, in every process that decodes (DataLoader workers import it with
data/images.py). A phone format whose codec is missing is still recognised as an image, so a folder of them is a
one-line error naming the package to install, never a folder silently found empty.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, features

from showdown.errors import DataError

COMMON_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
HEIF_SUFFIXES = {".heic", ".heif", ".hif"}
AVIF_SUFFIXES = {".avif"}
IMAGE_SUFFIXES = COMMON_SUFFIXES | HEIF_SUFFIXES | AVIF_SUFFIXES


def _register() -> dict[str, str]:
    """Register the phone-format openers; suffix -> why files of it cannot be read here (absent: they can)."""
    try:
        import pillow_heif
    except ImportError:
        pillow_heif = None
    missing = {}
    if pillow_heif is not None:
        pillow_heif.register_heif_opener()
    else:
        missing.update(dict.fromkeys(HEIF_SUFFIXES, "HEIC/HEIF images need pillow-heif: pip install pillow-heif"))
    if not features.check("avif"):
        if pillow_heif is not None and hasattr(pillow_heif, "register_avif_opener"):  # pillow-heif before 1.0
            pillow_heif.register_avif_opener()
        else:
            missing.update(dict.fromkeys(AVIF_SUFFIXES, "AVIF images need a Pillow with AVIF support (Pillow 11.3 "
                                                        "or later from PyPI): pip install -U pillow"))
    return missing


_MISSING = _register()


def opens_as_image(path: Path) -> bool:
    """Whether Pillow (with the phone formats' openers) takes `path` for an image by its header; nothing is decoded
    (a fraction of a millisecond)."""
    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True  # an image over Pillow's pixel limit (data/images.py reads such a JPEG in draft mode)
    except (OSError, ValueError, SyntaxError):  # not an image, empty, gone, no permission
        return False


def check_readable(files: list[Path], where: Path | str) -> None:
    """A DataError when some of `files` are of a type no installed codec reads."""
    unreadable = [path for path in files if path.suffix.lower() in _MISSING]
    if unreadable:
        raise DataError(f"{len(unreadable)} image(s) in {where}, e.g. {unreadable[0].name}, cannot be read here: "
                        f"{_MISSING[unreadable[0].suffix.lower()]}")
