"""The code's shape is checked like its behaviour: the layer contract (import-linter) and the linter (ruff)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "showdown"


def _tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    path = str(found) if found.exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return path


def test_layers_point_one_way():
    result = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "BROKEN" not in result.stdout


def test_ruff_finds_nothing():
    result = subprocess.run([_tool("ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_long_modules_say_why():
    """A module over about 300 lines gives its reason in its docstring ("Long because ...")."""
    unexplained = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 320 and "Long because" not in text.split('"""')[1]:
            unexplained.append(f"{path.relative_to(SRC)} ({text.count(chr(10))} lines)")
    assert not unexplained, unexplained


def test_the_oldest_lock_pins_every_floor_of_pyproject():
    """`nox -s oldest` installs requirements/oldest.txt: no pin there may be below a `>=` floor of the dependencies
    (and of the extras it installs), or pip cannot satisfy both (grad-cam's floor rose to 1.5, the lock kept 1.4)."""
    import re

    from packaging.version import Version

    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, as tomli
        tomllib = pytest.importorskip("tomli")
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    oldest = (root / "requirements" / "oldest.txt").read_text()
    command = next(line for line in oldest.splitlines() if "uv pip compile" in line)
    requirements = list(project["dependencies"])
    for extra in re.findall(r"--extra (\S+)", command):
        requirements += project["optional-dependencies"][extra]
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", oldest, flags=re.M))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    wrong = []
    for requirement in requirements:
        found = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*>=\s*([0-9][^,;\s]*)", requirement)
        if found:
            name, floor = found[1].lower().replace("_", "-"), found[2]
            if name in pins and Version(pins[name]) < Version(floor):  # above it: another package needs more
                wrong.append(f"{name}: floor {floor}, oldest.txt {pins[name]}")
    assert not wrong, wrong


def test_the_test_files_the_tools_scripts_run_exist():
    root = Path(__file__).resolve().parents[1]
    import re

    named = {path for script in (root / "tools").glob("*.sh")
             for path in re.findall(r"\btests/[\w/]+\.py\b", script.read_text())}
    assert named and not [path for path in named if not (root / path).is_file()]
