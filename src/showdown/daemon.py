"""`showdown daemon start`: a warm process that runs later `showdown` commands without importing anything.

A fresh `showdown run` spends 5-7 s of a 2-core CPU importing torch, timm, scikit-learn and matplotlib before it
does any work: more than a cached re-run's training (docs/performance.md). The daemon imports them once and waits
on a Unix socket. Each command then forks a child of it (copy-on-write: milliseconds) that takes over the terminal
of the `showdown` process that asked (its stdin, stdout and stderr, passed over the socket), its working folder and
its environment, runs the command and hands back the exit status. That process relays Ctrl-C and other signals to
the child, and Ctrl-Z stops the child (not processes it started) with it until `fg` or `bg`; if it is killed, the
child is interrupted as by Ctrl-C (continued first if stopped: the daemon watches each command's caller), so
finished work is kept and `--resume` continues. The pattern is dmypy's and
Gradle's daemon, with a fork per command as in multiprocessing's forkserver, so nothing one command leaves behind
reaches the next.

A command goes to a daemon only when nothing that decides what the imports do differs: the same Python and
paths, the same installed showdown (its files' times), the same environment (OMP_NUM_THREADS,
CUDA_VISIBLE_DEVICES, torchrun's RANK, SLURM's variables, ...) and the same inherited process settings (umask,
cores, nice, limits); any other command runs in its own process as usual, and so does one under a profiler or
debugger. The daemon never initialises CUDA or a thread pool of its own (OpenBLAS's, started by numpy, stops
itself around a fork), so its children can. The socket lives in a folder only its user can enter
($XDG_RUNTIME_DIR, else the temp folder), as ssh-agent's does. Linux only: macOS frameworks are not safe to use in
a child forked after they load. A daemon leaves after `--idle-minutes` with no command running or asked for.

A command that paid for the imports itself and succeeded starts this environment's daemon as it ends
(`autostarter`), without waiting for it, as Gradle's first build starts its daemon: a user's re-run then starts
warm without knowing about daemons. Not after a failed command (its error stays its one line), nor where a process
left behind is unwanted or counted (CI, torchrun, SLURM/PBS/LSF/MPI jobs, pytest), nor with SHOWDOWN_DAEMON=off.
The process that starts a daemon takes its claim (a lock on <socket>.claim, holding the
start time) before the daemon exists and hands it over; the daemon holds it for life. A command that finds its
daemon still importing waits for it rather than importing beside it; a second daemon for the same socket is never
started. A daemon leaves once its installed code changes (an edit, a `pip install`): its key no longer matches.

This module imports the standard library only: `showdown` calls `forward()` before anything else. Long because it
holds both ends of one small protocol over the socket, the command's and the daemon's, which must change together.
"""
from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import hashlib
import io
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from functools import partial
from pathlib import Path

import showdown

# Differ between shells, panes, terminal windows and logins without changing what the imports do: a daemon per
# terminal tab or ssh login would each hold ~1 GB and start cold.
VOLATILE = {"PWD", "OLDPWD", "_", "SHLVL", "TMUX_PANE", "WINDOWID", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY",
            "SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_TTY", "TERM_SESSION_ID", "ITERM_SESSION_ID", "WT_SESSION",
            "XDG_SESSION_ID", "XDG_VTNR", "KITTY_WINDOW_ID", "KITTY_PID", "GNOME_TERMINAL_SCREEN",
            "GNOME_TERMINAL_SERVICE", "KONSOLE_DBUS_SESSION", "KONSOLE_DBUS_WINDOW", "STARSHIP_SESSION_KEY",
            "TERM_PROGRAM_VERSION"}
VOLATILE_PREFIXES = ("VSCODE_",)  # VS Code's terminals: a new IPC handle and nonce per window
RELAYED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1")  # SIGUSR1: the child's stacks (startup.py)
RUN, CONTROL = b"R", b"C"
START_TIMEOUT_S = 180
SOCKET_PATH_BYTES = 107  # Linux's limit for a Unix socket's path (sun_path, 108 bytes with the closing zero)
READY_WAIT_S = 60  # a daemon importing for longer than this is not waited for: the command runs itself
AUTOSTART_IDLE_MINUTES = 30
# Where a process left behind is unwanted, or a job scheduler would count it against the job.
NOT_AUTOSTARTED_UNDER = ("CI", "JENKINS_URL", "TF_BUILD", "TORCHELASTIC_RUN_ID", "LOCAL_RANK", "SLURM_JOB_ID",
                         "PBS_JOBID", "LSB_JOBID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PYTEST_CURRENT_TEST")
