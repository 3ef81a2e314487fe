"""Errors meant for people: one line that says what is wrong and what to do.

The CLI prints a ShowdownError as that one line, without a traceback (``--debug`` shows it).
"""
import contextlib
import errno
import os
import re
import shutil
from pathlib import Path


class ShowdownError(Exception):
    """Base of every error a user can cause and fix."""

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the one line the command prints (%debug still has it)."""
        return [f"{type(self).__name__}: {self}"]


class DataError(ShowdownError):
    """The dataset path, layout or images are unusable."""


class DamagedFileError(DataError, ValueError):
    """A file of a run folder that is not what showdown wrote there (cut short, edited, overwritten). A ValueError
    too, so a reader that falls back on an unreadable file (as on a missing one) still does."""


class ModelError(ShowdownError):
    """An unknown backbone, or weights that cannot be found or loaded."""


class ConfigError(ShowdownError):
    """An invalid option or combination of options."""


class AccuracyGateError(ShowdownError):
    """--assert-accuracy-at-least failed: the results are written, the CI job should fail."""

    exit_code = 1


class DiskError(ShowdownError):
    """A write the disk refused (no space left, over quota, read-only, no permission). What was finished before it
    is kept; the run can resume once there is room. `cure`: what lets the write through (ROOM, WRITABLE, ...)."""

    exit_code = 1

    def __init__(self, message: str, *, cure: str = ""):
        super().__init__(message)
        self.cure = cure or ROOM

    @property
    def full(self) -> bool:
        return self.cure == ROOM


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a run whose folder can be resumed: a KeyboardInterrupt whose message says how to go on."""

    _render_traceback_ = ShowdownError._render_traceback_  # a notebook's interrupted cell: one line, not two traces


# Where the hints of errors point: the command line's flags in a command (cli.main), else the Python API's call.
_COMMAND_LINE: list[bool] = []


@contextlib.contextmanager
def on_command_line():
    _COMMAND_LINE.append(True)
    try:
        yield
    finally:
        _COMMAND_LINE.pop()


def under_torchrun() -> bool:
    """Whether this process is one of several a launcher started (torchrun sets WORLD_SIZE); light: no torch."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resume_call(run_dir) -> str:
    """How to go on with the run in `run_dir`, as the user started it (a command under torchrun: under torchrun)."""
    resume = f"showdown run --resume {run_dir}"
    flags = f"`torchrun --nproc_per_node=<as before> -m {resume}`" if under_torchrun() else f"`{resume}`"
    return flag_or_keyword(flags, f"`showdown.run(out={str(run_dir)!r}, resume=True)`")


def flag_or_keyword(flags: str, keywords: str) -> str:
    """A hint as the user gives options: `flags` in a command, `keywords` in a call of the Python API."""
    return flags if _COMMAND_LINE else keywords


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C is (startup.end_on_sigterm): the command stops and says so."""


def terminated(exc: BaseException) -> bool:
    """Whether `exc`, or what it was raised from, is SIGTERM's Terminated (the exit status is 143, not 130)."""
    while exc is not None:
        if isinstance(exc, Terminated):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# What the disk says, in words; any other OSError is a bug or a bad input, not the disk's doing.
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted",
               errno.EFBIG: "file too large for the file size limit (ulimit -f)"}
ROOM, WRITABLE = "free some space", "make it writable"
CURES = {errno.ENOSPC: ROOM, errno.EDQUOT: ROOM, errno.EFBIG: "raise the file size limit (ulimit -f)"}  # else WRITABLE


def disk_error(exc: BaseException, path, what: str) -> DiskError | None:
    """`exc` as a DiskError naming `path` and `what` was being written, or None when the disk is not the cause."""
    code = getattr(exc, "errno", None)
    reason = DISK_ERRNOS.get(code)
    return DiskError(" ".join(filter(None, [f"{reason}: could not write", what, str(path)])),
                     cure=CURES.get(code, WRITABLE)) if reason else None


def sqlite_disk_error(exc: BaseException, path, what: str) -> DiskError | None:
    """The same for SQLite (directly or through SQLAlchemy), which says a full or read-only disk in words."""
    text = str(exc).lower()
    # a full disk as SQLite meets it making its journal (WAL) files: "disk I/O error", not "disk is full"
    full = "disk is full" in text or ("disk i/o error" in text and _little_room(path))
    # SQLite says "readonly database" alike for a file without write permission or made immutable, a folder that
    # takes no journal file beside it, and a read-only mount
    reason = DISK_ERRNOS[errno.ENOSPC] if full else \
        "read-only (the file, its folder or the file system)" if "readonly database" in text else None
    return DiskError(f"{reason}: could not write {what} {path}", cure=ROOM if full else WRITABLE) if reason else None


def _little_room(path) -> bool:
    """Whether the folder of `path` has under a megabyte free (SQLite's journal files need more)."""
    try:
        return shutil.disk_usage(Path(path).parent).free < 2**20
    except OSError:
        return False


def last_line(exc: BaseException) -> str:
    """The one line a command ends with for an error or Ctrl-C, on the console and in its log file alike."""
    if isinstance(exc, KeyboardInterrupt):
        said = "terminated (SIGTERM)" if terminated(exc) else "interrupted"
        return said + (f": {exc}" if str(exc) else "")  # Interrupted: how to go on
    return "error: " + " ".join(line.strip() for line in str(exc).splitlines())


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line, for a fallback's log note (no traceback): its first line that says what
    went wrong, not where in a library's C++ it was raised (OpenVINO's "Exception from src/...cpp:117:")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = next((line for line in lines if not _CPP_SOURCE.fullmatch(line)), lines[0] if lines else "")
    return f"{type(exc).__name__}: {first[:limit]}"


_CPP_SOURCE = re.compile(r"Exception from \S+:\d+:?")
