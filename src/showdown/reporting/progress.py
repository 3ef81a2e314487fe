"""What a run tells while it works: one Reporter in the run context, so no stage prints on its own.

Three kinds of output: info lines (`echo`, standard output, as before), progress (standard error: the entry k of
N with the time left, one line per training epoch, search trials, folds) and the final table (`result`, printed
even with --quiet). Progress is one updating tqdm bar per training phase on a terminal, a widget in a notebook
(tqdm.auto) and one plain line per epoch in a log or a pipe; --log-file always gets the plain lines. The
experiment trackers (trackers.py) see the same events. Under torchrun only rank 0 has a Reporter that speaks.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from showdown.bars import bar_class
from showdown.errors import ShowdownError, last_line, one_line
from showdown.reporting.trackers import Tracker, open_trackers


class Reporter:
    def __init__(self, echo: Callable[[str], None] = print, *, quiet: bool = False, log_file: str | None = None,
                 track: list[str] = (), stream=None, silent: bool = False):
        self._echo, self.quiet, self.silent = echo, quiet or silent, silent
        self.stream = stream or sys.stderr
        self._log = None
        if log_file and not silent:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)
        self._bar = None
        self._bar_key = None
        self.trackers: list[Tracker] = [] if silent else open_trackers(track, self.warn)
        self.entry_label = ""
        self._fold = ""  # "fold k/K" inside an entry with --folds
        self._entries = {"done": 0, "total": 0, "trained": 0, "trained_seconds": 0.0}
        # the run's strategies, and those an entry of has finished here: a head's second is no estimate of a fine-tune
        self._strategies: set[str] = set()
        self._strategy, self._timed = "", set()
        self._started = self._entry_started = time.perf_counter()
        self._step = 0  # epochs of the current entry, over its phases: the trackers' step

    # --- lines --------------------------------------------------------------------------------------------------
    def echo(self, line: str = "") -> None:
        """An info line: standard output unless --quiet, and the log file."""
        if not self.quiet:
            self._echo(line)
        self._write_log(line)

    def _say(self, line: str) -> None:
        # one write, the newline with it: a Ctrl-C or SIGTERM between print's two writes left the line open, and the
        # command's last line ("interrupted: ...") ran on at its end
        self.stream.write(line + "\n")
        self.stream.flush()

    def warn(self, line: str) -> None:
        """A fallback's one line: standard error even with --quiet (like errors), and the log file."""
        if not self.silent:
            self._close_bar()
            self._say(line)
        self._write_log(line)

    def result(self, line: str = "") -> None:
        """The final table and where the results are: printed even with --quiet."""
        if not self.silent:
            self._echo(line)
        self._write_log(line)

    def progress(self, line: str) -> None:
        """A progress line: standard error (above a bar, if one runs) unless --quiet, and the log file."""
        if not self.quiet:
            if self._bar is not None:
                self._bar.write(line, file=self.stream)
            else:
                self._say(line)
        self._write_log(line)

    def _write_log(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()

    def muted(self) -> Reporter:
        """For a search's trials: no epoch lines and no trackers (the search reports trial by trial)."""
        return Reporter(silent=True)

    # --- the run and its entries ----------------------------------------------------------------------------
    def start_run(self, config, run_dir: Path, total: int) -> None:
        self._entries["total"] = total
        self._strategies = {str(strategy) for strategy in config.strategy_values()}
        self._call_trackers("start_run", config, run_dir)

    def start_entry(self, label: str, params: dict, folder: Path) -> None:
        """`[k/N] label`, the time so far and, once an entry of each strategy has finished, an estimate of the time
        left."""
        self._entries["done"] += 1
        done, total = self._entries["done"], self._entries["total"]
        line = f"[{done}/{total}] {label}: elapsed {_clock(time.perf_counter() - self._started)}"
        self._strategy = params.get("strategy", "")
        if self._entries["trained"] and self._timed >= self._strategies:
            # this entry and those after it, at the mean time of those trained here
            left = self._entries["trained_seconds"] / self._entries["trained"] * (total - done + 1)
            line += f", about {_clock(left)} left"
        self.entry_label, self._step, self._fold = label, 0, ""
        self._entry_started = time.perf_counter()
        self.progress(line)
        self._call_trackers("start_entry", folder.name, params, folder)

    def tuned(self, values: dict) -> None:
        """The values the entry's search chose where they differ from the ones start_entry handed on; with --folds,
        each fold's search's under its own names (fold2.lr), since a tracker's parameter is set once."""
        fold = self._fold.split("/")[0].replace(" ", "") + "." if self._fold else ""  # " fold 2/3" -> "fold2."
        if values:
            self._call_trackers("tuned", {f"{fold}{key}": value for key, value in values.items()})

    def kept_entry(self) -> None:
        """An entry finished by an earlier run (--resume): counted, not timed."""
        self._entries["done"] += 1

    def end_entry(self, row: dict, folder: Path) -> None:
        self._close_bar()
        self._entries["trained"] += 1
        self._entries["trained_seconds"] += time.perf_counter() - self._entry_started
        self._timed.add(self._strategy)
        self._call_trackers("end_entry", row, folder)

    def finish(self, run_dir: Path) -> None:
        """The end of the run: trackers get the report."""
        self._close_bar()
        self._call_trackers("finish", run_dir)

    def close(self, ended: BaseException | None = None) -> None:
        """The bar and the log file closed, however the run ended; the log's last line is the one the command ends
        with where that was an error or Ctrl-C (the console's stderr gets it from the CLI)."""
        self._close_bar()
        if isinstance(ended, ShowdownError | KeyboardInterrupt):
            self._write_log(last_line(ended))
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- inside an entry ------------------------------------------------------------------------------------
    def epoch(self, row: dict) -> None:
        """One finished epoch (training/loop.py's history row and its early-stopping state)."""
        if self.silent:
            return
        self._step += 1
        line = epoch_line(self.entry_label + self._fold, row)
        self._write_log(line)
        if not self.quiet:
            bar = self._phase_bar(row)
            if bar is None:
                self._say(line)
            else:
                bar.set_postfix_str(_postfix(row), refresh=False)
                bar.update(1)
        self._call_trackers("epoch", row, self._step)

    def trial(self, number: int, total: int | None, best: float | None) -> None:
        best_text = f"best validation loss so far {best:.4f}" if best is not None else "no finished trial yet"
        self.progress(f"  {self.entry_label}: search trial {number}/{total or '?'} done; {best_text}")

    def fold(self, number: int, total: int) -> None:
        self._close_bar()
        self._fold = f" fold {number}/{total}"
        self.progress(f"  {self.entry_label}: fold {number} of {total}")

    def _phase_bar(self, row: dict):
        """A bar per training phase where one can update in place (a terminal, a notebook), else None."""
        key = (self.entry_label + self._fold, row["phase"], row["epochs"])
        if self._bar is not None and self._bar_key == key and row["epoch"] > self._bar.n:
            return self._bar
        self._close_bar()
        tqdm = bar_class(self.stream)
        if tqdm is None:
            return None
        # mininterval 0: an epoch is seconds to minutes long, every one is worth drawing
        self._bar = tqdm(total=row["epochs"], initial=row["epoch"] - 1, desc=f"{key[0]} [{row['phase']}]",
                         unit="epoch", file=self.stream, mininterval=0, miniters=1, leave=True, dynamic_ncols=True)
        # made once its first epoch has ended: its clock starts with that epoch, so the rate is an epoch's, not
        # the tens of thousands of epochs per second of one epoch counted in the instant since the bar was made
        if not self._bar.disable:  # TQDM_DISABLE=1 makes a bar without a clock
            self._bar.start_t = self._bar.last_print_t = self._bar.start_t - row["seconds"]
        self._bar_key = key
        return self._bar

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _call_trackers(self, method: str, *args) -> None:
        """A tracker that fails (server gone, disk full) is dropped with one line; the run goes on."""
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # any tracker failure must not cost the run
                self.trackers.remove(tracker)
                self.warn(f"warning: --track {tracker.name}: {one_line(exc)}; the run goes on without it")


def epoch_line(label: str, row: dict) -> str:
    """The plain line of one epoch, as a log or a pipe gets it."""
    return (f"  {label} [{row['phase']}] epoch {row['epoch']}/{row['epochs']}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  {row['seconds']:.1f} s  lr {row['lr']:.3g}  "
            f"{_stopping(row)}")


def _postfix(row: dict) -> str:
    return (f"loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | val loss {row['val_loss']:.3f} "
            f"acc {row['val_acc']:.3f} | {row['seconds']:.1f} s/epoch lr {row['lr']:.3g} | {_stopping(row)}")


def _stopping(row: dict) -> str:
    """The early-stopping state: epochs since the best validation loss, of the patience."""
    state = f"no better val loss for {row['since_best']}/{row['patience']}"
    return state + (", stopping early" if row["stopped"] and row["epoch"] < row["epochs"] else "")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
