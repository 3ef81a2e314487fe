"""The documentation: the README is a short front door whose links resolve, and the MkDocs site under docs/ builds
with `--strict` (a broken link, a missing anchor or a page left out of the nav fails), its option reference
generated from `showdown.config.options`."""
import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = pytest.mark.skipif(not (REPO / "mkdocs.yml").is_file(), reason="needs the source checkout")

README = REPO / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_readme_links_resolve():
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)  # no links inside code blocks
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # relative ones only
    headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    assert targets, "no relative links found in README.md"
    broken = []
    for target in targets:
        path, _, anchor = target.partition("#")
        if path and not (REPO / path).exists():
            broken.append(target)
        elif not path and anchor not in headings:
            broken.append(target)
    assert not broken, f"README.md links to what does not exist: {broken}"


def test_site_builds_strict_with_the_generated_option_reference(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (it is in the `test` extra)")
    pytest.importorskip("material", reason="mkdocs-material is not installed (it is in the `test` extra)")
    from showdown.config.options import definitions, flag_of
    from showdown.config.run_config import RunConfig

    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    page = (site / "options" / "index.html").read_text()
    declared = definitions(RunConfig)
    flags = [flag_of(name, f, opt) for name, (f, opt, _) in declared.items()]
    missing = [flag for flag in flags if f"<code>{flag}</code>" not in page]
    assert not missing, f"the option reference lacks {missing}"
    for name in ("models", "strategies", "epochs"):  # a few by name, so the page is checked against real options
        f, opt, _ = declared[name]
        assert f"<code>{flag_of(name, f, opt)}</code>" in page
    groups = {opt.group for _, opt, _ in declared.values()}
    assert not [group for group in groups if f">{group}<" not in page], "a group of --help has no section"
    assert "<!-- options -->" not in page


def test_the_option_reference_in_the_checkout_is_current():
    """docs/options.md holds the tables (a reader on GitHub sees them); they are the options' own, regenerated."""
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import gen_options
    finally:
        sys.path.remove(str(REPO / "docs"))
    page = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    assert "| `--epochs` |" in page
    assert gen_options.with_options(page) == page, "docs/options.md is behind the options: python docs/gen_options.py"


def test_the_sites_front_page_shows_the_readmes_two_commands():
    """docs/index.md repeats the README's "Two commands" section (its links made relative to docs/): the same
    output and figures, not a copy that drifts."""
    def section(text: str) -> str:
        return text[text.index("## Two commands on a fresh machine"):text.index("On the full TF-Flowers set")]

    expected = section(README.read_text()).replace("(docs/", "(").replace("(#installing)", "(install.md)")
    assert section((REPO / "docs" / "index.md").read_text()) == expected
