"""The `showdown` command, `python -m showdown`, and so `torchrun --nproc_per_node=N -m showdown run ...`.

Kept apart from the command line's parser (cli.py): a command the daemon runs (daemon.py) only needs the daemon's
client in its own process, which imports in 40 ms against 130 ms with the run options' module.
"""
import contextlib
import logging
import os
import sys


def console() -> None:
    """In this environment's daemon if one runs, else cli.main() and then this environment's daemon started for
    the commands after (daemon.autostarter). The process ends without the interpreter's teardown, which frees
    torch's, timm's and scikit-learn's ~500,000 objects one by one (0.3-0.5 s, docs/performance.md). By then the
    command has closed its files, committed its database row and ended any process group; only the streams need
    flushing."""
    from showdown import daemon

    code = daemon.forward(sys.argv[1:])
    if code is None:
        from showdown.cli import main

        start_daemon = daemon.autostarter()
        code = main()
        told = start_daemon(code) if start_daemon else None
        if told:
            with contextlib.suppress(OSError, ValueError):  # a reader gone, a closed stream: nothing to tell
                print(told, file=sys.stderr)
    finish()
    os._exit(code or 0)


def finish() -> None:
    """Flush what a command printed and logged (before os._exit)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away, or a stream main() closed
            pass


if __name__ == "__main__":
    console()