OFF = {"off", "0", "false", "no"}
MATPLOTLIBRC = "matplotlibrc"  # the working folder's, which matplotlib reads as it is imported (its figure style)
FORK_TIMEOUT_S = 30  # a daemon that accepts but does not fork within this (stuck): the command runs itself


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
    facts = path.lstat()  # a symlink planted in a shared temp folder is not followed
    if facts.st_uid != os.getuid() or facts.st_mode & 0o077 or not path.is_dir() or path.is_symlink():
        raise DaemonError(f"{path} is another user's or open to others: not used for the daemon's socket")
    return path


def socket_path(create: bool = True, environ: dict | None = None, paths: list[str] | None = None,
                process: list | None = None) -> Path:
    """This environment's socket: named by what a daemon must share with a command (see the module docstring);
    `environ`, `paths` (sys.path) and `process` (_process_settings) default to this process's own."""
    environ = os.environ if environ is None else environ
    base, package = folder(create), Path(showdown.__file__).parent  # the folder first: no folder, no daemon
    paths = (sys.path if paths is None else paths)[1:]  # [0]: the script's or working folder, not the imports'
    # The interpreter's real file: `showdown` (its script names python3) and `python -m showdown` share a daemon.
    facts = {"python": os.path.realpath(sys.executable), "flags": [sys.flags, sys.warnoptions, sys._xoptions],
             "path": paths,
             # Change times, which no copy or move sets back (`mv`, `cp -p` and `touch -d` keep or set an old
             # modification time): pip changes the folders', an edit or a checkout the files'.
             "installed": [os.stat(p).st_ctime_ns for p in paths if os.path.isdir(p)],
             "version": showdown.__version__,
             "newest": max(entry.stat().st_ctime_ns for entry in package.rglob("*.py")),
             "env": sorted((k, v) for k, v in environ.items()
                           if k not in VOLATILE and not k.startswith(VOLATILE_PREFIXES)),
             "process": _process_settings() if process is None else process}
    path = base / (hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16] + ".sock")
    longest = len(os.fsencode(path)) + len(".") + len(f".{2 ** 22}")  # the name the daemon binds before renaming
    if longest > SOCKET_PATH_BYTES:
        raise DaemonError(f"{base} is too long a folder for the daemon's socket ({longest} of {SOCKET_PATH_BYTES} "
                          "bytes): set SHOWDOWN_DAEMON_DIR to a shorter one")
    return path


def _process_settings() -> list:
    """What a process inherits besides its environment and a command run in a daemon would take from the daemon
    (the one that started it): `taskset`'s cores (which set torch's threads), `nice`, the umask the run's files
    get, the user's groups and limits (`ulimit -n`, `ulimit -v`)."""
    from showdown.fileio import current_umask  # here: the command's side of the daemon imports as little as it can

    umask = current_umask()
    limits = [resource.getrlimit(getattr(resource, name)) for name in ("RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_DATA",
                                                                       "RLIMIT_STACK", "RLIMIT_NPROC")]
    return [umask, sorted(os.sched_getaffinity(0)), os.getpriority(os.PRIO_PROCESS, 0), os.getgroups(), limits]


# --- the command's side ----------------------------------------------------------------------------------------

def forward(argv: list[str]) -> int | None:
    """Run the command `argv` in this environment's daemon: its exit status, or None where no daemon ran it (the
    caller then runs it itself: no daemon, a socket a killed daemon left, a daemon that went away or is stuck). A
    daemon still importing is waited for, until it has imported for READY_WAIT_S."""
    words = [word for word in argv if not word.startswith("-")]
    if not supported() or words[:1] == ["daemon"] or not all(_is_open(fd) for fd in (0, 1, 2)) or _observed():
        return None
    try:
        cwd = os.getcwd()
    except OSError:  # its folder was removed meanwhile: here, the command itself says what that breaks
        return None
    if os.path.exists(MATPLOTLIBRC):  # read as matplotlib is imported: the daemon imported it elsewhere
        return None
    try:
        try:
            conn = _connect_when_ready(socket_path(create=False))
        except (OSError, DaemonError):
            return None
        # Signals this process ignores (a background job's SIGINT, nohup's SIGHUP) the command ignores too.
        ignored = [name for name in RELAYED if signal.getsignal(getattr(signal, name)) is signal.SIG_IGN]
        relay = _Relay([name for name in RELAYED if name not in ignored])
        request = {"argv": argv, "cwd": cwd, "env": dict(os.environ), "ignored": ignored, "path0": sys.path[0]}
        with conn, relay:
            try:
                conn.settimeout(FORK_TIMEOUT_S)
                replies = _send(conn, RUN, request, fds=[0, 1, 2])
                started = replies.readline()
                conn.settimeout(None)
            except OSError:
                started = ""
            if started:
                relay.to(json.loads(started)["pid"])
                try:
                    ended = replies.readline()
                except OSError:
                    ended = ""
    except KeyboardInterrupt:  # Ctrl-C before the command's pid was known (a child that started sees this end close)
        print("interrupted", file=sys.stderr)
        return 130
    if not started:  # the child sends its pid before it runs anything: nothing ran, this process runs it
        relay.here()
        return None
    message = json.loads(ended) if ended else {}
    if "exit" in message:
        return message["exit"]
    # It died of a signal: this process dies of it too, as the command's own process would have (the shell's
    # "Killed", exit status 137 for the out-of-memory killer's SIGKILL).
    number = message.get("signal", relay.last)  # no status from the daemon (Linux before 5.4): the one relayed
    if number is not None:
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(number, signal.SIG_DFL)
        with contextlib.suppress(OSError, ValueError):  # SIGSEGV, SIGQUIT: the command's core, not a second one
            resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        os.kill(os.getpid(), number)
    print("error: the command's process in the daemon ended without an exit status", file=sys.stderr)
    return 1


