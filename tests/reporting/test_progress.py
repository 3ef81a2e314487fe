"""Progress on the long steps: a plain line per epoch in a pipe or a log, an updating bar on a terminal, nothing but
the table with --quiet; and the notebook API's keyword arguments checked exactly as the flags are."""
import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

from showdown import ShowdownError
from showdown.cli import main

# Two entries (two seeds of one backbone: its features are computed once), three epochs each, few images.
TWO_ENTRIES = ["run", "--data", "demo", "--models", "efficientnet_lite0", "--repeats", "2", "--epochs", "3",
               "--max-per-class", "4", "--image-size", "160", "--workers", "0", "--no-report", "--no-record"]
EPOCH_LINE = re.compile(r"epoch (\d+)/3 +train loss \d+\.\d+ acc \d\.\d+ +val loss \d+\.\d+ acc \d\.\d+ +\d+\.\d s "
                        r"+lr \S+ +no better val loss for \d/5")


def test_a_pipe_gets_one_line_per_epoch_and_quiet_gets_none(tmp_path, capsys):
    assert main([*TWO_ENTRIES, "--out", str(tmp_path / "loud")]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if EPOCH_LINE.search(line)]
    assert [EPOCH_LINE.search(line).group(1) for line in lines] == ["1", "2", "3"] * 2, err
    assert all("(seed 0)" in line for line in lines[:3]) and all("(seed 1)" in line for line in lines[3:])
    assert "[1/2] efficientnet_lite0/head (seed 0)" in err and re.search(r"\[2/2\] .*left", err), err
    assert "test acc" in out  # the table

    log = tmp_path / "progress.log"
    assert main([*TWO_ENTRIES, "--out", str(tmp_path / "quiet"), "--quiet", "--log-file", str(log)]) == 0
    out, err = capsys.readouterr()
    assert not EPOCH_LINE.search(out + err) and "[1/2]" not in err and "data: demo" not in out
    assert "test acc" in out and "efficientnet_lite0" in out  # errors and the final table only
    assert len([line for line in log.read_text().splitlines() if EPOCH_LINE.search(line)]) == 6  # the log: always


def test_a_terminal_sees_the_bar_update(tmp_path):
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))  # a fresh pty is 0 wide
    process = subprocess.Popen([sys.executable, "-m", "showdown", *TWO_ENTRIES, "--repeats", "1",
                                "--out", str(tmp_path / "run")], stdin=subprocess.DEVNULL, stdout=terminal,
                               stderr=terminal)
    os.close(terminal)
    screen = b""
    while True:  # read until the child closes the terminal
        ready, _, _ = select.select([controller], [], [], 300)
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child has gone
            break
        if not chunk:
            break
        screen += chunk
    assert process.wait(timeout=60) == 0
    text = screen.decode(errors="replace")
    bar = [frame for frame in re.split(r"[\r\n]", text) if "efficientnet_lite0/head [head]" in frame]
    shown = [re.search(r"(\d)/3 \[", frame).group(1) for frame in bar if re.search(r"(\d)/3 \[", frame)]
    assert {"1", "2", "3"} <= set(shown), text[-3000:]  # the same bar, redrawn epoch by epoch
    assert "val loss" in text and not EPOCH_LINE.search(text)  # a bar, not the pipe's lines


def test_a_terminal_that_gives_no_width_gets_lines_not_an_invisible_bar():
    from showdown.bars import bar_class

    controller, terminal = pty.openpty()
    with os.fdopen(terminal, "w") as stream:
        assert bar_class(stream) is None  # a fresh pty is 0 wide: tqdm would draw nothing there
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        assert bar_class(stream) is not None
    os.close(controller)


def test_a_phase_bar_gives_the_rate_of_its_epochs_from_the_first():
    """The bar is made once its first epoch has ended; it showed that epoch at tens of thousands per second."""
    from showdown.reporting.progress import Reporter

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    with os.fdopen(terminal, "w") as stream:
        reporter = Reporter(lambda *_: None, stream=stream)
        reporter.entry_label = "m/head"
        reporter.epoch(dict(phase="head", epoch=1, epochs=3, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5,
                            seconds=2.0, lr=1e-3, since_best=0, patience=5, stopped=False))
        rate = reporter._bar.format_dict["rate"] or reporter._bar.n / reporter._bar.format_dict["elapsed"]
        assert 0.4 < rate < 0.51, rate  # an epoch each 2 s
        reporter.close(None)
    os.close(controller)


