"""What TensorFlow and LiteRT print on their own is kept off a command's stderr; every other line gets through,
also when what was wrapped fails."""
import os

import pytest

from showdown.deploy.litert_quiet import converter_quiet, stderr_lines_dropped


@pytest.fixture(autouse=True)
def _log_level(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # what converter_quiet sets, undone after the test


def test_importing_the_converter_drops_tensorflows_early_info_lines_only(capfd):
    """Written to descriptor 2, as TensorFlow's C++ code writes them (TensorFlow 2.21 on an AVX512-VNNI CPU)."""
    with converter_quiet():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796624965.931695   11999 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1796624965.931700   11999 op.cc:1] an error of its own\n")
        os.write(2, b"a line of anything else\n")
    assert capfd.readouterr().err == ("E0000 00:00:1796624965.931700   11999 op.cc:1] an error of its own\n"
                                      "a line of anything else\n")


def test_what_was_written_before_a_failure_is_still_shown(capfd):
    with pytest.raises(ImportError), stderr_lines_dropped():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"why the import failed\n")
        raise ImportError("no litert-torch")
    assert capfd.readouterr().err == "why the import failed\n"
