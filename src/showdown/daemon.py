"""`showdown daemon start`: a warm process that runs later `showdown` commands without importing anything.

A fresh `showdown run` spends 5-7 s of a 2-core CPU importing torch, timm, scikit-learn and matplotlib before it
does any work: more than a cached re-run's training (docs/performance.md). The daemon imports them once and waits
on a Unix socket. Each command then forks a child of it (copy-on-write: milliseconds) that takes over the
terminal of the `showdown` process that asked (its stdin, stdout and stderr, passed over the socket), its working
folder and its environment, runs the command and hands back the exit status. That process relays Ctrl-C and
other signals to the child; if it is killed, the child is interrupted as by Ctrl-C, so finished work is kept and
`--resume` continues. The pattern is dmypy's and Gradle's daemon, with a fork per command as in multiprocessing's
forkserver, so nothing one command leaves behind reaches the next.

A command goes to a daemon only when nothing that decides what the imports do differs: the same Python and
paths, the same installed showdown (its files' times), the same environment (OMP_NUM_THREADS,
CUDA_VISIBLE_DEVICES, torchrun's RANK, SLURM's variables, ...); any other command runs in its own process as
usual. The daemon never initialises CUDA or a thread pool, so its children can. The socket lives in a folder only
its user can enter ($XDG_RUNTIME_DIR, else the temp folder), as ssh-agent's does. Linux only: macOS frameworks are
not safe to use in a child forked after they load. A daemon leaves after `--idle-minutes` without a command.

This module imports the standard library only: `showdown` calls `forward()` before anything else. Long because it
holds both ends of one small protocol over the socket, the command's and the daemon's, which must change together.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import showdown

VOLATILE = {"PWD", "OLDPWD", "_", "SHLVL"}  # differ between shells without changing what the imports do
RELAYED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1")  # SIGUSR1: the child's stacks (startup.py)
RUN, CONTROL = b"R", b"C"
START_TIMEOUT_S = 180


class DaemonError(Exception):
    """Why a daemon cannot be started or used here (one line)."""


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def folder(create: bool = True) -> Path:
    """Where the sockets live: $SHOWDOWN_DAEMON_DIR, else $XDG_RUNTIME_DIR/showdown, else <temp>/showdown-<uid>;
    made private (`create`), and refused if anybody else owns it or could enter it."""
    base = os.environ.get("SHOWDOWN_DAEMON_DIR")
    if not base:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        base = f"{runtime}/showdown" if runtime else f"{tempfile.gettempdir()}/showdown-{os.getuid()}"
    path = Path(base)
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    facts = path.stat()
    if facts.st_uid != os.getuid() or facts.st_mode & 0o077:
        raise DaemonError(f"{path} is another user's or open to others: not used for the daemon's socket")
    return path


def socket_path(create: bool = True) -> Path:
    """This environment's socket: named by what a daemon must share with a command (see the module docstring)."""
    base, package = folder(create), Path(showdown.__file__).parent  # the folder first: no folder, no daemon
    paths = sys.path[1:]  # [0] is the script's or working folder: the command's own, not the imports'
    facts = {"python": sys.executable, "flags": [sys.flags, sys.warnoptions, sys._xoptions], "path": paths,
             "installed": [os.stat(p).st_mtime_ns for p in paths if os.path.isdir(p)],  # pip changes these
             "version": showdown.__version__,
             "newest": max(entry.stat().st_mtime_ns for entry in package.rglob("*.py")),
             "env": sorted((k, v) for k, v in os.environ.items() if k not in VOLATILE)}
    return base / (hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16] + ".sock")


# --- the command's side ----------------------------------------------------------------------------------------

def forward(argv: list[str]) -> int | None:
    """Run the command `argv` in this environment's daemon: its exit status, or None where there is no daemon
    to run it (the caller runs it itself)."""
    words = [word for word in argv if not word.startswith("-")]
    if not supported() or words[:1] == ["daemon"] or not all(_open(fd) for fd in (0, 1, 2)):
        return None
    try:  # no daemon (no folder made for one), or a socket a killed daemon left: the command runs here
        conn = _connect(socket_path(create=False))
    except (OSError, DaemonError):
        return None
    child, pending = [], []  # a signal before the child's pid is known is relayed once it is

    def relay(number, _frame):
        if child:
            _kill(child[0], number)
        else:
            pending.append(number)

    for name in RELAYED:
        signal.signal(getattr(signal, name), relay)
    with conn:
        replies = _send(conn, RUN, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, fds=[0, 1, 2])
        started = replies.readline()
        if not started:
            return None  # the daemon went away before it forked: nothing ran
        child.append(json.loads(started)["pid"])
        for number in pending:
            _kill(child[0], number)
        ended = replies.readline()
    if not ended:
        print("error: the command's process in the daemon ended without an exit status", file=sys.stderr)
        return 1
    return json.loads(ended)["exit"]


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:  # e.g. stdin closed: it could not be passed on
        return False
    return True


def _connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        raise
    return conn


def _send(conn: socket.socket, kind: bytes, message: dict, fds: list[int] = ()):
    socket.send_fds(conn, [kind], list(fds))
    conn.sendall(json.dumps(message).encode() + b"\n")
    return conn.makefile("r")


