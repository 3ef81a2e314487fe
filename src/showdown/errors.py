"""Errors meant for people: one line that says what is wrong and what to do.

The CLI prints a ShowdownError as that one line, without a traceback (``--debug`` shows it).
"""


class ShowdownError(Exception):
    """Base of every error a user can cause and fix."""


class DataError(ShowdownError):
    """The dataset path, layout or images are unusable."""


class ModelError(ShowdownError):
    """An unknown backbone, or weights that cannot be found or loaded."""


class ConfigError(ShowdownError):
    """An invalid option or combination of options."""


class AccuracyGateError(ShowdownError):
    """--assert-accuracy-at-least failed: the results are written, the CI job should fail."""

    exit_code = 1


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line, for a fallback's log note (no traceback)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:limit]}"
