"""The test suite on every supported Python, on the exact lock, and on the oldest releases declared.

    nox -s tests-3.12             # one Python, from requirements/lock.txt
    nox -s oldest                 # the floors in pyproject.toml, from requirements/oldest.txt
    nox -s wheel                  # sdist + wheel, twine check

Interpreters are looked up on PATH as python3.X; with pyenv, make all of them visible at once:
`PYENV_VERSION=3.11.7:3.10.13:3.12.1:3.13.0 nox`. Regenerate the locks with the command at the top of each file.
"""
from __future__ import annotations

import glob

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
EXTRAS = ".[test,keras,tflite,openvino,mlflow,tensorboard,wandb,explain,ray,int8]"
PYTEST = ("python", "-m", "pytest", "-n", "2", "--dist", "loadscope")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", EXTRAS, "-c", "requirements/lock.txt")
    session.run(*PYTEST, *session.posargs)


@nox.session(python="3.10")
def oldest(session: nox.Session) -> None:
    """The floors: every direct dependency at the oldest release pyproject.toml admits. The tflite extra is left
    out: its converter has one release and pulls JAX and transformers, which would lift the core floors."""
    session.install("-e", ".[test,keras,openvino,explain]", "-c", "requirements/oldest.txt")
    session.run(*PYTEST, *session.posargs)


@nox.session(python="3.11")
def wheel(session: nox.Session) -> None:
    session.install("build", "twine")
    session.run("python", "-m", "build", "--outdir", "dist")
    session.run("twine", "check", "--strict", *glob.glob("dist/*"))
