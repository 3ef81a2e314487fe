"""`--executor ray` on a real local Ray cluster (`ray start --head` on loopback, not local_mode).

The same small showdown (demo data, three randomly initialised backbones, head) runs in one process and as Ray
tasks; the merged run must hold the single run's entries, each once, with the same head predictions. One shard's
worker is killed (SIGKILL, by the pid its task wrote) after that shard finished an entry: Ray retries the task,
the retry keeps the finished entry (its model file is not written again), and the run still ends complete.
"""
import importlib.util
import json
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
import yaml

from tests.conftest import run_cli

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the ray extra is not installed (pip install 'tl-showdown[ray]')")

MODELS = ["mobilenetv3_small_050", "efficientnet_lite0", "resnet10t"]
FLAGS = ["--data", "demo", "--models", ",".join(MODELS), "--strategy", "head", "--no-pretrained", "--image-size",
         "64", "--epochs", "1", "--workers", "0", "--precision", "fp32", "--label-issues", "off", "--gradcam", "0",
         "--no-report"]
# Ray 2.60 turns token authentication on for `ray start` where ~/.ray/auth_token exists, but not for a driver given
# an explicit address: the test's own loopback cluster goes without, whatever the home folder holds.
NO_TOKEN = {"RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """The processes of session `sid`: `ray start` and all it started (workers have process groups of their own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            alive = entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            if alive and os.getsid(int(entry.name)) == sid:  # zombies are gone but for their exit status
                pids.append(int(entry.name))
        except (ProcessLookupError, FileNotFoundError):
            pass
    return pids


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster with 2 CPUs on 127.0.0.1, in a session of its own whose processes teardown kills
    (the GCS, the raylet and every worker), so nothing is left running."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    # one thread per process, here as in the single run: the same sums in the same order, the same bytes
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "OMP_NUM_THREADS": "1", **NO_TOKEN}
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--num-cpus", "2", "--port", str(port), "--include-dashboard=false", "--temp-dir", temp,
         "--disable-usage-stats"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    try:
        lines = []
        for line in head.stdout:  # --block: it prints this once the head node is up, then stays
            lines.append(line)
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail("ray start --head did not start:\n" + "".join(lines))
        yield f"127.0.0.1:{port}"
    finally:
        for pid in _session_pids(head.pid):  # the GCS, the raylet, the workers
            os.kill(pid, signal.SIGKILL)
        head.wait(timeout=10)
        deadline = time.time() + 10
        while _session_pids(head.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _session_pids(head.pid), "Ray processes left running"
        head.stdout.close()
        shutil.rmtree(temp, ignore_errors=True)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _kill_a_shard_after_its_first_entry(shards: Path, driver: subprocess.Popen) -> tuple[int, str, dict]:
    """SIGKILL the worker of the shard with two backbones once it finished one: (the pid, the shard's folder, the
    finished models' modification times)."""
    from showdown.experiment.shards import assign

    folder = shards / f"shard-{[len(s) for s in assign(MODELS, 2, 64)].index(2)}"
    while driver.poll() is None:
        pid_file = folder.with_suffix(".pid")
        # metrics.json is an entry's last file: written, the entry counts as finished (model.safetensors alone
        # does not, and a kill between the two trains the entry again, as it should)
        finished = [done.with_name("model.safetensors") for done in folder.glob("*-head/metrics.json")]
        if pid_file.is_file() and finished:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGKILL)
            return pid, folder.name, {path: path.stat().st_mtime_ns for path in finished}
        time.sleep(0.05)
    pytest.fail("the run ended before a worker could be killed:\n" + driver.stdout.read())


@needs_ray
# ~26 s on 2 quiet cores (AMD EPYC Zen 4; 1.5 to 3 minutes on busy ones): Ray's start, three showdown processes, a retry
def test_ray_executor_gives_the_single_run_and_survives_a_killed_worker(cluster, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "", "OMP_NUM_THREADS": "1", **NO_TOKEN}
    out, single = tmp_path / "ray-run", tmp_path / "single"
    driver = subprocess.Popen([sys.executable, "-m", "showdown", "run", *FLAGS, "--executor", "ray", "--ray-address",
                               cluster, "--out", str(out), "--db", str(tmp_path / "results.db")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    # meanwhile, the same showdown in one process (watched for the kill as it runs: waiting for it first, the
    # shard could finish before it is killed)
    alone = subprocess.Popen([sys.executable, "-m", "showdown", "run", *FLAGS, "--no-record", "--out", str(single),
                              "--cache-dir", str(tmp_path / "single-cache")],  # not the shards' features to reuse
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    pid, killed, finished = _kill_a_shard_after_its_first_entry(out / "shards", driver)
    _, errors = alone.communicate(timeout=300)
    assert alone.returncode == 0, errors
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    assert "ray: 2 shards of 3 backbones, each a task with 1 CPU(s)" in output
    # the retry resumed the killed shard's folder: the entry finished before the kill was kept, not trained again
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    assert f"run folder: {out}" in output and "efficientnet_lite0" in output.rsplit("merged 3 entries", 1)[1]
    # one table, the merged run's: each shard's output is in its log file, not on the console with Ray's colours
    # (Ray's own word on the killed worker still comes)
    assert output.count("run folder: ") == 1 and "(run_shard pid=" not in output, output
    assert all("[head] epoch" in (out / "shards" / f"shard-{i}.log").read_text() for i in (0, 1))
    assert int((out / "shards" / f"{killed}.pid").read_text()) != pid  # a new worker ran it
    rows, expected = _summary(out)["rows"], _summary(single)["rows"]
    assert [row["folder"] for row in rows] == [row["folder"] for row in expected]  # every entry once, in run order
    for row in expected:  # head training on the same features is deterministic
        assert (out / row["folder"] / "predictions.csv").read_bytes() == \
            (single / row["folder"] / "predictions.csv").read_bytes(), row["folder"]
    merged = json.loads((out / "merge.json").read_text())
    assert sorted(s["shard"] for s in merged["shards"]) == ["0/2", "1/2"]
    assert all(Path(s["run_dir"]).parent == out / "shards" for s in merged["shards"])
    # the merged folder records the run as asked, not a shard's settings (--no-record, executor local, 0/2)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["executor"], config["ray_address"], config["shard"]) == ("ray", cluster, None)
    assert config["record"] is True and config["report"] is False and config["models"] == MODELS
    # and its --resume is the whole run's, in this process: every entry kept, recorded as asked, no Ray
    resumed = run_cli("run", "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("finished earlier, kept") == len(MODELS), resumed.stdout
    assert "recorded as run" in resumed.stdout and "ray:" not in resumed.stdout


@needs_ray
def test_a_ray_run_whose_driver_was_killed_resumes_its_shards_and_merges(cluster, tmp_path):
    """The driver stopped by SIGTERM before the merge (a job's time limit): one line saying what is kept and how
    to go on, exit status 143; its folder holds only the shards. `showdown run --resume` on it runs the shards
    on, each from where it stopped, and merges them."""
    env = {**os.environ, "RAY_ADDRESS": "", "OMP_NUM_THREADS": "1", **NO_TOKEN}
    out = tmp_path / "ray-run"
    driver = subprocess.Popen([sys.executable, "-m", "showdown", "run", *FLAGS, "--executor", "ray", "--ray-address",
                               cluster, "--out", str(out), "--no-record"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    shards = out / "shards"
    deadline = time.time() + 300
    while driver.poll() is None and time.time() < deadline and not list(shards.glob("shard-*/*-head/metrics.json")):
        time.sleep(0.05)
    finished = {path: path.stat().st_mtime_ns for path in shards.glob("shard-*/*-head/model.safetensors")
                if path.with_name("metrics.json").is_file()}
    assert driver.poll() is None and finished, "the run ended before its driver could be killed"
    driver.send_signal(signal.SIGTERM)  # `timeout`, or a scheduler's end of the job (Ray's own handler dumped stacks)
    said, _ = driver.communicate(timeout=60)
    assert driver.returncode == 128 + signal.SIGTERM, said
    assert said.rstrip().endswith(f"terminated (SIGTERM): finished entries are kept in {shards}; `showdown run "
                                  f"--resume {out}` goes on"), said[-800:]
    workers = [int(p.read_text()) for p in shards.glob("shard-*.pid")]
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.time() < deadline:  # Ray ends its tasks
        time.sleep(0.1)
    assert not (out / "config.yaml").exists() and (shards / "config.yaml").is_file()
    resumed = subprocess.run([sys.executable, "-m", "showdown", "run", "--resume", str(out)], capture_output=True,
                             text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "merged 3 entries of 2 runs" in resumed.stdout, resumed.stdout
    assert [row["model"] for row in _summary(out)["rows"]] == MODELS
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # kept, not trained again


def test_executor_ray_without_ray_is_one_line(tmp_path):
    """Ray hidden from the process: one line, exit status 2, before any work."""
    hide = "import importlib.util as u; f = u.find_spec; u.find_spec = lambda n, *a: None if n == 'ray' else f(n, *a)"
    code = f"{hide}\nimport sys\nfrom showdown.cli import main\nsys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, "run", "--executor", "ray", "--models", "efficientnet_lite0",
                             "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: --executor ray needs Ray, which is not installed: pip install " \
        "'tl-showdown[ray]'"
    assert not (tmp_path / "run").exists()


def test_one_shard_per_backbone_capped_by_what_the_cluster_runs_at_once():
    from showdown.errors import ConfigError
    from showdown.experiment.ray_executor import Plan, plan

    three = MODELS
    assert plan(three, "auto", [{"CPU": 2}]) == Plan(2, False, 1)  # the test's cluster
    assert plan(three, "auto", [{"CPU": 16}]) == Plan(3, False, 5)
    assert plan(three, "cpu", [{"CPU": 8}, {"CPU": 8}]) == Plan(3, False, 4)  # 2 + 1 tasks of 4 CPUs fit at once
    assert plan(three, "auto", [{"CPU": 16, "GPU": 2}]) == Plan(2, True, 8)  # one GPU each
    assert plan(three, "cpu", [{"CPU": 16, "GPU": 2}]) == Plan(3, False, 5)
    assert plan(three[:1], "cuda", [{"CPU": 4, "GPU": 1}, {"CPU": 8}]) == Plan(1, True, 4)
    with pytest.raises(ConfigError, match="the Ray cluster has no GPU"):
        plan(three, "cuda", [{"CPU": 8}])


@needs_ray
def test_a_cluster_that_does_not_answer_is_one_line(tmp_path):
    from showdown import run
    from showdown.errors import ConfigError

    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1:1"):
        run(data="demo", models=MODELS[:1], executor="ray", ray_address="127.0.0.1:1", out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_cluster_that_turns_the_driver_away_is_not_called_absent(tmp_path, monkeypatch):
    """A cluster started with token authentication answers, then refuses a driver without the token: the line
    says so, not "no Ray cluster" (Ray's own words were about the address it was redirected to)."""
    ray = pytest.importorskip("ray", reason="needs the ray extra")
    from showdown.errors import ConfigError
    from showdown.experiment import ray_executor

    def refused(**_):
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6390")

    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.setattr(ray_executor, "_answers", lambda address: True)
    with pytest.raises(ConfigError, match="answers but refused this driver .*RAY_AUTH_MODE=token"):
        ray_executor._connect("127.0.0.1:6390")


def test_options_a_ray_run_cannot_merge_are_refused_before_it_starts():
    from showdown import RunConfig
    from showdown.errors import ConfigError

    for values, refused in (({"shard": "0/2"}, "--shard"), ({"drop_label_issues": True}, "--drop-label-issues")):
        with pytest.raises(ConfigError, match=refused):
            RunConfig(executor="ray", **values).validate()


def test_executor_ray_under_torchrun_is_refused_before_it_starts(tmp_path, monkeypatch):
    """Every rank would run the whole Ray showdown: four shard tasks writing two folders, two merges into one."""
    from showdown import run
    from showdown.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    with pytest.raises(ConfigError, match="start it without torchrun"):
        run(data="demo", models=["efficientnet_lite0"], executor="ray", out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_shard_paths_are_absolute_for_workers_started_elsewhere(tmp_path, monkeypatch):
    from showdown import RunConfig
    from showdown.experiment.ray_executor import Plan, _shard_values

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "x.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    config = RunConfig(data="demo", data_root="w", weights_dir="w", weights={"efficientnet_lite0": "w/x.safetensors"})
    values = _shard_values(config, 0, Plan(count=2, cpus=1, gpu=False), tmp_path / "shard-0.log")
    assert values["data_root"] == values["weights_dir"] == str(tmp_path / "w")
    assert values["weights"] == {"efficientnet_lite0": str(tmp_path / "w" / "x.safetensors")}
    assert values["data"] == "demo"  # a name, not a path here