class _Relay:
    """While a command runs in the daemon, the signals this process gets go to the command's process (those that
    come before its pid is known, once it is); the handlers before are restored on leaving. Sent through a pidfd
    where the kernel gives one: once the command ended, its pid may be another process's."""

    def __init__(self, names: list[str]):
        self.names, self.pid, self.pending, self.last, self.before = names, None, [], None, {}
        self.pidfd, self.ended = None, False

    def __enter__(self):
        for name in self.names:
            number = getattr(signal, name)
            self.before[number] = signal.signal(number, self._on_signal)
        if signal.getsignal(signal.SIGTSTP) is signal.SIG_DFL:  # not where job control is off (it is ignored)
            self.before[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._on_suspend)
        return self

    def __exit__(self, *_):
        for number, handler in self.before.items():
            signal.signal(number, handler)
        if self.pidfd is not None:
            os.close(self.pidfd)

    def _on_signal(self, number, _frame):
        if number != signal.SIGUSR1:  # "print your stacks" ends nothing
            self.last = number
        if self.pid is None and number == signal.SIGINT:
            raise KeyboardInterrupt  # nothing ran yet: leave at once, not after a stuck daemon's FORK_TIMEOUT_S
        if self.pid is None:
            self.pending.append(number)
        else:
            self._send(number)

    def _on_suspend(self, number, _frame):
        """Ctrl-Z: the command stops with this process, and goes on when this process is continued (`fg`, `bg`),
        as the shell's job would without a daemon. Before the command's pid is known, once it is."""
        if self.pid is None:
            self.pending.append(number)
            return
        self._send(signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
        signal.signal(signal.SIGTSTP, self._on_suspend)
        self._send(signal.SIGCONT)

    def here(self) -> None:
        """The daemon did not run the command, and this process will: the signals that came meanwhile take effect
        here, each once, as they would have without a daemon."""
        for number in dict.fromkeys(self.pending):
            if number == signal.SIGUSR1:  # "where is it stuck?": here, waiting for the daemon
                faulthandler.dump_traceback(all_threads=True)
            else:
                os.kill(os.getpid(), number)  # their handlers are restored: Ctrl-Z stops here, SIGTERM ends

    def to(self, pid: int) -> None:
        self.pid = pid  # first: a Ctrl-C from here on goes to the command
        try:
            self.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # it ended already; its pid may be another process's by now
            self.ended = True
        except (OSError, AttributeError):  # a kernel before 5.3: signalled by its pid
            pass
        for number in self.pending:
            if number == signal.SIGTSTP:
                self._on_suspend(number, None)
            else:
                self._send(number)

    def _send(self, number: int) -> None:
        if self.ended:
            return
        with contextlib.suppress(ProcessLookupError):  # the command ended
            if self.pidfd is None:
                os.kill(self.pid, number)
            else:
                signal.pidfd_send_signal(self.pidfd, number)


def _observed() -> bool:
    """A profiler, debugger or coverage tool is watching this process (`python -m cProfile`, pdb, coverage): the
    command must run in it, not in a daemon's child the tool never sees."""
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+: coverage's sys.monitoring core
    return bool(sys.gettrace() or sys.getprofile()
                or (monitoring and any(monitoring.get_tool(tool) for tool in range(6))))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:  # e.g. stdin closed: it could not be passed on
        return False
    return True


def _connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        _same_user(conn)  # the command's environment and terminal go to this socket's process
    except OSError:
        conn.close()
        raise
    return conn


def _same_user(conn: socket.socket) -> None:
    """Raise PermissionError unless the process at the other end of `conn` is this user's: the private socket
    folder is checked before it is used, and this holds even if it was swapped since."""
    if not hasattr(socket, "SO_PEERCRED"):  # not Linux: no daemon is started there (supported())
        return
    _, uid, _ = struct.unpack("iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII")))
    if uid != os.getuid():
        raise PermissionError(f"the daemon's socket is held by user {uid}")


