"""`--executor ray`: the shards of `--shard i/N` as Ray tasks on a Ray cluster, merged into one run folder.

The run folder holds `shards/shard-I/`, the complete run folder of each shard (as `--shard I/N` writes it), and
the merge of them beside it (`showdown merge` with `shards/` left in place). How many shards: one per backbone,
capped by the tasks the cluster can run at once: one per GPU when CUDA is used (`num_gpus=1` each), else the
largest CPU share per task that still runs every shard at once (`num_cpus=k`). Ray retries a shard whose worker
dies (`max_retries`); the retry resumes the shard's folder, so the entries it finished are kept, as `--resume`
keeps them. Exceptions of the run itself (a ShowdownError) are not retried: they end the run in one line.

The workers run the showdown installed on their nodes, with their nodes' environment (caches, $SHOWDOWN_DATA);
paths are made absolute here, since a worker's working directory is not the driver's. Ray is imported only here,
and only when a run asks for it.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from showdown import run_schema
from showdown.config.run_config import RunConfig
from showdown.errors import ConfigError, Interrupted, ShowdownError, Terminated, resume_call
from showdown.experiment.resume import absolute_paths
from showdown.experiment.shards import assign
from showdown.fileio import new_run_dir, write_json

SHARDS = run_schema.RAY_SHARDS  # inside the run folder: one run folder per shard
RETRIES = 3  # per shard, for a worker or node that dies (not for an error of the run itself)
MISSING = "--executor ray needs Ray, which is not installed: pip install 'tl-showdown[ray]'"


def require_ray() -> None:
    """Ray installed, or one line (the CLI asks before its heavy imports: this module imports them when used)."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(MISSING)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a showdown spreads over the cluster: `count` shards, each a task asking for these resources."""
    count: int
    gpu: bool
    cpus: int

    def describe(self) -> str:
        return f"1 GPU and {self.cpus} CPU(s)" if self.gpu else f"{self.cpus} CPU(s)"


