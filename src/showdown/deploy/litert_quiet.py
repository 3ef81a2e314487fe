"""What LiteRT (TFLite) and its converter print on their own, kept off the command's output.

Seen with `showdown export --format tflite [--quantize int8]` and `showdown predict model.tflite` (LiteRT 2.1,
litert-torch 0.8), each on stderr around the command's one line:
- the interpreter's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", which its C++ code writes straight
  to the process's stderr (file descriptor 2) with no setting to turn it off: `stderr_lines_dropped` points
  descriptor 2 at a file while interpreters are made and run, then writes on every other line;
- the converter's C++ logs ("Estimated count of arithmetic ops", after "All log messages before
  absl::InitializeLog() ..."): TF_CPP_MIN_LOG_LEVEL=1 before it loads (a value the user set is kept);
- what TensorFlow's C++ libraries, which litert-torch loads, log as they load, before absl's logging is set up,
  where TF_CPP_MIN_LOG_LEVEL does not reach: "oneDNN custom operations are on ..." (TensorFlow 2.21 on CPUs where
  those are on by default, with AVX512-VNNI or AMX): `converter_quiet` drops those early INFO lines;
- torch's warning that an Enum registered with pytree (by torchao, which litert-torch imports) is deprecated.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

from showdown.fileio import descriptors_redirected

INTERPRETER_LINES = ("INFO: Created TensorFlow Lite XNNPACK delegate",)
EARLY_INFO_LINES = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                    "I0000 00:00:")  # absl's INFO lines before it is set up carry no date


@contextlib.contextmanager
def stderr_lines_dropped(prefixes: tuple[str, ...] = INTERPRETER_LINES):
    """Inside, what is written to file descriptor 2 goes to a file; afterwards its lines go on to sys.stderr,
    less those starting with one of `prefixes`."""
    try:
        sys.stderr.flush()
        os.fstat(2)
    except (OSError, ValueError):  # no descriptor 2 (closed): nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as caught:
        try:
            with descriptors_redirected((2,), caught):
                yield
                sys.stderr.flush()  # what Python wrote inside reaches the file before the lines are read
        finally:
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not line.startswith(prefixes)))


@contextlib.contextmanager
def converter_quiet():
    """Around importing litert-torch (and with it the converter's C++ libraries and torchao)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        with stderr_lines_dropped(EARLY_INFO_LINES):
            yield
    finally:
        pytree.setLevel(level)
