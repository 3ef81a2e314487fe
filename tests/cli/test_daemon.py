"""`showdown daemon`: a real daemon process, real `showdown` commands forwarded to it over its socket."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from showdown import daemon

pytestmark = pytest.mark.skipif(not daemon.supported(), reason="the daemon needs Linux")

QUICK_RUN = ["run", "--data", "demo", "--models", "efficientnet_lite0", "--max-per-class", "2", "--image-size", "64",
             "--precision", "fp32", "--no-report", "--no-record", "--workers", "0"]


def showdown(*args, env, cwd=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "showdown", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, **kwargs)


def served(env) -> int:
    out = showdown("daemon", "status", env=env).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if "(this environment" in line)


def _short_folder() -> Path:
    """A socket folder with a short path, as $XDG_RUNTIME_DIR/showdown is (a socket's path has 107 bytes at most;
    pytest's own folders under xdist can take most of them)."""
    return Path(tempfile.mkdtemp(prefix="sd-"))


@pytest.fixture(scope="module")
def warm():
    """A daemon started from a fixed environment (the test's own changes per test, e.g. PYTEST_CURRENT_TEST)."""
    folder = _short_folder()
    env = {**os.environ, "SHOWDOWN_DAEMON_DIR": str(folder / "sockets")}
    started = showdown("daemon", "start", "--idle-minutes", "10", env=env, timeout=300)
    assert started.returncode == 0 and "daemon ready" in started.stdout, started.stderr
    yield env
    stopped = showdown("daemon", "stop", env=env)
    assert stopped.stdout.strip() == "stopped 1 daemon(s)"
    assert not list(folder.glob("sockets/*.sock"))
    shutil.rmtree(folder, ignore_errors=True)


def test_a_command_runs_in_the_daemon_in_the_callers_folder_with_its_streams_and_exit_status(warm, tmp_path):
    before = served(warm)
    done = showdown(*QUICK_RUN, "--epochs", "1", "--out", "relative", env=warm, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "efficientnet_lite0" in done.stdout and "test acc" in done.stdout  # its table, on the caller's stdout
    assert "epoch 1/1" in done.stderr  # its progress, on the caller's stderr
    assert (tmp_path / "relative" / "efficientnet_lite0-head" / "metrics.json").is_file()  # in the caller's folder
    bad = showdown("run", "--epochs", "none", env=warm)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error:")
    assert served(warm) == before + 2


def test_a_command_from_another_environment_runs_in_its_own_process(warm):
    before = served(warm)
    other = {**warm, "OMP_NUM_THREADS": "2"}  # read when torch starts its threads: a fork of the daemon can't honour it
    assert showdown("presets", env=other).returncode == 0
    assert "another environment" in showdown("daemon", "status", env=other).stdout
    assert served(warm) == before


PROCESS_SETTINGS = {"umask 077": lambda: os.umask(0o077), "nice 5": lambda: os.nice(5),
                    "taskset one core": lambda: os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])}


@pytest.mark.parametrize("setting", PROCESS_SETTINGS)
def test_a_command_started_with_other_process_settings_runs_in_its_own_process(warm, setting):
    """`umask 077` (the run's files), `nice`, `taskset` (torch's threads): inherited, not in the environment; a
    daemon's child would have the daemon's."""
    if setting.startswith("taskset") and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core only")
    before = served(warm)
    done = subprocess.run([sys.executable, "-m", "showdown", "presets"], env=warm, capture_output=True, text=True,
                          preexec_fn=PROCESS_SETTINGS[setting])
    assert done.returncode == 0, done.stderr
    assert served(warm) == before


def test_a_command_whose_folder_was_removed_runs_without_a_traceback(warm, tmp_path):
    """The `showdown` script (`python -m` finds no daemon there: it puts the missing folder first on its path)."""
    script = Path(sys.executable).with_name("showdown")
    if not script.is_file():
        pytest.skip(f"no showdown script beside {sys.executable}")
    before = served(warm)
    assert subprocess.run([script, "presets"], env=warm, cwd=tmp_path, capture_output=True).returncode == 0
    assert served(warm) == before + 1  # the script finds the daemon `python -m showdown` started
    gone = tmp_path / "gone"
    gone.mkdir()
    done = subprocess.run(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "$0" presets', script], env=warm,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "cifar10-lite0-head" in done.stdout


def test_a_profiled_command_is_not_sent_to_the_daemon(warm, tmp_path):
    """`python -m cProfile -m showdown ...` must profile the command, not a process waiting on a socket."""
    before = served(warm)
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "profile"), "-m", "showdown",
                           "presets"], env=warm, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert served(warm) == before


