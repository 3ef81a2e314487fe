"""`showdown` command line: parses flags into a RunConfig and calls the Python API. No logic lives here.

Long because it holds every subcommand's flags and its handler, each a few lines that call the layer doing the work.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from typing import NoReturn

from showdown import __version__
from showdown.config.cores import WORKERS_RULE, workers_valid
from showdown.config.options import add_flags, definitions, flag_type, read_values
from showdown.config.presets import QUICK, load_preset
from showdown.config.run_config import RUNTIMES, RunConfig, read_config_file, weights_map
from showdown.errors import (
    DISK_ERRNOS,
    ConfigError,
    ShowdownError,
    last_line,
    on_command_line,
    terminated,
    under_torchrun,
)
from showdown.startup import end_on_sigterm, heavy_imports, stacks_on_sigusr1

DEVICE_HELP = definitions(RunConfig)["device"][1].help  # the same words as `showdown run --help`


def _workers(text: str) -> str | int:
    """`showdown predict --workers`: a whole number from 0, or auto (deploy/predict.py: predict_workers)."""
    if not workers_valid(text):
        raise argparse.ArgumentTypeError(f"must be {WORKERS_RULE} (got '{text}')")
    return text if text == "auto" else int(text)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    add_flags(p, RunConfig)  # one flag per RunConfig option, typed, grouped and helped as declared there
    S = argparse.SUPPRESS  # flags not given leave the config (or preset) value alone
    g = p.add_argument_group("where the values come from (flags given override them)")
    g.add_argument("--config", dest="config_file", default=S, metavar="FILE",
                   help="YAML file of option values, e.g. `lr: 0.01` (keys: the flag names with _ for -)")
    g.add_argument("--preset", default=S, help="a ready-made experiment (`showdown presets` lists them)")
    g.add_argument("--quick", action="store_true", default=S,
                   help="shrink it: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    g.add_argument("--resume", metavar="RUN_DIR", default=S,
                   help="continue an interrupted run from its folder, with its own configuration (no other flag)")


DESCRIPTION = ("Which pretrained backbone, adapted how, classifies your images best, at what cost, and is the "
               "difference real? `showdown run` compares them; the other commands use, ship and explain the winner.")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`error: ...`) with exit status 2, like every other error."""

    commands: dict[str, argparse.ArgumentParser] = {}  # the top parser's: each command's own (build_parser)

    def error(self, message: str):
        message = " ".join(line.strip() for line in message.splitlines())
        if message.endswith("expected one argument"):  # `--shard -1/2`: argparse reads the value as a flag
            message += " (a value that starts with '-' goes after '=', e.g. --shard=-1/2)"
        if not _rank_zero():  # every torchrun rank reads the same flags
            _end_after_rank_zero()
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


DB_HELP = "results database (default $SHOWDOWN_DB, else showdown/showdown.db in $XDG_DATA_HOME or ~/.local/share)"


