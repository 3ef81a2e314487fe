"""A showdown: every (backbone, strategy) on one dataset, evaluated on the same test split (or the same folds).

`run(config)` is the Python API; the CLI only parses flags into a RunConfig and calls it. This module reads
top to bottom: the run, its entries per backbone, the folds variant, the end of the run (table, bench, report,
database, gate). One entry's own steps are in entry.py, its training phases in phases.py.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from showdown import distributed, run_schema
from showdown.cache import STATS as HEALED
from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.data import DatasetSpec, load_dataset
from showdown.data.folder import check_classes_open, subset_per_class
from showdown.data.leakage import check_leakage
from showdown.deploy.explain import EXTRA as EXPLAIN_EXTRA
from showdown.deploy.explain import available as explain_available
from showdown.device import describe, prepare, resolve_device
from showdown.errors import DiskError, Interrupted, disk_error, resume_call
from showdown.experiment import label_issues
from showdown.experiment.context import RunContext
from showdown.experiment.entry import EntryResult, fitted_to_images, run_entry
from showdown.experiment.folds import PROBABILITIES, FeaturePool, all_items, make_folds, write_pooled
from showdown.experiment.kept_state import mute_info_logs, process_state_kept
from showdown.experiment.preflight import check_names, check_places, check_space, check_weights, on_main
from showdown.experiment.ray_executor import run_on_ray
from showdown.experiment.results import Results
from showdown.experiment.resume import check_same_data, resumed_config, resumed_from_keywords
from showdown.experiment.run_end import finish_run
from showdown.experiment.run_folder import entry_folder, finished_row, write_run_start
from showdown.experiment.shards import echo_share, my_models
from showdown.experiment.without_issues import rerun_without
from showdown.fileio import new_run_dir
from showdown.frozen.engines import resolve_runtime
from showdown.frozen.feature_cache import FrozenPass, extract_features
from showdown.models.backbones import Backbone, load_backbone
from showdown.precision import resolve_precision
from showdown.reporting.label_issues import WITHOUT_LABEL_ISSUES
from showdown.reporting.progress import Reporter
from showdown.startup import give_back_freed_memory


def run(config: RunConfig | None = None, *, echo: Callable[[str], None] = print, resume: bool = False,
        **options) -> Results:
    """Train and evaluate every (model, strategy); with `resume`, `config.out` is an interrupted run's folder:
    finished entries are kept and the interrupted one continues from its last completed epoch.

    In a notebook: `run(data="demo", models=["efficientnet_lite0"], strategy=["head"], epochs=5)`, the flags'
    names with _ for -, checked as the flags are (one-line ShowdownErrors); with a RunConfig they replace its
    values. `run(out="runs/x", resume=True)` goes on with an interrupted run as its config.yaml says. The global
    random generators, CUDA settings and warning filters are as they were when it returns (kept_state.py)."""
    with process_state_kept():
        try:
            return _run(config, echo, resume, options)
        finally:
            give_back_freed_memory()  # a notebook's process: the run's freed pages, not kept to its end


def _run(config: RunConfig | None, echo: Callable[[str], None], resume: bool, options: dict) -> Results:
    if resume and config is None:  # showdown.run(out=DIR, resume=True): the run as its config.yaml says
        config, options = resumed_from_keywords(options), {}
    config = RunConfig.from_keywords(options, base=config) if options or config is None else config
    config.validate()
    mute_info_logs(config.quiet)
    check_names(config)
    # shards as Ray tasks, each of them a run of this function (resumed too, where the driver stopped before the
    # merge); a merged Ray run resumes here, in one process (what is left is the summary, report and record)
    if config.executor == "ray" and not (resume and (Path(config.out) / run_schema.SUMMARY_JSON).is_file()):
        return run_on_ray(config, echo=echo, resume=resume).gate(config.assert_accuracy_at_least)
    if not resume:
        check_weights(config)
    device = resolve_device(config.device)
    prepare(device)  # before environment.json records the device's settings
    distributed.start(device)  # under torchrun: one process group (gloo on CPU, NCCL on CUDA)
    reporter = Reporter(echo, quiet=config.quiet, log_file=config.log_file, track=config.track) \
        if distributed.is_main() else Reporter(silent=True)  # under torchrun rank 0 alone tells
    run_dir = None  # known once the run folder is made
    try:
        echo = reporter.echo
        no_gradcam = bool(config.gradcam) and not explain_available()  # an optional extra: said after the entries
        config = dataclasses.replace(config, gradcam=0) if no_gradcam else config
        if resume:
            echo(f"resuming {config.out}")
        healed_before = HEALED["recomputed"]  # damaged cache entries deleted and recomputed (cache.py)
        cache_dir, cache_writable = on_main(check_places, config, resume)  # before an archive is extracted there
        dataset = load_dataset(config.data, data_root=config.data_root, split=config.split, seed=config.seed)
        if config.max_per_class:
            dataset = subset_per_class(dataset, config.max_per_class)
        on_main(check_classes_open, dataset)  # a header read per class: once, not on every rank
        dataset = check_leakage(dataset, drop=config.drop_duplicates)
        if resume:  # the entries still to run get the split the finished ones had
            on_main(check_same_data, Path(config.out), dataset)
        precision = resolve_precision(config.precision, device)
        runtime = resolve_runtime(config.runtime, precision, device.type)
        folds = make_folds(dataset, config.folds, config.seed, _val_fraction(config)) if config.folds else None
        run_dir = Path(on_main(lambda: str(new_run_dir(config.out, config.name or dataset.name))))  # rank 0 makes it
        with _kept_on_disk_errors(run_dir):
            if not resume and distributed.is_main():
                write_run_start(run_dir, config, dataset, precision, runtime, folds, device)
            _echo_dataset(dataset, folds, echo)
            _echo_machine(device, precision, echo)
            echo_share(config, echo)  # --shard: which backbones this process trains
            frozen = FrozenPass(precision, runtime, device, workers=config.worker_count, cache_dir=cache_dir,
                                cache_writable=cache_writable, bars=not config.quiet)
            context = RunContext(frozen, reporter)
            reporter.start_run(config, run_dir, _grid_size(config) * (2 if config.drop_label_issues else 1))
            last_loaded: dict[str, Backbone] = {}  # the entries' last backbone, which the label-issue search may reuse
            rows, skipped = _all_entries(config, dataset, folds, context, run_dir, resume, keep=last_loaded)
            frozen_passes = _frozen_passes(frozen)  # the entries': the label-issue search reads theirs back
            issues, flagged = label_issues.judge(config, dataset, rows, folds, context, run_dir,
                                                 load=lambda name: last_loaded.get(name)
                                                 or _load(name, config, dataset, lambda *_: None))
            last_loaded.clear()
            results = Results(run_dir, rows, sorted(skipped), frozen_counts=frozen.stats)
            if config.drop_label_issues and flagged:
                results.without_label_issues, kept = rerun_without(config, dataset, flagged, context, run_dir, resume,
                                                                   _all_entries)
                issues["rerun"] = {"folder": WITHOUT_LABEL_ISSUES, "kept": kept}
            if no_gradcam:  # after every entry (the re-run's too), and never before an error
                reporter.warn(f"Grad-CAM overlays skipped: {EXPLAIN_EXTRA}")
            # damaged cache entries made again anywhere in the run (the label-issue search's too)
            frozen_passes["recomputed"] = HEALED["recomputed"] - healed_before
            if distributed.is_main():
                finish_run(results, config, frozen_passes, reporter, issues, resume)
        distributed.barrier()  # the run folder is complete before any process returns
        return results.gate(config.assert_accuracy_at_least)
    except KeyboardInterrupt as exc:
        if run_dir is None or not run_schema.resumable(run_dir):
            raise
        raise Interrupted(f"{run_schema.what_is_kept(run_dir)}; {resume_call(run_dir)} goes on") from exc
    finally:
        # what an error or Ctrl-C left open: a bar (a notebook draws the next askew), the log file (its last line)
        reporter.close(sys.exc_info()[1])


def _all_entries(config: RunConfig, dataset: DatasetSpec, folds: list[DatasetSpec] | None, context: RunContext,
                 run_dir: Path, resume: bool, pool_of: Callable[[Backbone], FeaturePool] | None = None,
                 keep: dict[str, Backbone] | None = None) -> tuple[list[dict], set[str]]:
    """Every entry of every backbone (with `resume`, the finished ones read back): their rows, skipped files.
    `pool_of(backbone)`: where head entries take their features from (default: the cache, or with folds one pool
    of every image). `keep` is left holding the last backbone loaded, by name: no entry changes it (one that
    trains its backbone trains a copy, entry.build_model), so the label-issue search need not build it again."""
    rows, skipped, echo, reporter = [], set(), context.echo, context.reporter
    for model_name in my_models(config):  # --shard: this process's share of the backbones (shards.py)
        todo = _entries_to_run(model_name, config, run_dir, resume, rows, reporter)
        if not todo:
            continue
        backbone = _load(model_name, config, dataset, echo)
        if keep is not None:
            keep.clear()  # one backbone held at a time: a run of six is not kept in memory
            keep[model_name] = backbone
        on_main(check_space, run_dir, backbone, [strategy for strategy, _ in todo], config.folds)
        pool = pool_of(backbone) if pool_of else _feature_pool(backbone, dataset, config, context) if folds else None
        for strategy, seed in todo:
            folder = entry_folder(run_dir, model_name, strategy, seed, config.repeats)
            seeded = dataclasses.replace(config, seed=seed)
            reporter.start_entry(f"{model_name}/{strategy}{_seed_note(seed, config)}",
                                 {**seeded.to_dict(), "model": model_name, "strategy": str(strategy)}, folder)
            if folds:
                result = _run_folds(strategy, backbone, folds, seeded, context, folder, pool, resume)
            else:
                result = run_entry(strategy, backbone, dataset, seeded, context, folder, pool=pool)
            skipped.update(result.failed)
            rows.append(result.row)
            echo(_entry_line(result.row, strategy, seed, config, folds))
            reporter.end_entry(result.row, folder)
    return rows, skipped


@contextmanager
def _kept_on_disk_errors(run_dir: Path):
    """A write the disk refuses, anywhere in the run, ends it in one line that says what is kept and how to go on
    (config.yaml, written last of the run's start, is what --resume needs)."""
    try:
        yield
    except (DiskError, OSError) as exc:
        # a library's own write (no DiskError yet) is the disk's doing when its errno says so
        error = exc if isinstance(exc, DiskError) else \
            disk_error(exc, exc.filename, "") if exc.filename else disk_error(exc, run_dir, "a file in")
        if error is None:
            raise
        cure = f"{error.cure} (or move {run_dir} to a larger disk)" if error.full else error.cure
        if run_schema.resumable(run_dir):  # a cure said already (the results database's) is not said twice
            then = f"{run_schema.what_is_kept(run_dir)}; {'' if error.cure in str(error) else cure + ', then '}" \
                   f"{resume_call(run_dir)} goes on"
        else:
            then = f"{error.cure}, then run it again"
        raise DiskError(f"{error}; {then}", cure=error.cure) from exc


def _frozen_passes(frozen: FrozenPass) -> dict:
    """This process's frozen-pass counts so far (feature sets from the cache, computed, images run through frozen
    layers); under torchrun every rank's images, shards that never hold one image twice."""
    passes = {key: frozen.stats[key] for key in ("hit", "miss", "images")}
    if distributed.active():
        passes["images_per_rank"] = distributed.gather(passes["images"])
        passes["images"] = sum(passes["images_per_rank"])
    return passes


def resume_run(run_dir: str | Path, *, echo: Callable[[str], None] = print) -> Results:
    """Continue an interrupted `showdown run` from its folder, with the configuration it was started with."""
    return run(resumed_config(run_dir), echo=echo, resume=True)


def _val_fraction(config: RunConfig) -> float:
    """With --folds, validation takes the share of the training folds that --split gives it of train + val."""
    return config.split[1] / (config.split[0] + config.split[1])


def _echo_dataset(dataset: DatasetSpec, folds: list[DatasetSpec] | None, echo) -> None:
    counts = dataset.counts()
    if folds:
        echo(f"data: {dataset.name} ({len(dataset.classes)} classes; {sum(counts.values())} images; "
             f"{folds[0].split_source.partition(' of ')[2]})")
    else:
        echo(f"data: {dataset.name} ({len(dataset.classes)} classes; train {counts['train']}, val {counts['val']}, "
             f"test {counts['test']}; split {dataset.split_source})")
    for warning in dataset.warnings:
        echo(f"warning: {warning}")


def _seeds(config: RunConfig) -> list[int]:
    return [config.seed + r for r in range(config.repeats)]  # the split keeps config.seed: same test images


def _grid_size(config: RunConfig) -> int:
    """Entries of the whole run, or of this --shard (the small CNN runs once, with the first backbone)."""
    strategies, mine = config.strategy_values(), my_models(config)
    per_backbone = sum(not s.is_small_cnn for s in strategies)
    small_cnn = any(s.is_small_cnn for s in strategies) and config.models[0] in mine
    return (per_backbone * len(mine) + small_cnn) * config.repeats


def _entries_to_run(model_name: str, config: RunConfig, run_dir: Path, resume: bool, rows: list[dict],
                    reporter: Reporter) -> list[tuple[Strategy, int]]:
    """(strategy, seed) pairs of this backbone still to train; with `resume`, finished ones join `rows`."""
    todo = []
    for strategy in config.strategy_values():
        if strategy.is_small_cnn and model_name != config.models[0]:
            continue  # the small CNN does not depend on the backbone: it runs once
        for seed in _seeds(config):
            done = resume and finished_row(entry_folder(run_dir, model_name, strategy, seed, config.repeats))
            if done:
                rows.append(done)
                reporter.kept_entry()
                reporter.echo(f"{model_name} {strategy}{_seed_note(seed, config)}: finished earlier, kept")
            else:
                todo.append((strategy, seed))
    return todo


def _load(model_name: str, config: RunConfig, dataset: DatasetSpec, echo) -> Backbone:
    torch.manual_seed(config.seed)  # a random init is the same whichever backbones came before (--shard, Ray)
    backbone = load_backbone(model_name, **config.backbone_options(model_name))
    echo(f"{model_name}: weights from {backbone.source}; input {backbone.preprocessing.input_size[1]} px")
    fitted = fitted_to_images(backbone, dataset)
    if fitted is not backbone:
        echo("  small images: upscaled whole, without the centre crop (a thumbnail has no margin to spare)")
    return fitted


def _feature_pool(backbone: Backbone, dataset: DatasetSpec, config: RunConfig, run: RunContext) -> FeaturePool:
    """One feature extraction of every image for all folds (the cache is keyed by the exact file list)."""
    def extract(items, mirror):
        return extract_features(run.frozen, backbone, items, mirror=mirror, desc="all images")
    return FeaturePool(all_items(dataset), extract)


def _run_folds(strategy: Strategy, backbone: Backbone, folds: list[DatasetSpec], config: RunConfig, run: RunContext,
               folder: Path, pool: FeaturePool, resume: bool) -> EntryResult:
    """Every fold as an entry of its own (fold1/, fold2/, ...), then the entry of all folds pooled."""
    fold_rows, fold_folders, skipped = [], [], set()
    config = dataclasses.replace(config, gradcam=0)  # the report shows the pooled entry, which has no one model
    for number, fold in enumerate(folds, start=1):
        run.reporter.fold(number, len(folds))
        fold_folder = folder / run_schema.fold_folder(number)
        done = resume and finished_row(fold_folder)
        if done and (fold_folder / PROBABILITIES).is_file():
            row = done
        else:
            row, failed = run_entry(strategy, backbone, fold, config, run, fold_folder, pool=pool,
                                    keep_probabilities=True)
            skipped.update(failed)
        run.echo(f"  {strategy} fold {number}: test accuracy {row['accuracy']:.4f} on {row['n_test']} images")
        fold_rows.append(row)
        fold_folders.append(fold_folder)
    title = f"{fold_rows[0]['model']} / {strategy}"
    summary = distributed.broadcast(write_pooled(folder, fold_folders, fold_rows, folds[0].classes, title)
                                    if distributed.is_main() else None)
    return EntryResult({**summary, "folder": folder.name}, sorted(skipped))


def _seed_note(seed: int, config: RunConfig) -> str:
    return f" (seed {seed})" if config.repeats > 1 else ""


def _entry_line(row: dict, strategy: Strategy, seed: int, config: RunConfig, folds) -> str:
    line = f"  {strategy}{_seed_note(seed, config)}: test accuracy {row['accuracy']:.4f}"
    if folds:
        line += (f" pooled over {len(folds)} folds (per fold {row['fold_accuracy_mean']:.4f} ± "
                 f"{row['fold_accuracy_std']:.4f})")
    search = f" + {row['tune_seconds']:.1f} s search" if row.get("tune_seconds") else ""
    return line + f" ({row['train_seconds']:.1f} s{search})"


def _echo_machine(device, precision: str, echo) -> None:
    processes = f"; {distributed.world_size()} processes (torchrun)" if distributed.active() else ""
    echo(f"device: {describe(device)}; precision {precision}{processes}")