def _kill(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


def control(path: Path, what: str) -> dict | None:
    """Ask the daemon at `path` for its `status`, or to `stop`: its answer, None if nobody answers."""
    try:
        with _connect(path) as conn:
            conn.settimeout(10)
            answer = _send(conn, CONTROL, {"do": what}).readline()
    except OSError:
        return None
    return json.loads(answer) if answer else None


def start(idle_minutes: float) -> str:
    """Start this environment's daemon (or find it running); one line saying which."""
    if not supported():
        raise DaemonError("the daemon needs Linux (fork after the imports, file descriptors passed over a socket)")
    path = socket_path()
    status = control(path, "status")
    if status:
        return f"daemon already running for this environment (pid {status['pid']}, {status['served']} commands)"
    path.unlink(missing_ok=True)  # a killed daemon's socket
    log = path.with_suffix(".log")
    begun = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "showdown.daemon", str(path), str(idle_minutes * 60)],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=path.parent,
                                   start_new_session=True)
    while (status := control(path, "status")) is None:
        if process.poll() is not None or time.monotonic() - begun > START_TIMEOUT_S:
            process.kill()
            last = (log.read_text().strip().splitlines() or ["no output"])[-1]
            raise DaemonError(f"the daemon did not start: {last} (log: {log})")
        time.sleep(0.1)
    return (f"daemon ready in {time.monotonic() - begun:.1f} s (pid {status['pid']}): showdown commands from this "
            f"environment start warm; it leaves after {idle_minutes:g} idle minutes (`showdown daemon stop`)")


def command(action: str, idle_minutes: float = 30) -> int:
    """`showdown daemon start|stop|status`."""
    if action == "start":
        print(start(idle_minutes))
        return 0
    found = running()
    if action == "stop":
        print(f"stopped {sum(control(path, 'stop') is not None for path, _ in found)} daemon(s)")
        return 0
    mine = socket_path() if supported() else None
    for path, status in found:
        which = "this environment" if path == mine else "another environment"
        print(f"pid {status['pid']}  {status['served']} commands  ({which}; {path})")
    if not found:
        print("no daemon running")
    return 0


def running() -> list[tuple[Path, dict]]:
    """Every daemon of this user that answers, with its status; sockets nobody answers on are removed."""
    found = []
    for path in sorted(folder().glob("*.sock")):
        status = control(path, "status")
        if status is None:
            path.unlink(missing_ok=True)
        else:
            found.append((path, status))
    return found


# --- the daemon's side -----------------------------------------------------------------------------------------

def serve(path: Path, idle_seconds: float) -> None:
    """Import what commands use, then fork a child per command until stopped or idle for `idle_seconds`."""
    from showdown.startup import heavy_imports

    with heavy_imports():
        _import_what_commands_use()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    listener.bind(str(staging))
    listener.listen(16)
    os.replace(staging, path)  # commands find the socket once it answers
    inode = path.stat().st_ino
    state = {"pid": os.getpid(), "served": 0, "since": time.time()}
    last = time.monotonic()
    try:
        while True:
            listener.settimeout(max(1.0, idle_seconds - (time.monotonic() - last)))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if time.monotonic() - last >= idle_seconds:
                    return
                continue
            last = time.monotonic()
            with conn:
                conn.settimeout(10)  # a command sends its request at once
                try:
                    kind, fds, request = _receive(conn)
                except (OSError, ValueError):
                    continue
                if kind == CONTROL:
                    conn.sendall(json.dumps(state).encode() + b"\n")
                    if request.get("do") == "stop":
                        return
                    continue
                state["served"] += 1
                if os.fork() == 0:
                    try:
                        listener.close()
                        _child(conn, fds, request)
                    finally:
                        os._exit(1)  # whatever happened, the child never runs the daemon's code
                for fd in fds:
                    os.close(fd)
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:  # not a newer daemon's
                path.unlink()
                path.with_suffix(".log").unlink()  # its output; kept where it failed to start


def _receive(conn: socket.socket) -> tuple[bytes, list[int], dict]:
    kind, fds, _, _ = socket.recv_fds(conn, 1, 3)
    line = conn.makefile("rb").readline()
    return kind, fds, json.loads(line)


def _import_what_commands_use() -> None:
    import showdown.cli  # noqa: F401
    import showdown.experiment.runner  # noqa: F401
    import showdown.reporting.report  # noqa: F401

    for optional in ("pytorch_grad_cam", "cleanlab.filter", "openvino"):
        with contextlib.suppress(ImportError):
            __import__(optional)
    # What a process loads on first use, once here for every child: Pillow's format plugins, and matplotlib's
    # fonts and text layout (Agg draws in this thread; no torch op runs, so no thread pool starts).
    from PIL import Image

    from showdown.reporting.plots import plt, png_bytes

    Image.init()
    figure, axes = plt.subplots()
    axes.plot([0, 1], label="warm")
    axes.legend()
    figure.suptitle("warm")
    png_bytes(figure)


def _child(conn: socket.socket, fds: list[int], request: dict) -> None:
    """In the forked child: become the asking command (its streams, folder and environment), run it, report."""
    from showdown.cli import finish, main

    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command waits on subprocesses of its own
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own streams)
        sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["showdown", *request["argv"]]
        conn.settimeout(None)
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        threading.Thread(target=_interrupt_when_gone, args=(conn,), daemon=True).start()
        code = main(request["argv"]) or 0
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # a bug: the traceback goes to the command's terminal
        import traceback

        traceback.print_exc()
    finally:
        # The asking process closes its end once it has the status: no interrupt from then on.
        signal.pthread_sigmask(signal.SIG_BLOCK, [getattr(signal, name) for name in RELAYED])
        with contextlib.suppress(BaseException):
            finish()
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        os._exit(0)


def _interrupt_when_gone(conn: socket.socket) -> None:
    """The asking process was killed (its end of the socket closed): interrupt the command as Ctrl-C would."""
    with contextlib.suppress(OSError):
        conn.recv(1)
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":  # started by `start()`
    serve(Path(sys.argv[1]), float(sys.argv[2]))