def build_parser() -> _Parser:
    parser = _Parser(prog="showdown", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (tl-showdown)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="train and compare backbones on a dataset")
    _add_run_flags(run)
    predict = sub.add_parser("predict", help="classify images with a trained or exported model")
    predict.add_argument("model", help="run folder, entry folder, or exported .onnx / .pt / .tflite file")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    predict.add_argument("--model", dest="model_name", help="which entry of a run folder (default: the best)")
    predict.add_argument("--top-k", type=flag_type(int, min=1), default=3, metavar="K",
                         help="the K most likely classes of each image, with their probabilities (default 3)")
    predict.add_argument("--format", choices=("table", "csv", "json"),
                         help="default: csv or json where --output ends so, else table")
    predict.add_argument("--output", help="write to this file instead of the console")
    predict.add_argument("--batch-size", type=flag_type(int, min=1), default=32)  # deploy/predict.py: PREDICT_BATCH
    predict.add_argument("--workers", type=_workers, default="auto", metavar="N|auto",
                         help="image-decoding worker processes; auto: the CPU cores, none for one batch of images")
    predict.add_argument("--device", default="auto", help=f"{DEVICE_HELP}; .onnx and .tflite files run on the CPU")
    predict.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                         help="run folders and TorchScript files (an exported .onnx or .tflite runs in what it was "
                              "exported in); auto: fp32 for a run made in fp32, else what `showdown run --precision "
                              "auto` picks on this device")
    predict.add_argument("--runtime", choices=RUNTIMES, default="auto",
                         help="what runs a run folder's model: auto (as `showdown run` runs frozen layers: OpenVINO "
                              "when installed; eager PyTorch for at most 32 images), torch, onnxruntime or openvino")
    export = sub.add_parser("export", help="export a trained model to ONNX, TorchScript or TFLite")
    export.add_argument("model", help="run folder or entry folder")
    export.add_argument("--format", choices=("onnx", "torchscript", "tflite"), default="onnx",
                        help="default: onnx")
    export.add_argument("--quantize", choices=("int8",),
                        help="TFLite only: full-integer int8, calibrated on training images of the run")
    export.add_argument("--model", dest="model_name", help="which entry of a run folder (default: the best)")
    export.add_argument("--output", help="file to write (default: model.onnx, model.pt, model.tflite or "
                                         "model-int8.tflite in the entry folder)")
    explain = sub.add_parser("explain", help="where a model looked in each image: Grad-CAM overlays for a run or "
                             "entry folder, occlusion maps for an exported .pt/.onnx/.tflite file")
    explain.add_argument("model", help="run folder, entry folder, or exported TorchScript/ONNX/TFLite file")
    explain.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    explain.add_argument("--model", dest="model_name", help="which entry of a run folder (default: the best)")
    explain.add_argument("--out", help="folder for the overlay PNGs (default: explain/ in the entry folder, or "
                         "<name>-<format>-explain/ beside an exported file, e.g. model-onnx-explain/)")
    report = sub.add_parser("report", help="(re)write report.html and report.md for a run folder")
    report.add_argument("run_dir")
    runs = sub.add_parser("runs", help="the results database: list, show and compare recorded runs")
    runs.add_argument("action", nargs="?", default="list", choices=("list", "show", "compare"),
                      help="list (the default), show ID..., compare ID ID...")
    runs.add_argument("ids", nargs="*", type=flag_type(int, min=1, max=2**63 - 1), metavar="ID")  # SQLite's range
    runs.add_argument("--db", help=DB_HELP)
    runs.add_argument("--out", help="folder for the comparison report (default: runs/<timestamp>-compare-<ids>)")
    bench = sub.add_parser("bench", help="measure parameters, size, GMACs, latency and throughput of backbones")
    bench.add_argument("--models", type=flag_type(list[str]), default=None, help="comma-separated backbones")
    bench.add_argument("--weights-dir", help="folder with TFLite weights (default $SHOWDOWN_WEIGHTS)")
    bench.add_argument("--allow-random-init", action="store_true",
                       help="measure architectures without weights here (speed does not depend on the weights)")
    bench.add_argument("--image-size", type=int, help="override the input size")
    bench.add_argument("--device", default="auto", help=DEVICE_HELP)
    bench.add_argument("--precision", dest="precisions", type=flag_type(list[str], choices=("fp32", "bf16", "fp16")),
                       default=None,
                       help="fp32,bf16,fp16 (default: on the CPU bf16 too where it is native; on a GPU fp32, fp16, "
                            "and bf16 where supported)")
    bench.add_argument("--no-onnx", dest="onnx", action="store_false",
                       help="skip the exported-graph engines (ONNX Runtime, OpenVINO)")
    bench.add_argument("--repeats", type=flag_type(int, min=1), default=30,
                       help="timed batch-1 runs per model (median reported)")
    bench.add_argument("--out", help="run folder for bench.csv and bench.json (default runs/<timestamp>-bench)")
    cache = sub.add_parser("cache", help="what the caches hold (features, extracted datasets), and clear them")
    cache.add_argument("action", choices=("info", "clear"))
    cache.add_argument("--older-than", type=flag_type(float, min=0), metavar="DAYS",
                       help="clear only entries no run has used for DAYS days")
    cache.add_argument("--cache-dir", help="the feature cache folder, when runs give one (--cache-dir)")
    merge = sub.add_parser("merge", help="join the run folders of `showdown run --shard I/N` into one run")
    merge.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="the shards' run folders")
    merge.add_argument("--out", required=True, help="the merged run folder (new, or an earlier merge of these runs)")
    merge.add_argument("--no-report", dest="report", action="store_false", help="skip report.html and report.md")
    merge.add_argument("--no-record", dest="record", action="store_false", help="do not store it in the database")
    merge.add_argument("--db", help=DB_HELP)
    daemon = sub.add_parser("daemon", help="a warm process that runs later commands without their 5-7 s of imports")
    daemon.add_argument("action", choices=["start", "stop", "status"],
                        help="start this environment's daemon; stop or list every daemon of yours")
    daemon.add_argument("--idle-minutes", type=flag_type(float, min=1), default=30,
                        help="leave after this long without a command (default 30)")
    sub.add_parser("models", help="list the short backbone names and their weight sources")
    sub.add_parser("presets", help="list the ready-made experiments")
    for command in sub.choices.values():  # `showdown run ... --debug` as well as `showdown --debug run ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser.commands = sub.choices  # each command's own parser, for its usage errors (_parse)
    return parser