def _connect_when_ready(path: Path) -> socket.socket:
    """Connect to the daemon at `path`, waiting for one still importing: importing here too would take as long and
    halve the speed of both on a small CPU. One importing for over READY_WAIT_S (stuck) is not waited for."""
    while True:
        try:
            return _connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if not _still_importing(path):
                raise
            time.sleep(0.05)


def _still_importing(path: Path) -> bool:
    """A daemon holds `path`'s claim, started no longer than READY_WAIT_S ago (one importing for longer is stuck:
    its own alarm ends it, START_TIMEOUT_S)."""
    since = _claimed_since(path)
    return since is not None and time.time() - since <= READY_WAIT_S


def _claimed_since(path: Path) -> float | None:
    """When the daemon holding `path`'s claim was started (it runs, or it is still importing); None if none holds
    it. A daemon holds it with an exclusive lock: a shared one is granted only where none does."""
    try:
        with open(path.with_suffix(".claim")) as claim:
            try:
                fcntl.flock(claim, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return float(claim.read() or os.fstat(claim.fileno()).st_mtime)  # empty: being written
    except (FileNotFoundError, ValueError):  # no daemon was ever started here; a claim being written
        return None
    return None


def _take_claim(path: Path):
    """`path`'s claim for a daemon about to start, with the time written in; None where a daemon holds it. Tried
    for a moment: a command checking the claim holds it shared for a few microseconds."""
    claim = open(path.with_suffix(".claim"), "a+")  # noqa: SIM115 - handed to the daemon, then closed here
    if claim.fileno() <= 2:  # stdin, stdout or stderr closed: Popen would put /dev/null or the log over it
        moved = os.fdopen(fcntl.fcntl(claim.fileno(), fcntl.F_DUPFD_CLOEXEC, 3), "a+")
        claim.close()
        claim = moved
    for _ in range(10):
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        claim.truncate(0)
        claim.write(f"{time.time():.3f}")
        claim.flush()
        return claim
    claim.close()
    return None


def _line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _send(conn: socket.socket, kind: bytes, message: dict, fds: list[int] = ()):
    socket.send_fds(conn, [kind], list(fds))
    conn.sendall(_line(message))
    return conn.makefile("r")


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
    """Start this environment's daemon (or find it running, or wait for one importing); one line saying which.
    Two at once start one daemon: the claim (_take_claim) goes to one of them, and the other waits for it."""
    if not supported():
        raise DaemonError("the daemon needs Linux (fork after the imports, file descriptors passed over a socket)")
    path = socket_path()
    begun, process = time.monotonic(), None
    while (status := control(path, "status")) is None:
        late = time.monotonic() - begun > START_TIMEOUT_S + 10  # its own alarm is at START_TIMEOUT_S
        if late or (process is not None and process.poll() is not None):
            if process is not None:
                process.kill()
            raise DaemonError(f"the daemon did not start: {_last_line(path.with_suffix('.log'))} "
                              f"(log: {path.with_suffix('.log')})")
        if process is None:
            process = _spawn(path, idle_minutes, dict(os.environ))  # None: one runs or imports already
        time.sleep(0.1)
    if process is None:
        return f"daemon already running for this environment (pid {status['pid']}, {status['served']} commands)"
    return (f"daemon ready in {time.monotonic() - begun:.1f} s (pid {status['pid']}): showdown commands from this "
            f"environment start warm; it leaves after {idle_minutes:g} idle minutes (`showdown daemon stop`)")


def _last_line(log: Path) -> str:
    try:
        return (log.read_text().strip().splitlines() or ["no output"])[-1]
    except OSError:
        return "no log"


def _spawn(path: Path, idle_minutes: float, environ: dict) -> subprocess.Popen | None:
    """This environment's daemon, importing in its own session with its output in <socket>.log and the claim
    handed to it; not waited for. None where a daemon holds the claim (it runs or imports)."""
    claim = _take_claim(path)
    if claim is None:
        return None
    with claim:
        path.unlink(missing_ok=True)  # a killed daemon's socket
        command = [sys.executable, *_interpreter_flags(environ), "-m", "showdown.daemon", str(path),
                   str(idle_minutes * 60), str(claim.fileno())]
        with open(path.with_suffix(".log"), "w") as out:  # started from here: relative PYTHONPATH means the same
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=environ, start_new_session=True, pass_fds=[claim.fileno()])


