"""The package as users get it: built as an sdist and a wheel, the wheel installed apart from the checkout runs the
demo showdown, installs beside the torch already there, and carries the metadata an index shows."""
import email
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.skipif(not (REPO / "pyproject.toml").is_file(), reason="needs the source checkout")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`python -m build`: the sdist, and the wheel built from it (so the sdist must carry everything too).
    --no-isolation builds with the test environment's setuptools instead of downloading one."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)],
                   check=True, capture_output=True, text=True)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    return wheel, sdist


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def test_wheel_carries_the_demo_and_the_presets(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    demo_images = [n for n in names if n.startswith("showdown/demo/") and n.endswith(".jpg")]
    assert len(demo_images) == 250
    assert {Path(n).parent.name for n in demo_images} == {"daisy", "dandelion", "roses", "sunflowers", "tulips"}
    assert "showdown/presets/cifar10-lite0-head.yaml" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]


def test_metadata_has_ranges_and_what_an_index_shows(built):
    wheel, sdist = built
    meta = _metadata(wheel)
    requirements = meta.get_all("Requires-Dist")
    assert requirements and not [r for r in requirements if "==" in r.split(";")[0]], requirements
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier")
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Keywords"] and meta.get_all("Project-URL") and meta["Summary"]
    # what PyPI would refuse or render badly (twine runs the same checks as the upload)
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installed_wheel_runs_the_demo_from_outside_the_checkout(built, tmp_path):
    """The wheel, not the editable checkout: installed into a folder of its own that comes first on the path, with
    the test environment's dependencies (so nothing is downloaded), run from a directory outside the checkout."""
    pytest.importorskip("pip", reason="this environment has no pip (a uv venv)")
    wheel, _ = built
    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target), "SHOWDOWN_CACHE": str(tmp_path / "cache")}
    where = subprocess.run([sys.executable, "-c", "import showdown; print(showdown.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(target)
    version = subprocess.run([sys.executable, "-m", "showdown", "--version"], cwd=work, env=env,
                             capture_output=True, text=True, check=True).stdout
    assert version.split()[:2] == ["showdown", _metadata(wheel)["Version"]]

    # The demo's three backbones at 128 px: what is checked is the wheel, not the full-size figures (the README's)
    result = subprocess.run([sys.executable, "-m", "showdown", "run", "--no-record", "--out", "out",
                             "--image-size", "128"], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data: demo-flowers (5 classes" in result.stdout
    for model in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert f"{model}  head" in result.stdout  # a row of the table
    assert (work / "out" / "report.html").is_file() and (work / "out" / "summary.json").is_file()
    assert "Traceback" not in result.stderr


def test_installing_the_wheel_replaces_nothing_already_installed(built, tmp_path):
    """Beside the torch a user already has: in this environment (the lock file's torch, torchvision and numpy, or
    the floors in the `oldest` session), pip's dry run installs the wheel and nothing else: no replaced torch, no
    download (`--no-index` would make any missing or conflicting requirement an error)."""
    pytest.importorskip("pip", reason="this environment has no pip (a uv venv)")
    wheel, _ = built
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--no-index", "--report",
                    str(report), str(wheel)], check=True)
    to_install = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert to_install == ["tl-showdown"]