def _parse(parser: _Parser, argv: list[str]) -> argparse.Namespace:
    """The command's arguments (no command: `run`'s); a flag the command does not take is refused by its parser,
    whose --help lists the flags it takes (the top parser's would send to `showdown --help`)."""
    args, unknown = parser.parse_known_args(argv or ["run"])
    if args.command is None:  # `showdown --quiet`: the flags of `showdown run`
        args, unknown = parser.parse_known_args(["run", *argv])
    if unknown:
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Preset, then --quick, then --config FILE, then the flags given: each later one wins."""
    values: dict = {}
    if hasattr(args, "preset"):
        values.update(read_values(RunConfig, load_preset(args.preset), f"preset {args.preset}"))
    if getattr(args, "quick", False):
        values.update(QUICK)
    if hasattr(args, "config_file"):
        values.update(read_config_file(args.config_file))
    skip = {"command", "debug", "config_file", "preset", "quick", "resume"}
    values.update({k: v for k, v in vars(args).items() if k not in skip})
    if "weights" in values and isinstance(values["weights"], list):
        values["weights"] = weights_map(values["weights"], values.get("models") or RunConfig().models)
    return RunConfig.from_dict(values)


def cmd_run(args) -> int:
    with _flags_said_by_rank_zero():
        if hasattr(args, "resume"):
            _resume_alone(args)
        config = None if hasattr(args, "resume") else config_from_args(args).validate()  # before the heavy imports
    if config is not None and config.executor == "ray":
        from showdown.experiment.ray_executor import require_ray  # light: Ray itself is imported when it runs

        require_ray()
    if config is not None and config.executor != "ray":  # a mistyped data path too (Ray's may be the cluster's)
        from showdown.data.sources import DEMO, NAMED, local_data

        if config.data not in (DEMO, *NAMED):
            local_data(config.data)
    if config is not None and config.record:  # a damaged database fails in a blink, not after torch loads
        from showdown.reporting.database import check_database

        check_database(config.db)
    with heavy_imports():
        from showdown import distributed
        from showdown.experiment.runner import resume_run, run

    try:
        if config is None:
            resume_run(args.resume)
        else:
            run(config)
    finally:
        distributed.stop()  # under torchrun: leave the process group cleanly
    return 0


def cmd_merge(args) -> int:
    with heavy_imports():
        from showdown.experiment.merge import merge

    merge(args.run_dirs, args.out, report=args.report, record=args.record, db=args.db)
    return 0


def _resume_alone(args) -> None:
    """--resume goes on as the run's config.yaml says: an option beside it would be ignored, so it is refused."""
    given = sorted({"config_file": "config"}.get(name, name) for name in vars(args)
                   if name not in {"command", "debug", "resume"})
    if given:
        raise ConfigError(f"--resume goes on with the run as its config.yaml says and takes no other option (given: "
                          f"{', '.join(given)}); to point it at files that moved, edit its config.yaml")


def cmd_predict(args) -> int:
    with heavy_imports():
        from showdown.deploy.predict_output import write_predictions

    write_predictions(args.model, args.inputs, model_name=args.model_name, top_k=args.top_k, fmt=args.format,
                      output=args.output, batch_size=args.batch_size, workers=args.workers, device=args.device,
                      precision=args.precision, runtime=args.runtime)
    return 0


def cmd_export(args) -> int:
    with heavy_imports():
        from showdown.deploy.export import export_model

    path = export_model(args.model, args.format, args.output, args.model_name, args.quantize)
    print(f"exported {path}")
    return 0