@pytest.mark.parametrize("keywords, flags", [(dict(lr=-1), ["--lr", "-1"]),
                                             (dict(head_dropout=1.5), ["--head-dropout", "1.5"]),
                                             (dict(strategy=["head", "fine"]), ["--strategy", "head,fine"]),
                                             (dict(track=["mlflow", "neptune"]), ["--track", "mlflow,neptune"])])
def test_keywords_fail_as_the_flags_do(keywords, flags, capsys):
    import showdown

    assert main(["run", "--data", "demo", *flags]) == 2
    cli_line = capsys.readouterr().err.strip()
    with pytest.raises(ShowdownError) as caught:
        showdown.run(data="demo", **keywords)
    assert "error: " + str(caught.value) == cli_line


def test_an_unknown_keyword_is_one_line_with_a_suggestion():
    import showdown

    with pytest.raises(ShowdownError, match=r"unknown option\(s\) epoch \(did you mean epochs\?\)"):
        showdown.run(data="demo", epoch=3)


def test_a_log_file_ends_with_the_line_the_command_ends_with(tmp_path):
    """An error or Ctrl-C is the log's last line too, as on the console; a run that ends well adds none."""
    from showdown.errors import AccuracyGateError, Interrupted
    from showdown.reporting.progress import Reporter

    for ended, last in ((AccuracyGateError("best test accuracy 0.4 is below 0.9"), "error: best test accuracy 0.4 "
                         "is below 0.9"), (Interrupted("finished entries are kept in r"), "interrupted: finished "
                         "entries are kept in r"), (None, "data: demo")):
        log = tmp_path / "progress.log"
        log.unlink(missing_ok=True)
        reporter = Reporter(lambda *_: None, log_file=str(log))
        reporter.echo("data: demo")
        reporter.close(ended)
        assert log.read_text().splitlines()[-1] == last


def test_a_bar_tqdm_was_told_to_disable_is_no_error(monkeypatch):
    """TQDM_DISABLE=1 (CI, Hugging Face setups) makes bars without a clock: the run goes on."""
    import functools

    from tqdm import tqdm

    from showdown.reporting import progress

    monkeypatch.setattr(progress, "bar_class", lambda stream: functools.partial(tqdm, disable=True))
    reporter = progress.Reporter(lambda *_: None)
    reporter.epoch(dict(phase="head", epoch=1, epochs=3, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5,
                        seconds=2.0, lr=1e-3, since_best=0, patience=5, stopped=False))
    reporter.close(None)


def test_a_shell_derived_from_jupyters_is_a_notebook(monkeypatch):
    """Colab's shell (google.colab._shell.Shell) is a subclass of Jupyter's: its bars update in place too."""
    import types

    from showdown import bars

    class ZMQInteractiveShell:
        pass

    class Shell(ZMQInteractiveShell):
        pass

    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: Shell()))
    assert bars.in_notebook()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert not bars.in_notebook()


def test_the_time_left_waits_for_an_entry_of_each_strategy(tmp_path):
    """'about 0:00 left' after a one-second head entry, with fine-tune entries of minutes to come."""
    from showdown.config.run_config import RunConfig
    from showdown.reporting.progress import Reporter

    lines = []
    reporter = Reporter(stream=io.StringIO())
    reporter.progress = lines.append
    reporter.start_run(RunConfig(strategies=["head", "finetune"]), tmp_path, 4)
    for model in ("a", "b"):
        for strategy in ("head", "finetune"):
            reporter.start_entry(f"{model}/{strategy}", {"strategy": strategy}, tmp_path / f"{model}-{strategy}")
            reporter.end_entry({}, tmp_path)
    assert ["left" in line for line in lines] == [False, False, True, True], lines