def _interpreter_flags(environ: dict) -> list[str]:
    """This interpreter's -X, -W and -O flags (part of the key), less the dev mode PYTHONDEVMODE gives the daemon
    anyway: passed again as -X dev, it would show in sys._xoptions, which the command's has not."""
    flags = subprocess._args_from_interpreter_flags()
    if environ.get("PYTHONDEVMODE") and "dev" not in sys._xoptions:
        for i in range(len(flags) - 1):
            if flags[i:i + 2] == ["-X", "dev"]:
                del flags[i:i + 2]
                break
    return flags


def autostarter():
    """For a command this process runs itself: a function to call once it is done, which starts this environment's
    daemon if the command imported torch (so later commands skip that) and none runs or imports yet, and returns
    the line to tell the user, else None. None itself where daemons are not started unasked (module docstring).
    The environment and paths are those the command started with: the daemon must match the commands after it."""
    environ, paths = dict(os.environ), list(sys.path)
    if (not supported() or environ.get("SHOWDOWN_DAEMON", "").lower() in OFF
            or any(environ.get(name, "").lower() not in ("", "0", "false") for name in NOT_AUTOSTARTED_UNDER)):
        return None
    process = _process_settings()  # before the command: loading OpenMP may pin its thread

    def start_if_it_pays(exit_code: int) -> str | None:
        if "torch" not in sys.modules or exit_code != 0:  # nothing to keep; a failed command's error stays alone
            return None
        try:
            # The cores the command started with, which OpenMP may have narrowed to one for this thread: the daemon
            # inherits them, and the commands after it are keyed by them.
            os.sched_setaffinity(0, process[1])
            if _spawn(socket_path(environ=environ, paths=paths, process=process), AUTOSTART_IDLE_MINUTES,
                      environ) is None:
                return None
        except (OSError, DaemonError):  # a full disk, a folder refused: the command's work is kept, this skipped
            return None
        return (f"started a showdown daemon: later commands from this environment skip the imports (it leaves "
                f"after {AUTOSTART_IDLE_MINUTES} idle minutes; `showdown daemon stop` now, SHOWDOWN_DAEMON=off never)")

    return start_if_it_pays


def command(action: str, idle_minutes: float = 30) -> int:
    """`showdown daemon start|stop|status`."""
    if action == "start":
        print(start(idle_minutes))
        return 0
    found = running()
    importing = _importing(found)
    if action == "stop":  # one still importing (`showdown daemon stop` straight after the run that started it)
        found += [(path, {}) for path in importing if _ready(path)]  # is stopped once it answers
        print(f"stopped {sum(control(path, 'stop') is not None for path, _ in found)} daemon(s)")
        return 0
    mine = socket_path() if supported() else None
    lines = [(f"pid {status['pid']}  {status['served']} commands", path) for path, status in found]
    for what, path in [*lines, *(("starting: importing", path) for path in importing)]:
        print(f"{what}  ({'this environment' if path == mine else 'another environment'}; {path})")
    if not found and not importing:
        print("no daemon running")
    return 0


def running() -> list[tuple[Path, dict]]:
    """Every daemon of this user that answers, with its status; a socket nobody listens on any more is removed."""
    found = []
    for path in sorted(folder().glob("*.sock")):
        status = control(path, "status")
        if status is not None:
            found.append((path, status))
            continue
        try:
            _connect(path).close()
        except (ConnectionRefusedError, FileNotFoundError):  # its daemon was killed
            path.unlink(missing_ok=True)
        except OSError:
            pass
    return found


def _importing(answering: list[tuple[Path, dict]]) -> list[Path]:
    """The sockets of this user's daemons still importing: their claim is held, and they do not answer yet."""
    known = {path for path, _ in answering}
    claimed = (claim.with_suffix(".sock") for claim in sorted(folder().glob("*.claim")))
    return [path for path in claimed if path not in known and _claimed_since(path) is not None]


def _ready(path: Path) -> bool:
    """Wait for the daemon importing at `path` to answer: False where it ended instead, or is stuck."""
    while control(path, "status") is None:
        if not _still_importing(path):
            return False
        time.sleep(0.05)
    return True


# --- the daemon's side -----------------------------------------------------------------------------------------