def cmd_explain(args) -> int:
    from pathlib import Path

    with heavy_imports():
        from showdown.data.images import why_unreadable
        from showdown.deploy.explain import explain_files

    folder, done, method, skipped = explain_files(args.model, args.inputs, args.model_name, args.out)
    for item in done:
        print(f"{item.path}  {item.label} {item.probability:.3f}  {folder / item.png}")
    for path in skipped:
        print(f"{path}  (unreadable image: {why_unreadable(Path(path))})")
    print(f"{len(done)} {method} overlay(s) in {folder}" + (f"; {len(skipped)} unreadable file(s) skipped"
                                                             if skipped else ""))
    return 0


def cmd_report(args) -> int:
    with heavy_imports():
        from showdown.reporting.report import report_run

    html_path, md_path = report_run(args.run_dir)
    print(f"report: {html_path}\nsummary: {md_path}")
    return 0


def cmd_runs(args) -> int:
    from showdown.reporting import database as db
    from showdown.reporting.tables import format_table

    if args.action == "list":
        if args.ids:
            raise ConfigError("`showdown runs list` lists every run; `showdown runs show ID` shows one")
        rows = db.list_runs(args.db)
        if not rows:
            print(f"no runs recorded in {args.db or db.default_db()} yet")
        for row in rows:
            print(f"{row['id']:4d}  {row['created']}  {row['dataset'] or '-':12s} {row['entries']:3d} entries  "
                  f"best {row['best'] or '-'} ({row['best_accuracy'] or 0:.4f})  {row['run_dir']}")
        return 0
    if not args.ids:
        raise ConfigError(f"`showdown runs {args.action}` needs run IDs (see `showdown runs list`)")
    args.ids = list(dict.fromkeys(args.ids))  # a run named twice is one run, not two seeds of it
    records = db.load_entries(args.ids, args.db)
    if args.action == "show":
        for n, run_id in enumerate(args.ids):  # each run: its entries and its configuration
            shown = [r for r in records if r.run_id == run_id]
            if len(args.ids) > 1:
                print(("\n" if n else "") + f"run {run_id}:")
            print(format_table([{**r.metrics, "strategy": r.strategy, "seed": r.seed} for r in shown]))
            defaults = RunConfig().to_dict()  # the settings that made this run what it is, one per line
            print("configuration: the options not at their defaults")
            for key, value in shown[0].config.items():
                if key not in defaults or defaults[key] != value:
                    print(f"  {key}: {value}")
        return 0
    from pathlib import Path

    from showdown.fileio import new_run_dir
    from showdown.reporting.report import write_report
    from showdown.run_schema import resumable

    # a run's folder is never written over (as `showdown run --out` refuses it)
    if args.out and Path(args.out).exists() and (not Path(args.out).is_dir() or resumable(Path(args.out))):
        raise ConfigError(f"--out {args.out} is a file or holds a run; name a new folder for the comparison")
    out = new_run_dir(args.out, "compare-" + "-".join(map(str, args.ids)))
    html_path, _ = write_report(records, out, f"tl-showdown: runs {', '.join(map(str, args.ids))} compared")
    print(f"report: {html_path}")
    return 0


def cmd_bench(args) -> int:
    with heavy_imports():
        from showdown.reporting.bench import run_bench

    run_bench(args)
    return 0


def cmd_cache(args) -> int:
    from pathlib import Path

    from showdown import cache

    features = Path(args.cache_dir) if args.cache_dir else None
    if features is not None and not features.is_dir():
        said = "is a file" if features.exists() else "does not exist"
        raise ConfigError(f"--cache-dir {features} {said}; give the feature cache's folder")
    if args.action == "info" and args.older_than is not None:
        raise ConfigError("--older-than picks what `showdown cache clear` deletes; `cache info` lists everything")
    if args.action == "clear":
        count, freed = cache.clear(features, args.older_than)
        age = f" not used for {args.older_than:g} days" if args.older_than is not None else ""
        print(f"cleared {count} cache entries{age}, {freed / 2**20:.1f} MB")
        return 0
    rows = cache.usage(features)
    width = max(len(row.kind) for row in rows)
    for row in rows:
        oldest = f", least recently used {row.oldest_days:.0f} days ago" if row.oldest_days is not None else ""
        print(f"{row.kind:{width}s} {row.bytes / 2**20:9.1f} MB  {row.entries:5d} entries  {row.folder}{oldest}")
    return 0