def test_a_command_in_a_folder_with_its_own_matplotlibrc_runs_in_its_own_process(warm, tmp_path):
    """matplotlib reads ./matplotlibrc (the report's figures) as it is imported, and the daemon imported it in its
    own folder."""
    (tmp_path / "matplotlibrc").write_text("figure.dpi: 33\n")
    before = served(warm)
    done = showdown("presets", env=warm, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert served(warm) == before


def test_code_moved_in_with_an_old_modification_time_changes_the_key(tmp_path, sockets, monkeypatch):
    """`mv`, `cp -p` and rsync keep a file's modification time: the key takes the change times, which they cannot
    set back, so a daemon never serves code older than what is installed."""
    monkeypatch.setenv("SHOWDOWN_DAEMON_DIR", str(sockets))
    site = tmp_path / "site"
    site.mkdir()
    before = daemon.socket_path(paths=["", str(site)])
    stamp = site.stat().st_mtime_ns
    time.sleep(0.05)  # past the file system clock's tick
    (tmp_path / "module.py").write_text("VALUE = 2\n")
    os.replace(tmp_path / "module.py", site / "module.py")
    os.utime(site, ns=(stamp, stamp))  # the folder's modification time as it was
    assert daemon.socket_path(paths=["", str(site)]) != before


def _interruptible() -> None:
    """Ctrl-C and Ctrl-Z as in a terminal, even where the tests run as a background job (which ignores SIGINT, and
    a process keeps ignoring what it was started ignoring) or under nohup: a job of its own process group, as a
    shell starts it. The kernel drops Ctrl-Z's stop in a group with no parent outside it (an orphaned group), so
    in the tests' own group, under nohup, no process would stop, with or without the daemon."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.setpgid(0, 0)


def _started(env, tmp_path):
    """A command in the daemon that trains for long; returns once its first epoch is printed."""
    process = subprocess.Popen([sys.executable, "-m", "showdown", *QUICK_RUN, "--epochs", "500", "--patience", "500",
                                "--out", str(tmp_path)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, preexec_fn=_interruptible)
    for line in process.stderr:
        if "epoch 1/500" in line:
            return process
    raise AssertionError(f"no epoch printed (exit {process.wait()})")


def _children(daemon_pid: int) -> list[int]:
    with open(f"/proc/{daemon_pid}/task/{daemon_pid}/children") as handle:
        return [int(pid) for pid in handle.read().split()]


def _until(condition, seconds=30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_ctrl_c_reaches_the_command_and_a_killed_caller_interrupts_it(warm, tmp_path):
    process = _started(warm, tmp_path / "ctrl-c")
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)  # read on: a full pipe would stop the command mid-line
    assert process.returncode == 130 and "interrupted" in rest
    # stopped in its first entry, after an epoch: what it kept is that epoch (not "finished entries")
    assert f"the interrupted one's last epoch is kept in {tmp_path / 'ctrl-c'}; `showdown run --resume " \
        f"{tmp_path / 'ctrl-c'}`" in rest
    process = _started(warm, tmp_path / "terminated")
    process.send_signal(signal.SIGTERM)  # e.g. `timeout` or a scheduler: the caller ends as the command did
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "terminated (SIGTERM): no entry had finished" in rest

    pid = int(showdown("daemon", "status", env=warm).stdout.split()[1])
    process = _started(warm, tmp_path / "killed")
    assert len(_children(pid)) == 1
    process.kill()
    process.stderr.close()  # nobody reads the command's progress any more
    _until(lambda: not _children(pid), seconds=60)  # the command's process stops, as after Ctrl-C
    assert _children(pid) == []


def test_a_killed_caller_that_ignored_ctrl_c_still_ends_its_command(warm, tmp_path):
    """A background job of a script ignores SIGINT (and the command with it): killing the caller must still end the
    command, as it would have ended with the caller's own process."""
    pid = int(showdown("daemon", "status", env=warm).stdout.split()[1])
    epochs = "100000"  # minutes of training: ended within seconds only if ended by the caller's death
    log = tmp_path / "stderr"  # a file, not a pipe: a pipe closed with its reader would end the command by itself
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "showdown", *QUICK_RUN, "--epochs", epochs, "--patience",
                                    epochs, "--out", str(tmp_path / "run")], env=warm, stderr=stderr,
                                   stdout=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                                               signal.SIG_IGN))
    assert _until(lambda: f"epoch 1/{epochs}" in log.read_text(), seconds=120), log.read_text()[-2000:]
    assert len(_children(pid)) == 1
    process.kill()
    assert _until(lambda: not _children(pid), seconds=20)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]  # R, S, T (stopped), ...