def serve(path: Path, idle_seconds: float, claim) -> None:
    """Import what commands use, then fork a child per command until stopped, idle for `idle_seconds`, its code
    changed, or its socket taken; `claim`, the file whose lock the starting process handed over."""
    from showdown.startup import heavy_imports

    # As the commands see theirs, before any import: loading OpenMP may pin this thread to one core
    # (OMP_PROC_BIND, GOMP_CPU_AFFINITY), and a command is keyed before it imports anything.
    before, paths, process = dict(os.environ), list(sys.path), _process_settings()
    if socket_path(environ=before, paths=paths, process=process) != path:  # it would import other code
        raise SystemExit(f"this process's Python, paths or environment differ from the starting command's "
                         f"({path.name}): not started")
    if _first_path_is_the_folder():  # `-m`'s starting folder: its files must not stand in for libraries (a stray
        sys.path[0] = str(path.parent)  # yaml.py) in every command; each child gets its caller's first path again
    # Nor may the files in it change what the imports do: matplotlib reads ./matplotlibrc as it is imported.
    os.chdir(path.parent)  # the daemon holds no folder of the user's
    signal.signal(signal.SIGALRM, _too_slow)  # imports stuck (a dead network mount): leave, and free the claim
    signal.alarm(START_TIMEOUT_S)
    with heavy_imports():
        import_what_commands_use()
    signal.alarm(0)
    # What the imports set in the environment, kept in every child (a command in its own process would have it).
    changed = {key: value for key, value in os.environ.items() if before.get(key) != value}
    removed = [key for key in before if key not in os.environ]
    sys.stdout.flush()
    # The children are reaped by _Commands.wait, which tells a caller the signal its command died of; where this
    # kernel cannot wait on a pidfd, the kernel reaps them and the caller learns less.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL if _waits_on_pidfds() else signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    listener.bind(str(staging))
    listener.listen(16)
    os.replace(staging, path)  # commands find the socket once it answers
    inode = path.stat().st_ino
    state = {"pid": os.getpid(), "served": 0, "since": time.time()}
    commands = _Commands()
    try:
        _take_commands(listener, commands, state, claim, idle_seconds,
                       lambda: _inode(path) != inode or _outdated(path, before, paths, process),
                       {"changed": changed, "removed": removed})
    finally:
        listener.close()
        if _inode(path) == inode:  # not a newer daemon's
            with contextlib.suppress(OSError):
                path.unlink()
                path.with_suffix(".log").unlink()  # its output; kept where it failed to start
        claim.close()  # free at once, not after the interpreter's teardown: `daemon stop; daemon start` works
        while commands.running:  # no new commands come; those still running stay watched until they end
            commands.wait()


def _take_commands(listener: socket.socket, commands: _Commands, state: dict, claim, idle_seconds: float,
                   superseded, imports_env: dict) -> None:
    """Answer connections until stopped, idle (no command for `idle_seconds`, none running) or `superseded()`."""
    last = time.monotonic()
    while True:
        asked, ended = commands.wait(listener, timeout=min(60.0, max(1.0, idle_seconds - (time.monotonic() - last))))
        if ended:
            last = time.monotonic()
        if not asked:
            if (not commands.running and time.monotonic() - last >= idle_seconds) or superseded():
                return
            continue
        conn, _ = listener.accept()
        served = state["served"]
        stop, pid = _answer(conn, state, (listener.close, claim.close, *commands.closers()), imports_env)
        if state["served"] != served:  # a command, not a status (a prompt polling `daemon status` keeps none alive)
            last = time.monotonic()
        if pid is None or not commands.watch(pid, conn):
            conn.close()
        if stop:
            return


def _first_path_is_the_folder() -> bool:
    """sys.path[0] is the script's or working folder (not under -P, PYTHONSAFEPATH or -I: none is put first);
    the socket's key leaves it out."""
    return not (getattr(sys.flags, "safe_path", False) or sys.flags.isolated)


def _too_slow(*_) -> None:
    raise SystemExit(f"the imports took over {START_TIMEOUT_S} s: not started")