def cmd_models(args) -> int:
    from showdown.models.backbones import SHORT_NAMES

    specs = list(SHORT_NAMES.values())
    short, timm = (max(len(name) for name in names) for names in zip(*((s.name, s.timm_name) for s in specs)))
    for spec in specs:
        source = f"package {spec.package}" if spec.package else (
            f"TFLite in weights dir ({spec.tflite_files[0]})" if spec.tflite_files else f"hub {spec.hub_name}")
        print(f"{spec.name:{short}s}  {spec.timm_name:{timm}s}  {source}")
    print("any other timm model name works too (e.g. convnext_atto, resnet18.a1_in1k)")
    return 0


def cmd_daemon(args) -> int:
    from showdown import daemon

    try:
        return daemon.command(args.action, args.idle_minutes)
    except daemon.DaemonError as exc:
        raise ConfigError(str(exc)) from None


def cmd_presets(args) -> int:
    from showdown.config.presets import list_presets

    for name, description in list_presets().items():
        print(f"{name:32s} {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(parser, argv)
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # closed by the shell (`>&-`): what goes there goes nowhere
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        getattr(sys, name).reconfigure(errors="backslashreplace")  # file names that are not valid UTF-8 print escaped
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    stacks_on_sigusr1()
    end_on_sigterm()
    handler = {"run": cmd_run, "predict": cmd_predict, "export": cmd_export, "explain": cmd_explain,
               "report": cmd_report, "runs": cmd_runs, "bench": cmd_bench, "cache": cmd_cache, "models": cmd_models,
               "presets": cmd_presets, "merge": cmd_merge, "daemon": cmd_daemon}[args.command]
    try:
        with on_command_line():  # hints name the flags, not the Python API's keywords
            return handler(args)
    except ShowdownError as exc:
        if args.debug:  # the traceback, then the same line and exit status as without --debug
            traceback.print_exc()
        print(last_line(exc), file=sys.stderr)  # one line
        return getattr(exc, "exit_code", 2)
    except BrokenPipeError:  # output piped into `head` and the like (an OSError, so caught before them)
        sys.stderr.close()
        return 0
    except OSError as exc:  # a write the disk refused, or a path that cannot be: still one line
        # no code named the file (DiskError does); an OSError without a file and not the disk's is a bug: shown
        reason = DISK_ERRNOS.get(exc.errno) or (exc.strerror if exc.filename is not None else None)
        if reason is None or args.debug:
            raise
        print(f"error: {reason}" + (f": {exc.filename or repr('')}" if exc.filename is not None else ""),
              file=sys.stderr)
        return 1
    except RuntimeError as exc:  # torch's own words for shared memory that cannot grow; any other is a bug: shown
        if args.debug or "unable to resize file" not in str(exc):
            raise
        print("error: the image loader's shared memory cannot grow (/dev/shm full, or a file size limit): "
              "--workers 0 decodes in this process, or give the container more shared memory", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        if _rank_zero():  # every torchrun rank has it
            print(last_line(exc), file=sys.stderr)
        return 128 + signal.SIGTERM if terminated(exc) else 130


@contextlib.contextmanager
def _flags_said_by_rank_zero():
    """A fault in the flags, which every process of a torchrun launch reads alike: rank 0 says it, the others end
    with the same status in silence. (What may differ by node, a device or a package, every rank says.)"""
    try:
        yield
    except ConfigError:
        if _rank_zero():
            raise
        _end_after_rank_zero()


# How long another rank waits before it ends on a fault rank 0 says: torchrun's agent stops every rank once one has
# ended, and would stop rank 0 before its line is out.
RANK_ZERO_GRACE_S = 3.0


def _end_after_rank_zero() -> NoReturn:
    time.sleep(RANK_ZERO_GRACE_S)
    raise SystemExit(2)


def _rank_zero() -> bool:
    """Whether this process says what every process of a torchrun launch meets alike: rank 0, or no torchrun."""
    return not under_torchrun() or os.environ.get("RANK", "0") == "0"


def console() -> None:
    """What `showdown` ran before it started in showdown/__main__.py: an editable install made then still calls it."""
    from showdown.__main__ import console as start

    start()


if __name__ == "__main__":
    console()