def plan(models: list[str], device: str, nodes: list[dict]) -> Plan:
    """One shard per backbone, at most as many as run at once on `nodes` (each node's Ray resources)."""
    gpus = [int(node.get("GPU", 0)) for node in nodes]
    cpus = [int(node.get("CPU", 0)) for node in nodes]
    gpu = device.startswith("cuda") or (device == "auto" and sum(gpus) > 0)
    if gpu and sum(gpus) == 0:
        raise ConfigError(f"--device {device} with --executor ray: the Ray cluster has no GPU")
    if device == "mps":
        raise ConfigError("--executor ray runs on CUDA or CPU workers; use --device auto, cuda or cpu")

    def slots(k: int) -> int:  # tasks of k CPUs (and a GPU each, with CUDA) that fit at once
        return sum(min(c // k, g) if gpu else c // k for c, g in zip(cpus, gpus))

    count = min(len(models), max(1, slots(1)))
    # the largest CPU share per task that still runs every shard at once
    k = max((k for k in range(1, max(cpus, default=1) + 1) if slots(k) >= count), default=1)
    return Plan(count, gpu, k)


def run_on_ray(config: RunConfig, *, echo: Callable[[str], None] = print, resume: bool = False):
    """The showdown of `config` as Ray tasks, one per shard, then merged into its run folder: its Results. With
    `resume`, `config.out` is a Ray run whose driver stopped before the merge: its shards go on where they were."""
    from showdown import distributed  # here: the command line imports this module before torch

    if distributed.launched():  # every torchrun rank would run the whole showdown: its shards twice, two merges
        raise ConfigError("--executor ray starts its own processes; start it without torchrun")
    require_ray()
    import ray

    sigterm, received = signal.getsignal(signal.SIGTERM), []
    _connect(config.ray_address)
    if callable(sigterm):  # Ray's driver puts in its own (a stack dump, exit 1): a SIGTERM stops as Ctrl-C does

        def terminate(number, frame):  # ray.get turns the handler's Terminated into a plain KeyboardInterrupt
            received.append(number)
            sigterm(number, frame)

        signal.signal(signal.SIGTERM, terminate)
    try:
        return _run_shards(ray, config, echo, resume, received)
    finally:
        ray.shutdown()  # before the CLI's os._exit: a cluster this run started ends with it
        if callable(sigterm):  # the caller's (a notebook's) handler back, in Python's hands again
            signal.signal(signal.SIGTERM, sigterm)


def _run_shards(ray, config: RunConfig, echo: Callable[[str], None], resume: bool, sigterms: list):
    from showdown.experiment.merge import merge
    from showdown.experiment.results import Results
    from showdown.reporting.run_records import read_json

    if resume:  # the shards as planned then, whatever the cluster is now: each goes on in its own folder
        out = Path(config.out).absolute()
        shards = out / SHARDS
        the_plan = Plan(**read_json(shards / run_schema.RAY_PLAN))
    else:
        the_plan = plan(config.models, config.device, [node["Resources"] for node in ray.nodes() if node["Alive"]])
        out = new_run_dir(config.out, config.name or Path(config.data).name).absolute()
        shards = out / SHARDS
        if shards.is_dir() and any(shards.iterdir()):  # its shards would resume with their own, older settings
            raise ConfigError(f"--out {out} holds the shards of an earlier Ray run; `showdown run --resume {out}` "
                              "goes on with it, or give a new folder")
        shards.mkdir(exist_ok=True)
        # what --resume needs before the merge writes the run's own config.yaml: the run as asked, and its plan
        write_json(shards / run_schema.RAY_PLAN, dataclasses.asdict(the_plan))
        absolute_paths(dataclasses.replace(config, out=str(out))).save(shards / run_schema.CONFIG)
    task = ray.remote(run_shard).options(num_cpus=the_plan.cpus, num_gpus=int(the_plan.gpu), max_retries=RETRIES,
                                         retry_exceptions=False)
    echo(f"ray: {the_plan.count} shards of {len(config.models)} backbones, each a task with "
         f"{the_plan.describe()} (cluster: {_describe(ray.cluster_resources())})")
    for index, models in enumerate(assign(config.models, the_plan.count, config.image_size)):
        echo(f"  shard {index}/{the_plan.count}: {', '.join(models)}")
    echo(f"  each shard's progress: {shards}/shard-I.log")
    pending = [task.remote(_shard_values(config, index, the_plan, shards / f"shard-{index}.log"),
                           str(shards / f"shard-{index}")) for index in range(the_plan.count)]
    try:
        folders = _wait(ray, pending)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM at the driver: the shards keep what they finished
        kept = run_schema.what_is_kept(shards, sorted(shards.glob("shard-*/")))
        raise Interrupted(f"{kept}; {resume_call(out)} goes on") from Terminated() if sigterms else exc
    # the merged folder records the run as asked (Ray, its report and record), not the shards' settings
    merge(folders, out, report=config.report, record=config.record, db=config.db, echo=echo, keep=SHARDS,
          asked=absolute_paths(config))
    summary = read_json(out / run_schema.SUMMARY_JSON)
    results = Results(out, summary["rows"], summary.get("skipped_files", []))
    echo(f"run folder: {out}")  # after merge's leaderboard
    return results


def run_shard(values: dict, folder: str) -> str:
    """A Ray task: one shard's run folder, resumed where an earlier try of it left off. Its pid is written beside
    the folder (shard-I.pid), to say which worker runs it."""
    from showdown.experiment.runner import resume_run, run

    folder = Path(folder)
    folder.parent.joinpath(f"{folder.name}.pid").write_text(str(os.getpid()))
    if run_schema.resumable(folder):  # a retry: finished entries are kept, the interrupted one goes on
        resume_run(folder)
    else:
        run(RunConfig.from_dict({**values, "out": str(folder)}))
    return str(folder)


def _connect(address: str | None) -> None:
    """--ray-address, else $RAY_ADDRESS, else a cluster running on this machine, else a local one."""
    import ray

    # the shards' own output stays in their log files (shards/shard-I.log), not interleaved on this console with
    # Ray's colour codes; Ray's notes below errors (its token-authentication warning) are left out too
    quiet = {"logging_level": logging.ERROR, "configure_logging": True, "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS")
    if address and not _answers(address):  # Ray itself would retry for minutes
        raise ConfigError(f"--executor ray: no Ray cluster answers at {address} (start one with `ray start --head`)")
    try:
        if address:
            ray.init(address=address, **quiet)
            return
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:  # no cluster running: one on this machine, for this run
            ray.init(**quiet)
    except ConnectionError as exc:
        if address:  # it answered (_answers): there, but it turned this driver away
            raise ConfigError(f"--executor ray: the Ray cluster at {address} answers but refused this driver ({exc}); "
                              "a cluster started with token authentication needs RAY_AUTH_MODE=token here too, and "
                              "the same Ray version") from exc
        raise ConfigError(f"--executor ray: no Ray cluster here ({exc})") from exc


def _answers(address: str) -> bool:
    """Whether something listens at HOST:PORT (other forms, such as ray://, are left to Ray)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():
        return True
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError:
        return False
    return True


def _shard_values(config: RunConfig, index: int, the_plan: Plan, log: Path) -> dict:
    """The configuration of shard `index`: a plain `--shard I/N` run, paths absolute, no report or database row
    (the merge writes them), its progress in `log`, the device the task was given, and decoding workers within its
    CPUs."""
    values = absolute_paths(config).to_dict()
    values.update(shard=f"{index}/{the_plan.count}", executor="local", ray_address=None, report=False, record=False,
                  assert_accuracy_at_least=None, log_file=str(log))
    if the_plan.gpu:
        values["device"] = "cuda"  # Ray shows the task its one GPU as cuda:0
    if config.workers == "auto":
        values["workers"] = str(the_plan.cpus - 1)  # the task's other CPUs decode images
    return values


def _wait(ray, pending: list) -> list[str]:
    """The shards' folders; a ShowdownError in a shard is raised here as one line, a shard whose worker kept dying
    says so."""
    try:
        return ray.get(pending)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ShowdownError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayError as exc:
        raise ShowdownError(f"a shard's Ray worker died {RETRIES + 1} times ({type(exc).__name__}); its finished "
                            "entries are kept under the run folder's shards/") from exc


def _describe(resources: dict) -> str:
    return ", ".join(f"{resources[key]:g} {key}" for key in ("CPU", "GPU") if resources.get(key))