def _outdated(path: Path, environ: dict, paths: list[str], process: list) -> bool:
    """Whether the daemon's code changed since it started (an edit, a `pip install`): commands no longer come."""
    try:
        return socket_path(create=False, environ=environ, paths=paths, process=process) != path
    except (OSError, DaemonError):  # its folder removed or opened to others
        return True


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _answer(conn: socket.socket, state: dict, closers: tuple, imports_env: dict) -> tuple[bool, int | None]:
    """One connection: a status, a stop (True, None), or a command run in a forked child (False, the child's pid).
    The child calls `closers` on what it must not hold: the listening socket, the claim, which would otherwise
    outlive the daemon in a long command, and the daemon's watch of the other commands."""
    fds = []
    try:
        conn.settimeout(10)  # a command sends its request at once
        _same_user(conn)
        kind, fds, request = _receive(conn)
        if kind == CONTROL:
            conn.sendall(_line(state))
            return request.get("do") == "stop", None
        with warnings.catch_warnings():  # Python 3.12's note on forking with threads: the one thread here is
            warnings.simplefilter("ignore", DeprecationWarning)  # OpenBLAS's idle pool, which its fork handlers stop
            pid = os.fork()
        if pid == 0:
            try:
                for close in closers:
                    close()
                _child(conn, fds, request, imports_env)
            finally:
                os._exit(1)  # whatever happened, the child never runs the daemon's code
        state["served"] += 1
        return False, pid
    except (OSError, ValueError):  # a request cut short, or no fork: the command runs itself
        pass
    finally:
        for fd in fds:
            os.close(fd)
    return False, None


class _Commands:
    """The commands running in the daemon's children, each watched through a pidfd of its process and the
    daemon's end of its caller's connection (None once the caller is gone). A pidfd, not a pid: the command may
    have ended and its pid gone to another process (except in the microseconds between the fork and pidfd_open,
    where the kernel reaps the children itself: _waits_on_pidfds). A child the kernel gives no pidfd for (too many
    open files) is only reaped, by its pid, so that it does not stay a zombie while the daemon lives."""

    def __init__(self):
        self.running: dict[int, socket.socket | None] = {}  # pidfd -> connection
        self.unwatched: set[int] = set()  # pids

    def watch(self, pid: int, conn: socket.socket) -> bool:
        """Watch the child `pid` and its caller's connection `conn`; False where the kernel gave no pidfd (a kernel
        before 5.3, too many open files): the child is then only reaped, and the connection is the caller's."""
        try:
            pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self.unwatched.add(pid)
            return False
        self.running[pidfd] = conn
        return True

    def reap_unwatched(self) -> None:
        for pid in list(self.unwatched):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # the kernel reaped it (SIGCHLD ignored)
                done = pid
            if done:
                self.unwatched.discard(pid)

    def closers(self) -> list:
        """What a newly forked child calls to close the watch it inherited: pidfds and connections."""
        return [*(conn.close for conn in self.running.values() if conn),
                *(partial(os.close, pidfd) for pidfd in self.running)]

    def wait(self, listener: socket.socket | None = None, timeout: float | None = None) -> tuple[bool, bool]:
        """Wait for a connection on `listener`, a command's end or its caller's: whether a connection waits, and
        whether a command or a caller ended.
        - A command that ended is reaped; one killed by a signal tells its caller which (it has no exit status to
          send), and its connection is closed, so that its caller's wait ends in any case.
        - A command whose caller ended first is continued, in case the caller was killed while Ctrl-Z stopped both:
          its own watch (_interrupt_when_gone) then interrupts it as Ctrl-C would. It stays watched until it ends."""
        poller = select.poll()  # not select(): no limit on the descriptors' numbers
        for watched in (*([listener] if listener else []), *self.running, *filter(None, self.running.values())):
            poller.register(watched, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}
        self.reap_unwatched()
        changed = False
        for pidfd, conn in list(self.running.items()):
            if pidfd in ready:
                number = _killed_by(pidfd)
                if conn and number is not None:
                    with contextlib.suppress(OSError):
                        conn.sendall(_line({"signal": number}))
                del self.running[pidfd]
                os.close(pidfd)
            elif conn and conn.fileno() in ready:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGCONT)
                self.running[pidfd] = None
            else:
                continue
            if conn:
                conn.close()
            changed = True
        return listener is not None and listener.fileno() in ready, changed


def _waits_on_pidfds() -> bool:
    """Whether this kernel waits on a child through its pidfd (Linux 5.4; pidfd_open itself is 5.3)."""
    try:
        own = os.pidfd_open(os.getpid())
    except (OSError, AttributeError):
        return False
    try:
        os.waitid(os.P_PIDFD, own, os.WEXITED | os.WNOHANG)
    except ChildProcessError:  # understood, and this process is not its own child
        return True
    except (OSError, AttributeError):  # EINVAL from an older kernel; no P_PIDFD in this Python
        return False
    finally:
        os.close(own)
    return True