def _signals(pid: int) -> str:
    """Which signals a process blocks, ignores and catches (hexadecimal masks; SIGTSTP is 0x80000)."""
    with open(f"/proc/{pid}/status") as handle:
        return " ".join(line.replace("\t", " ") for line in handle if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def test_ctrl_z_stops_the_command_with_its_caller_and_continuing_the_caller_continues_it(warm, tmp_path):
    pid = int(showdown("daemon", "status", env=warm).stdout.split()[1])
    process = _started(warm, tmp_path / "ctrl-z")
    (command,) = _children(pid)
    process.send_signal(signal.SIGTSTP)  # what Ctrl-Z sends to the terminal's foreground job
    assert _until(lambda: _state(process.pid) == "T" and _state(command) == "T"), \
        f"caller {_state(process.pid)}, command {_state(command)}, children {_children(pid)}; {_signals(process.pid)}"
    time.sleep(0.5)
    assert _state(command) == "T"  # and stays stopped
    process.send_signal(signal.SIGCONT)  # `fg`
    assert _until(lambda: _state(command) != "T" and _state(process.pid) != "T")
    assert "epoch 2/500" in process.stderr.readline() + process.stderr.readline()  # training goes on
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130


def _pidfd() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _gone(pid: int) -> bool:
    try:
        return _state(pid) == "Z"  # ended; its parent (init, in a container maybe none) not yet reaped it
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not _pidfd(), reason="the daemon watches its commands through pidfds (Linux 5.3)")
def test_a_caller_killed_while_stopped_ends_its_command_also_after_the_daemon_was_stopped(tmp_path, sockets):
    env = {**os.environ, "SHOWDOWN_DAEMON_DIR": str(sockets)}
    assert showdown("daemon", "start", env=env, timeout=300).returncode == 0
    pid = int(showdown("daemon", "status", env=env).stdout.split()[1])
    process = _started(env, tmp_path)
    (command,) = _children(pid)
    assert showdown("daemon", "stop", env=env).stdout.strip() == "stopped 1 daemon(s)"
    assert _until(lambda: not list(sockets.glob("*.sock")))  # no new commands come
    assert not _gone(pid)  # the running one is still watched
    process.send_signal(signal.SIGTSTP)
    assert _until(lambda: _state(command) == "T")
    process.kill()  # `kill -9 %1`
    process.stderr.close()
    assert _until(lambda: _gone(command), seconds=60), f"command {_state(command)}"  # continued, then interrupted
    assert _until(lambda: _gone(pid))  # and the daemon leaves with its last command


