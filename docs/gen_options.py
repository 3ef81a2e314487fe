"""The option reference of `showdown run`, generated from `showdown.config.options`.

`docs/options.md` holds one table per group of `showdown run --help`, in the same order, built from the same
declarations (`definitions`, `add_flags`), between the markers `<!-- options -->` and `<!-- /options -->`:
written there by `python docs/gen_options.py` (so the page reads whole in a checkout and on GitHub; a test fails
when it falls behind the options), and made afresh by `mkdocs build` through `hooks:` in `mkdocs.yml`.
"""
from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

MARKER, END = "<!-- options -->", "<!-- /options -->"
PAGE = Path(__file__).resolve().parent / "options.md"
_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "showdown").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))  # document the checkout being built, not another installed copy


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    if "|" in text:  # a pipe splits a GitHub table cell even inside a code span; an entity splits neither
        return f"<code>{html.escape(text, quote=False).replace('|', '&#124;')}</code>"
    return f"`{text}`"


def options_markdown() -> str:
    """Markdown tables of every flag of `showdown run`: flag, value, default, meaning, grouped as in --help."""
    from showdown import cli
    from showdown.config import options
    from showdown.config.run_config import RunConfig

    parser = argparse.ArgumentParser(prog="showdown run", add_help=False)
    cli._add_run_flags(parser)  # add_flags(parser, RunConfig), then --config, --preset, --quick, --resume
    declared = options.definitions(RunConfig)
    out = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings]
        if not actions:
            continue
        out += [f"## {group.title}", "", "| flag | value | default | meaning |", "|---|---|---|---|"]
        for action in actions:
            takes_value = action.nargs != 0
            metavar = (action.metavar or action.dest.upper()) if takes_value else ""
            if action.dest in declared:
                f, opt, _ = declared[action.dest]
                value = options.default_of(f)
                shown = options._shown(value, opt)  # as --help shows it; None's is the option's own words
                default = (_code(shown) if value is not None else _cell(shown)) if shown else ""
                meaning = opt.help
                if not opt.must and (opt.min, opt.max, opt.above) != (None, None, None):
                    meaning += f" ({options._rule(opt)})"
            else:  # the flags `showdown run` adds beside the options (where the values come from)
                default, meaning = "", action.help or ""
            out.append(f"| {_code(action.option_strings[0])} | {_code(metavar) if metavar else ''} "
                       f"| {default} | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out)


def with_options(markdown: str) -> str:
    """The page with the tables between its markers (each there once, in order) made afresh."""
    if markdown.count(MARKER) != 1 or markdown.count(END) != 1 or markdown.index(MARKER) > markdown.index(END):
        raise ValueError(f"the option page needs {MARKER} and then {END}, once each")
    head, _, rest = markdown.partition(MARKER)
    _, _, tail = rest.partition(END)
    return f"{head}{MARKER}\n\n{options_markdown()}\n{END}{tail}"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE.name:
        return markdown
    return with_options(markdown).replace(MARKER, "").replace(END, "")  # the site needs no markers


if __name__ == "__main__":
    PAGE.write_text(with_options(PAGE.read_text(encoding="utf-8")), encoding="utf-8", newline="\n")
