"""The end of a run, on rank 0: summary files, the table (even with --quiet), bench figures, report, database
row, trackers, and the closing lines."""
from __future__ import annotations

from showdown.config.run_config import RunConfig
from showdown.experiment.results import Results
from showdown.experiment.run_folder import summary_frozen_passes, write_summary
from showdown.experiment.shards import my_models
from showdown.reporting.bench import bench_models
from showdown.reporting.database import default_db, other_in, record_run
from showdown.reporting.label_issues import ranking_change
from showdown.reporting.progress import Reporter
from showdown.reporting.report import report_run
from showdown.run_schema import CONFIG


def finish_run(results: Results, config: RunConfig, frozen_passes: dict, reporter: Reporter,
               issues: dict | None, resume: bool = False) -> None:
    """Rank 0's end of the run: summary, table (even with --quiet), bench, report, database row, trackers. The
    summary counts the frozen passes of the whole run (with `resume`, the earlier processes' too, where a summary
    of them was written); the closing line, this process's."""
    run_dir, rows, skipped = results.run_dir, results.rows, results.skipped
    echo = reporter.echo
    earlier = summary_frozen_passes(run_dir) if resume else {}
    write_summary(run_dir, rows, skipped, {key: value + earlier.get(key, 0) if isinstance(value, int) else value
                                           for key, value in frozen_passes.items()}, issues)
    reporter.result("")
    reporter.result(results.table())
    rerun = results.without_label_issues
    if rerun is not None:
        reporter.result(f"\ntrained and tested again without the suspected label errors ({rerun.run_dir.name}/):")
        reporter.result(rerun.table())
        reporter.result(ranking_change(rows, rerun.rows))
    echo("")
    recomputed = f", {frozen_passes['recomputed']} damaged cache entries recomputed" * bool(frozen_passes["recomputed"])
    echo(f"frozen passes: {frozen_passes['images']} image passes through frozen layers (an image once per backbone "
         "and view), "
         f"{frozen_passes['hit']} feature sets from the cache{recomputed}")
    if config.bench:
        bench_models(my_models(config), config, run_dir, echo=echo)
    if config.report:
        report_html, _ = report_run(run_dir)
        echo(f"report: {report_html}")
    if config.record:
        run_id = record_run(run_dir, config.db, other_in(run_dir / CONFIG) if resume else "")
        echo(f"recorded as run {run_id} in {config.db or default_db()}")
    if skipped:
        echo(f"skipped {len(skipped)} unreadable image file(s); listed in {run_dir / 'skipped.txt'}")
    echo(f"run folder: {run_dir}")
    reporter.finish(run_dir)