def test_a_command_killed_in_the_daemon_kills_its_caller_alike(warm, tmp_path):
    """The out-of-memory killer's SIGKILL: the caller dies of it too (exit status 137 in a shell, as without the
    daemon), and does not wait for ever on the connection the daemon holds while it watches the command."""
    pid = int(showdown("daemon", "status", env=warm).stdout.split()[1])
    process = _started(warm, tmp_path)
    (command,) = _children(pid)
    os.kill(command, signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
    _, rest = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, rest
    assert "Traceback" not in rest and "error:" not in rest, rest
    assert _until(lambda: not _children(pid))  # reaped: no zombie left in the daemon


def test_a_socket_folder_others_can_enter_is_refused_in_one_line(tmp_path):
    shared = tmp_path / "open"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    refused = showdown("daemon", "start", env={**os.environ, "SHOWDOWN_DAEMON_DIR": str(shared)})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "open to others" in refused.stderr


def _as_in_a_users_shell(sockets) -> dict:
    """The environment without pytest's and CI's markers, under which no daemon is started unasked."""
    env = {k: v for k, v in os.environ.items() if k not in (*daemon.NOT_AUTOSTARTED_UNDER, "SHOWDOWN_DAEMON")}
    return {**env, "SHOWDOWN_DAEMON_DIR": str(sockets)}


@pytest.fixture
def sockets():
    folder = _short_folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_command_that_imported_torch_starts_the_daemon_and_the_next_waits_for_it(tmp_path, sockets):
    """Also where OpenMP pins threads (OMP_PROC_BIND): loading torch's OpenMP pins the command's thread to one core,
    after the command was keyed by the cores it started with; the daemon it starts must get those, or it refuses to
    start ("differ") and the second command finds none."""
    env = {**_as_in_a_users_shell(sockets), "OMP_PROC_BIND": "true", "OMP_PLACES": "cores"}
    failed = showdown("run", "--data", str(tmp_path / "no-such-folder"), env=env, timeout=300)
    assert failed.returncode != 0 and failed.stderr.count("\n") == 1  # bad input: its one line, and no daemon
    assert not list(sockets.glob("*.sock")) and not list(sockets.glob("*.log"))
    try:
        first = showdown(*QUICK_RUN, "--epochs", "1", "--out", str(tmp_path / "first"), env=env, timeout=300)
        assert first.returncode == 0, first.stderr
        assert first.stderr.strip().splitlines()[-1].startswith("started a showdown daemon")
        # At once, while that daemon still imports: this command waits for it rather than importing beside it.
        second = showdown(*QUICK_RUN, "--epochs", "1", "--out", str(tmp_path / "second"), env=env, timeout=300)
        assert second.returncode == 0 and "started a showdown daemon" not in second.stderr, second.stderr
        assert (tmp_path / "second" / "efficientnet_lite0-head" / "metrics.json").is_file()
        assert served(env) == 1
        light = showdown("presets", env={**env, "SHOWDOWN_DAEMON_DIR": str(tmp_path / "light")})
        assert light.returncode == 0 and "daemon" not in light.stderr  # no torch imported, nothing to save
        assert not list((tmp_path / "light").glob("*.sock"))
    finally:
        showdown("daemon", "stop", env=env)
    assert not list(sockets.glob("*.sock"))
    again = showdown("daemon", "start", env=env, timeout=300)  # at once: the stopped one's claim is already free
    try:
        assert again.returncode == 0 and "daemon ready" in again.stdout, again.stderr
    finally:
        showdown("daemon", "stop", env=env)


def test_stop_while_the_daemon_still_imports_stops_it_once_it_answers(sockets):
    """`showdown daemon stop` typed at once after the run that started a daemon (the run's last line says so)
    finds it still importing: `status` says so, and `stop` waits for it to answer, then stops it."""
    env = {**os.environ, "SHOWDOWN_DAEMON_DIR": str(sockets)}
    starting = subprocess.Popen([sys.executable, "-m", "showdown", "daemon", "start"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _until(lambda: any(daemon._claimed_since(claim.with_suffix(".sock")) for claim in
                                  sockets.glob("*.claim")), seconds=30)
        status = showdown("daemon", "status", env=env)
        stopped = showdown("daemon", "stop", env=env, timeout=120)
    finally:
        starting.wait(timeout=120)  # it said ready, or that the daemon ended: stop and start raced
    assert status.stdout.startswith("starting: importing  (this environment;"), status.stdout
    assert stopped.stdout.strip() == "stopped 1 daemon(s)"
    (claim,) = sockets.glob("*.claim")
    assert _until(lambda: daemon._claimed_since(claim.with_suffix(".sock")) is None, seconds=30)  # it ended


@pytest.mark.parametrize("marker", [("SHOWDOWN_DAEMON", "off"), ("CI", "true"), ("SLURM_JOB_ID", "42"),
                                    ("TORCHELASTIC_RUN_ID", "job"), ("PYTEST_CURRENT_TEST", "t.py::t (call)")])
def test_no_daemon_is_started_unasked_when_turned_off_in_ci_or_in_a_cluster_job(sockets, monkeypatch, marker):
    for name, value in _as_in_a_users_shell(sockets).items():
        monkeypatch.setenv(name, value)
    for name in (*daemon.NOT_AUTOSTARTED_UNDER, "SHOWDOWN_DAEMON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CI", "false")  # set, but saying no
    assert daemon.autostarter() is not None
    monkeypatch.setenv(*marker)
    assert daemon.autostarter() is None


def test_a_socket_folder_too_long_for_a_socket_path_is_refused_in_one_line(tmp_path):
    deep = tmp_path / ("d" * 100)
    refused = showdown("daemon", "start", env={**os.environ, "SHOWDOWN_DAEMON_DIR": str(deep)})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "too long" in refused.stderr


def test_the_daemon_gets_the_commands_interpreter_flags_and_not_twice_what_the_environment_gives():
    """Flags are part of a daemon's key: -W and -X from the command line are passed on; the dev mode PYTHONDEVMODE
    sets reaches the daemon through its environment, and passed again as -X dev it would differ."""
    script = "import os; from showdown.daemon import _interpreter_flags; print(_interpreter_flags(dict(os.environ)))"
    given = subprocess.run([sys.executable, "-W", "ignore::UserWarning", "-X", "importtime", "-c", script],
                           capture_output=True, text=True, env={**os.environ, "PYTHONDEVMODE": "1"}).stdout
    assert "-Wignore::UserWarning" in given and "'importtime'" in given and "'dev'" not in given
    explicit = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True).stdout
    assert "'-X', 'dev'" in explicit


STUCK_DAEMON = """
import socket, sys
from showdown import daemon
daemon.FORK_TIMEOUT_S = float(sys.argv[1])
listener = socket.socket(socket.AF_UNIX)  # a daemon that takes the connection and never answers
listener.bind(str(daemon.socket_path()))
listener.listen(1)
send = daemon._send

def announced(*args, **kwargs):  # the signals are relayed from here on
    replies = send(*args, **kwargs)
    print("asked", flush=True)
    return replies

daemon._send = announced
code = daemon.forward(["presets"])
listener.close()
print("runs it itself" if code is None else f"exit {code}", flush=True)
"""


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTSTP], ids=["Ctrl-C", "Ctrl-Z"])
def test_a_key_pressed_while_a_stuck_daemon_is_asked_takes_effect(sockets, number):
    """Ctrl-C at once (not after the wait for the daemon); Ctrl-Z once the command runs in this process."""
    timeout = 60 if number == signal.SIGINT else 3
    env = {**os.environ, "SHOWDOWN_DAEMON_DIR": str(sockets)}
    process = subprocess.Popen([sys.executable, "-c", STUCK_DAEMON, str(timeout)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)
    try:
        assert process.stdout.readline() == "asked\n"
        process.send_signal(number)
        if number == signal.SIGTSTP:
            assert _until(lambda: _state(process.pid) == "T", seconds=timeout + 10)
            process.send_signal(signal.SIGCONT)
        out, err = process.communicate(timeout=30)  # for Ctrl-C, within half the daemon's wait
    finally:
        process.kill()
    assert out == ("exit 130\n" if number == signal.SIGINT else "runs it itself\n"), (out, err)
    assert err == ("interrupted\n" if number == signal.SIGINT else "")


def test_the_idle_clock_runs_only_while_no_command_does(sockets):
    """A command that runs longer than the idle time (a training) keeps its daemon: the daemon leaves an idle time
    after the command ended, not an idle time after it started."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sockets / "idle.sock"))
    listener.listen()
    command = subprocess.Popen(["sleep", "3"])  # a real process, watched as the daemon watches its children
    daemon_end, caller_end = socket.socketpair()
    commands = daemon._Commands()
    assert commands.watch(command.pid, daemon_end)
    start = time.monotonic()
    with listener, caller_end:
        daemon._take_commands(listener, commands, state={}, claim=None, idle_seconds=0.5,
                              superseded=lambda: False, imports_env={})
    assert command.poll() is not None and time.monotonic() - start >= 3.4
    assert not commands.running


def test_a_command_the_kernel_gives_no_pidfd_is_reaped_all_the_same():
    """With every file descriptor in use, pidfd_open fails for a forked command: the daemon cannot watch it, but
    reaps it by its pid once it ends, instead of leaving a zombie for as long as the daemon lives."""
    import resource

    command = os.posix_spawn(shutil.which("true"), ["true"], dict(os.environ))  # a real child of this process
    daemon_end, caller_end = socket.socketpair()
    commands = daemon._Commands()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # the next descriptor is one too many
    try:
        watched = commands.watch(command, daemon_end)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with daemon_end, caller_end:
        assert not watched and command in commands.unwatched
        assert _until(lambda: _state(command) == "Z", seconds=10)  # ended, not yet reaped
        commands.wait(timeout=0.1)
    assert not commands.unwatched
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(command, os.WNOHANG)


def test_a_daemon_started_in_a_folder_of_stray_modules_does_not_import_them(tmp_path, sockets):
    """The daemon runs as `python -m` from the first command's folder, which Python puts first on its path; a
    `yaml.py` there must not stand in for PyYAML in every command (the `showdown` script never looks there)."""
    script = Path(sys.executable).with_name("showdown")
    if not script.is_file():
        pytest.skip(f"no showdown script beside {sys.executable}")
    (tmp_path / "yaml.py").write_text("raise ImportError('the stray yaml.py was imported')\n")
    env = {**os.environ, "SHOWDOWN_DAEMON_DIR": str(sockets)}
    started = subprocess.run([script, "daemon", "start", "--idle-minutes", "1"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0 and "daemon ready" in started.stdout, started.stdout + started.stderr
        done = subprocess.run([script, "presets"], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0 and "cifar10-lite0-head" in done.stdout, done.stderr
        assert served(env) == 1
    finally:
        showdown("daemon", "stop", env=env)
