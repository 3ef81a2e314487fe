"""What `showdown.run` returns: the rows of the table and the run folder they come from, shown in a notebook as
the leaderboard with its verdicts, with the full report one call away."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from showdown.errors import ConfigError
from showdown.reporting.report import leaderboard_html, report_run
from showdown.reporting.tables import format_table


@dataclass
class Results:
    run_dir: Path
    rows: list[dict]
    skipped: list[str] = field(default_factory=list)

    def table(self) -> str:
        return format_table(self.rows)

    def best(self) -> dict:
        return max(self.rows, key=lambda r: r["accuracy"])

    def _repr_html_(self) -> str:
        """Jupyter's rendering: the leaderboard and whether its differences are real."""
        return leaderboard_html(self.run_dir)

    def report(self, height: int = 800):
        """The full report inline in a notebook (an iframe, so its styles stay its own); written first if the run
        skipped it (--no-report). Returns the IPython display object."""
        page = self.run_dir / "report.html"
        if not page.is_file():
            page, _ = report_run(self.run_dir)
        try:
            from IPython.display import HTML
        except ImportError:
            raise ConfigError(f"results.report() shows the report in a notebook (IPython); outside one, open "
                              f"{page} in a browser") from None
        source = html.escape(page.read_text(encoding="utf-8"), quote=True)
        return HTML(f'<iframe srcdoc="{source}" style="width:100%;height:{height}px;border:1px solid #ccc">'
                    "</iframe>")

    def to_pandas(self):
        """The table as a pandas DataFrame, best first."""
        try:
            import pandas
        except ImportError:
            raise ConfigError("results.to_pandas() needs pandas: pip install pandas") from None
        return pandas.DataFrame(sorted(self.rows, key=lambda r: -r["accuracy"]))