def _killed_by(pidfd: int) -> int | None:
    """Reap the ended child behind `pidfd`: the signal that ended it, None if it exited (or the kernel reaped it)."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except (OSError, AttributeError):  # reaped by the kernel (SIGCHLD ignored)
        return None
    return result.si_status if result and result.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else None


def _receive(conn: socket.socket) -> tuple[bytes, list[int], dict]:
    kind, fds, _, _ = socket.recv_fds(conn, 1, 3)
    try:
        return kind, fds, json.loads(conn.makefile("rb").readline())
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise


def import_what_commands_use() -> None:
    import showdown.cli  # noqa: F401
    import showdown.experiment.runner  # noqa: F401
    import showdown.reporting.report  # noqa: F401

    for optional in ("pytorch_grad_cam", "cleanlab.filter", "openvino"):
        with contextlib.suppress(ImportError):
            __import__(optional)
    # What a process loads on first use, once here for every child: Pillow's format plugins, and matplotlib's
    # fonts and text layout (Agg draws in this thread; no torch op runs, so no thread pool starts).
    from PIL import Image

    from showdown.reporting.plots import curves_figure, png_bytes

    Image.init()
    png_bytes(curves_figure([{"phase": "head", "train_loss": 1.0, "val_loss": 1.0, "train_acc": 0.5,
                              "val_acc": 0.5}], "warm"))  # a legend, a title, both axes' ticks


def _child(conn: socket.socket, fds: list[int], request: dict, imports_env: dict) -> None:
    """In the forked child: become the asking command (its streams, folder and environment), run it, report."""
    from showdown.__main__ import finish
    from showdown.cli import main

    ignored, ended = request.get("ignored", ()), threading.Event()
    # Before the pid goes out, from when the asking process relays its signals: as a process started by it would
    # have them, whatever the daemon's are (one started under nohup ignores SIGHUP).
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command waits on subprocesses of its own
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the daemon's import timeout
    for name in RELAYED:
        default = signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL
        signal.signal(getattr(signal, name), signal.SIG_IGN if name in ignored else default)
    code = 1
    try:
        try:
            conn.settimeout(None)
            conn.sendall(_line({"pid": os.getpid()}))
        except OSError:  # it gave up waiting and runs the command itself
            os._exit(0)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        fds.clear()
        sys.stdin, sys.stdout, sys.stderr = (_stream(0, sys.__stdin__), _stream(1, sys.__stdout__),
                                             _stream(2, sys.__stderr__))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.update(imports_env["changed"])
        for key in imports_env["removed"]:
            os.environ.pop(key, None)
        sys.argv = ["showdown", *request["argv"]]
        if _first_path_is_the_folder():  # what it imports later is looked for where its own process would look
            sys.path[0] = request.get("path0", sys.path[0])
        threading.Thread(target=_interrupt_when_gone, args=(conn, ignored, ended), daemon=True).start()
        code = main(request["argv"]) or 0
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:  # its caller left before the command could take Ctrl-C itself
        print("interrupted", file=sys.stderr)
        code = 130
    except BaseException:  # a bug: the traceback goes to the command's terminal
        import traceback

        traceback.print_exc()
    finally:
        # The asking process closes its end once it has the status: no interrupt from here on, in any thread.
        ended.set()
        for name in RELAYED:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        with contextlib.suppress(BaseException):
            finish()
        with contextlib.suppress(BaseException):
            conn.sendall(_line({"exit": code}))
        os._exit(0)


def _stream(fd: int, like: io.TextIOWrapper):
    """fd 0, 1 or 2 as Python opens its standard streams: the same encoding and errors (PYTHONIOENCODING),
    line-buffered on a terminal, unbuffered under -u / PYTHONUNBUFFERED."""
    unbuffered = sys.__stdout__.write_through  # what -u / PYTHONUNBUFFERED set up in this process too
    if fd == 0:
        return open(0, encoding=like.encoding, errors=like.errors, closefd=False)  # noqa: SIM115
    raw = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding=like.encoding, errors=like.errors,
                            line_buffering=os.isatty(fd) or fd == 2, write_through=unbuffered)


def _interrupt_when_gone(conn: socket.socket, ignored, ended: threading.Event) -> None:
    """The asking process was killed (its end of the socket closed): interrupt the command as Ctrl-C would, or
    SIGTERM where it ignores Ctrl-C (a background job of a script), or end it where it ignores both: without a
    daemon it would have died with its process."""
    with contextlib.suppress(OSError):
        conn.recv(1)
    if ended.is_set():  # it closed its end after the command's status came: nothing to interrupt
        return
    number = next((getattr(signal, name) for name in ("SIGINT", "SIGTERM") if name not in ignored), signal.SIGKILL)
    os.kill(os.getpid(), number)


if __name__ == "__main__":  # started by `_spawn()`
    serve(Path(sys.argv[1]), float(sys.argv[2]), open(int(sys.argv[3]), "a"))  # noqa: SIM115 - held for life
    sys.stdout.flush()
    os._exit(0)  # no teardown of the imports: 0.3-0.5 s, and nothing left to write
