"""The faults real machines have, made for real: damaged cache entries of every kind, a full disk (a small tmpfs,
mounted when the tests run as root), a damaged results database, a folder of phone photos (HEIC). Each ends in one
line or one warning, never a traceback, and what was finished is kept."""
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from showdown import RunConfig, cache, run
from showdown.cli import main
from showdown.data import load_dataset
from showdown.data.archive import extract_once
from showdown.data.leakage import check_leakage
from showdown.errors import ShowdownError
from showdown.frozen import feature_cache
from tests.conftest import mount_tmpfs
from tests.data.test_standard_forms import write_cifar10

QUICK = dict(models=["efficientnet_lite0"], strategies=["head"], image_size=64, epochs=3, workers="0",
             precision="fp32", report=False, record=False)
FLAGS = ["--models", "efficientnet_lite0", "--image-size", "64", "--epochs", "3", "--workers", "0",
         "--precision", "fp32", "--no-record"]


PROGRESS = re.compile(r"\[\d+/\d+\] |  \S+ \[[\w-]+\] epoch ")  # "[k/N] entry: ..." and "  entry [phase] epoch n/N ..."


def _main(capsys, *args) -> tuple[int, str, str]:
    """`showdown ARGS` in this process (a new one costs seconds of imports); an exception main() lets through
    fails the test, as a traceback would."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code: int, out: str, err: str, expected_code: int, *words) -> str:
    assert code == expected_code, (code, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if not PROGRESS.match(line)]  # the run's progress goes there too
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _warnings(caplog, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and words in r.getMessage()]


# Damage, as a disk that filled up, an interrupted copy or a flipped bit leaves it.
def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _zero(path: Path) -> None:
    os.truncate(path, 0)


def _flip(path: Path) -> None:
    """One bit flipped in the middle of the file's content (of a safetensors file: of its tensor data)."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0] if path.suffix == ".safetensors" else 0
    data[(start + len(data)) // 2] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": _truncate, "zero-byte": _zero, "bit-flipped": _flip}


def test_damaged_feature_cache_entries_are_recomputed_with_the_same_accuracy(tmp_path, demo_copy, caplog):
    config = dict(QUICK, data=str(demo_copy), cache_dir=str(tmp_path / "cache"))
    first = run(RunConfig(out=str(tmp_path / "first"), **config), echo=lambda *_: None)
    entries = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert len(entries) == 3  # train, val, test
    for entry, damage in zip(entries, DAMAGE.values()):  # one of each kind of damage
        damage(entry)
    (out_of_fold,) = (tmp_path / "cache").glob("out-of-fold-*.npy")  # the label-issue search's, after the entries
    _truncate(out_of_fold)
    lines = []
    again = run(RunConfig(out=str(tmp_path / "again"), **config), echo=lines.append)
    assert again.best()["accuracy"] == first.best()["accuracy"]
    warned = _warnings(caplog, "damaged cache entry")
    assert len(warned) == 4 and all(any(e.name in w for w in warned) for e in [*entries, out_of_fold])
    assert any("checksum mismatch" in w for w in warned)  # the flipped bit: only the checksum sees it
    passes = json.loads((again.run_dir / "summary.json").read_text())["frozen_passes"]
    # computed again by the entry; the label-issue search's own damaged entry made again too
    assert passes["recomputed"] == 4 and passes["miss"] == 3 and passes["hit"] == 0
    assert any("4 damaged cache entries recomputed" in line for line in lines)
    assert all(feature_cache._read(entry).cache_hit for entry in entries)  # healed: whole and checked again


def _tar_of(folder: Path, path: Path) -> Path:
    with tarfile.open(path, "w") as tf:
        tf.add(folder, arcname="flowers")
    return path


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("kind", ["extracted archive", "converted CIFAR"])
def test_damaged_dataset_cache_entries_are_made_again(tmp_path, monkeypatch, demo_copy, caplog, kind, damage):
    monkeypatch.setenv("SHOWDOWN_CACHE", str(tmp_path / "cache"))
    if kind == "extracted archive":
        source = _tar_of(demo_copy, tmp_path / "flowers.tar")
    else:
        source, _ = write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(0))
    root = load_dataset(str(source)).root
    victim = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))[3]
    original = victim.read_bytes()
    DAMAGE[damage](victim)
    before = cache.STATS["recomputed"]
    assert load_dataset(str(source)).root == root
    assert victim.read_bytes() == original  # made again from the source
    (warned,) = _warnings(caplog, "damaged cache entry")
    assert root.name in warned and victim.name in warned
    assert cache.STATS["recomputed"] == before + 1
    assert load_dataset(str(source)).root == root and len(_warnings(caplog, "damaged")) == 1  # trusted again


def _fill_features(path, features, rounds):
    for _ in range(rounds):
        feature_cache._write(path, features, refused=set())


def test_two_processes_filling_one_entry_end_with_one_good_entry(tmp_path, demo_copy):
    """Each writer renames a finished file (or folder) into place: a reader at any moment, and the end, see one
    whole entry, never a torn one."""
    path = tmp_path / "features" / "entry.safetensors"
    features = feature_cache.Features(torch.randn(500, 64), torch.arange(500), torch.arange(500), ["x.jpg"], False)
    fork = multiprocessing.get_context("fork")
    writers = [fork.Process(target=_fill_features, args=(path, features, 40)) for _ in range(2)]
    for writer in writers:
        writer.start()
    while any(w.is_alive() for w in writers):  # read while they write: every read is whole
        if path.is_file():
            assert torch.equal(feature_cache._read(path).features, features.features)
    assert [w.join() or w.exitcode for w in writers] == [0, 0]
    assert [p.name for p in path.parent.iterdir()] == ["entry.safetensors"]  # no temporary file left
    archive = _tar_of(demo_copy, tmp_path / "flowers.tar")
    extractors = [fork.Process(target=extract_once, args=(archive, tmp_path / "extracted")) for _ in range(2)]
    for extractor in extractors:
        extractor.start()
    assert [e.join() or e.exitcode for e in extractors] == [0, 0]
    (folder,) = (tmp_path / "extracted").iterdir()  # one folder, no .partial left
    assert cache.manifest_problem(folder) is None


def test_cache_info_and_clear_by_last_use(tmp_path, monkeypatch, capsys, demo_copy):
    """The cache lives where $XDG_CACHE_HOME says when $SHOWDOWN_CACHE is not set (a cluster's scratch disk)."""
    monkeypatch.delenv("SHOWDOWN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    load_dataset(str(_tar_of(demo_copy, tmp_path / "a.tar")))
    load_dataset(str(_tar_of(demo_copy, tmp_path / "b.tar")))
    code, out, _ = _main(capsys, "cache", "info")
    assert code == 0 and "datasets" in out and "2 entries" in out and "features" in out
    old = sorted((tmp_path / "showdown" / "extracted").iterdir())[0]
    month_ago = time.time() - 30 * 86400
    os.utime(old / cache.MANIFEST, (month_ago, month_ago))
    code, out, _ = _main(capsys, "cache", "clear", "--older-than", "7")
    assert code == 0 and "cleared 1 cache entries not used for 7 days" in out
    assert [p.name for p in (tmp_path / "showdown" / "extracted").iterdir()] != [old.name]
    assert len(list((tmp_path / "showdown" / "extracted").iterdir())) == 1
    code, out, _ = _main(capsys, "cache", "clear")
    assert code == 0 and "cleared 1 cache entries" in out and not any((tmp_path / "showdown" / "extracted").iterdir())


def test_clearing_a_folder_that_is_not_a_feature_cache_deletes_nothing(tmp_path, monkeypatch, capsys, demo_copy):
    """`showdown cache clear --cache-dir ~/photos` (a typo, or the wrong folder): one line, every file kept; a real
    feature cache folder given by name is cleared."""
    monkeypatch.setenv("SHOWDOWN_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    shutil.copytree(demo_copy, photos)
    (photos / "thesis.txt").write_text("years of work")
    before = sorted(path.relative_to(photos) for path in photos.rglob("*"))
    code, out, err = _main(capsys, "cache", "clear", "--cache-dir", str(photos))
    _one_line(code, out, err, 2, "is not a feature cache folder", "nothing deleted")
    assert sorted(path.relative_to(photos) for path in photos.rglob("*")) == before
    features = tmp_path / "features"
    features.mkdir()
    for name in ("0123456789abcdef01234567.safetensors", "out-of-fold-0123456789abcdef01234567-0123456789abcdef.npy",
                 ".0123456789abcdef01234567.safetensors.k5ecr9ux.tmp"):
        (features / name).write_bytes(b"x")
    code, out, _ = _main(capsys, "cache", "clear", "--cache-dir", str(features))
    assert code == 0 and "cleared 3 cache entries" in out and not any(features.iterdir())
    code, out, err = _main(capsys, "cache", "info", "--cache-dir", str(photos / "thesis.txt"))
    _one_line(code, out, err, 2, "is a file; give the feature cache's folder")
    code, out, err = _main(capsys, "cache", "info", "--cache-dir", str(tmp_path / "typo"))
    _one_line(code, out, err, 2, "typo does not exist; give the feature cache's folder")
    code, out, err = _main(capsys, "cache", "info", "--older-than", "3")
    _one_line(code, out, err, 2, "--older-than picks what `showdown cache clear` deletes")


def test_written_files_get_the_umask_not_mkstemps_0600(tmp_path, monkeypatch):
    """A run's report and models are as readable as the user's umask says (group, a web server), not owner-only."""
    from showdown import fileio

    monkeypatch.setattr(fileio, "UMASK", 0o022)  # the common umask, whatever this process's
    fileio.write_atomic(tmp_path / "report.md", "# report\n")
    with fileio.atomic_dir(tmp_path / "folder") as folder:
        (folder / "inside.txt").write_text("x")
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def _damaged_databases(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.db"
    text.write_text("these are my notes, not a database\n" * 100)
    from showdown.reporting.database import connect

    real = tmp_path / "real.db"
    with connect(real) as conn:
        conn.executemany("INSERT INTO runs (created, run_dir, config, environment, dataset_info) "
                         "VALUES (?, ?, ?, ?, ?)", [("now", f"/runs/{i}", "{}" * 500, "{}", "{}") for i in range(200)])
    conn.close()
    truncated = tmp_path / "truncated.db"
    data = real.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    return {"text": text, "truncated": truncated}


@pytest.mark.parametrize("which", ["text", "truncated"])
def test_a_damaged_results_database_fails_at_once_in_one_line(tmp_path, which):
    database = _damaged_databases(tmp_path)[which]
    out = tmp_path / "run"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "showdown", "run", "--data", "demo", "--db", str(database),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    _one_line(result.returncode, result.stdout, result.stderr, 2, str(database), "--no-record")
    assert seconds < 5, seconds
    assert not out.exists()  # nothing done: not a folder, not an image decoded


def test_a_damaged_results_database_under_resume_says_what_to_edit_not_flags_resume_refuses(tmp_path, demo_copy,
                                                                                            capsys):
    database, out = tmp_path / "results.db", tmp_path / "run"
    args = ["run", "--data", str(demo_copy), *FLAGS[:-1], "--max-per-class", "4", "--no-report", "--label-issues",
            "off", "--gradcam", "0", "--db", str(database), "--out", str(out)]
    assert _main(capsys, *args)[0] == 0
    database.write_text("these are my notes, not a database\n")
    line = _one_line(*_main(capsys, "run", "--resume", str(out)), 2, str(database), str(out / "config.yaml"),
                     "db:", "record: false")
    assert "--db" not in line and "--no-record" not in line  # flags --resume refuses


def test_a_locked_or_damaged_database_is_one_line_for_every_command(tmp_path, capsys, monkeypatch):
    """A writer holding the database past the busy timeout: "locked", and to try again (not to move the file aside
    while another process writes it). A damaged page: `showdown runs` says damaged, as `run` does (it printed a
    traceback, or "no run 1 (runs: 119)" read off the garbage)."""
    import sqlite3

    from showdown.errors import DiskError
    from showdown.reporting import database

    locked = tmp_path / "locked.db"
    database.check_database(locked)
    monkeypatch.setattr(database, "BUSY_SECONDS", 0.2)
    writer = sqlite3.connect(locked, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DiskError, match="is locked: another process has been writing it .* try again once it is"):
            database.check_database(locked)
    finally:
        writer.close()
    damaged = _damaged_databases(tmp_path)["truncated"].with_name("paged.db")
    shutil.copy(tmp_path / "real.db", damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2:len(data) // 2 + 3000] = os.urandom(3000)
    damaged.write_bytes(bytes(data))
    for args in (["runs", "--db", str(damaged)], ["runs", "show", "1", "--db", str(damaged)]):
        _one_line(*_main(capsys, *args), 2, "cannot use the results database", "damaged")


def _immutable(path: Path) -> None:
    """`path` made immutable (chattr +i): not even root writes it, as a file of a read-only share."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i needs root and chattr")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"this file system takes no immutable flag: {made.stderr.strip()}")


@pytest.mark.parametrize("read_only", ["file", "folder"])
def test_a_results_database_that_takes_no_write_fails_before_the_work(tmp_path, demo_copy, capsys, read_only):
    """It used to be found only once every entry had trained, with "free some space" for a remedy."""
    from showdown.reporting.database import check_database

    folder = tmp_path / "shared"
    folder.mkdir()
    database, out = folder / "results.db", tmp_path / "run"
    check_database(database)  # made, as by an earlier run
    _immutable(database if read_only == "file" else folder)
    try:
        line = _one_line(*_main(capsys, "run", "--data", str(demo_copy), *FLAGS[:-1], "--db", str(database),
                                "--out", str(out)), 1, str(database if read_only == "file" else folder),
                         "make it writable", "--no-record")
    finally:
        subprocess.run(["chattr", "-i", str(database if read_only == "file" else folder)], check=False)
    assert "space" not in line
    assert not out.exists()


def test_a_write_refused_for_want_of_permission_asks_for_it_not_for_space(tmp_path):
    import errno

    from showdown.errors import DiskError
    from showdown.experiment.runner import _kept_on_disk_errors

    (tmp_path / "config.yaml").write_text("data: demo\n")
    for code, cure in [(errno.EACCES, "make it writable, then"), (errno.ENOSPC, "free some space (or move"),
                       (errno.EFBIG, "raise the file size limit (ulimit -f), then")]:
        with pytest.raises(DiskError, match=re.escape(cure)) as refused, _kept_on_disk_errors(tmp_path):
            raise OSError(code, os.strerror(code), str(tmp_path / "model.safetensors"))
        assert refused.value.full == (code == errno.ENOSPC)


def _fill(folder: Path, limit: int = 128 * 2**20) -> Path:
    """Ballast until the disk says no more; never more than `limit` bytes (the small disk holds less, so a real
    disk under a failed mount is never filled)."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as f:
        try:
            while f.tell() < limit:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            return ballast
    ballast.unlink()
    pytest.fail(f"{folder} took {limit} bytes: not the small disk")


def test_a_full_disk_is_one_line_and_resume_finishes_keeping_finished_entries(tmp_path, demo_copy, small_disk,
                                                                              capsys):
    mount, resize = small_disk
    out = mount / "run"
    args = ["run", "--data", str(demo_copy), *FLAGS, "--strategy", "head,scratch-cnn",
            "--out", str(out), "--no-report"]
    # 3 MB: the models cannot fit; said before any image is decoded
    line = _one_line(*_main(capsys, *args), 1, "no space left", str(out), "--resume")
    assert (out / "config.yaml").is_file() and not (out / "efficientnet_lite0-head").exists()
    # 22 MB: the head entry fits (13.8 MB: its model file holds the frozen EfficientNet-Lite0), the scratch CNN's
    # checkpoint (6.3 MB with Adam's moments) once but not twice (the next is written beside the last)
    resize(22)
    line = _one_line(*_main(capsys, "run", "--resume", str(out)), 1, "no space left", "checkpoint", "--resume")
    assert str(out / "scratch_cnn-scratch-cnn") in line
    head = out / "efficientnet_lite0-head" / "metrics.json"
    assert head.is_file()
    kept = head.read_bytes()
    # a larger disk: the run goes on from where it stopped
    resize(64)
    code, printed, err = _main(capsys, "run", "--resume", str(out))
    assert code == 0, err
    assert "efficientnet_lite0 head: finished earlier, kept" in printed
    assert head.read_bytes() == kept and (out / "scratch_cnn-scratch-cnn" / "metrics.json").is_file()
    # full again when the report is written: one line, and the run folder as it was
    ballast = _fill(mount)
    _one_line(*_main(capsys, "report", str(out)), 1, "no space left", str(out / "report.html"))
    assert not (out / "report.html").exists() and head.read_bytes() == kept
    ballast.unlink()


def test_overlays_the_disk_refuses_leave_their_entry_to_be_made_again(tmp_path, demo_copy, capsys):
    """metrics.json marks an entry complete, so it comes after every file of the entry, the Grad-CAM overlays that
    another thread writes included: a disk full when they are written leaves the entry unfinished, and --resume
    makes it again, whole."""
    out = tmp_path / "run"
    assert _main(capsys, "run", "--data", str(demo_copy), *FLAGS, "--out", str(out), "--no-report",
                 "--gradcam", "2")[0] == 0
    entry, overlays = out / "efficientnet_lite0-head", out / "efficientnet_lite0-head" / "gradcam"
    (entry / "metrics.json").unlink()  # as if the run had stopped before this entry's end
    shutil.rmtree(overlays)
    overlays.mkdir()
    mount_tmpfs(overlays, "4k")  # one page: full at the first overlay
    try:
        _one_line(*_main(capsys, "run", "--resume", str(out)), 1, "no space left", str(out))
        assert not (entry / "metrics.json").exists()
    finally:
        subprocess.run(["umount", "-l", str(overlays)], check=False)
    code, printed, err = _main(capsys, "run", "--resume", str(out))
    assert code == 0, err
    assert "finished earlier" not in printed
    assert (entry / "metrics.json").is_file() and len(list(overlays.glob("*.png"))) == 2
    assert not list(entry.glob("checkpoint*"))


def test_a_read_only_run_folder_fails_before_the_work(tmp_path, demo_copy, small_disk, capsys):
    mount, _ = small_disk
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    out = mount / "run"
    _one_line(*_main(capsys, "run", "--data", str(demo_copy), *FLAGS, "--out", str(out)), 1,
              "read-only file system", str(out))
    assert not out.exists()


def test_a_full_cache_disk_is_a_warning_and_the_run_goes_on(tmp_path, demo_copy, small_disk, caplog):
    mount, _ = small_disk
    _fill(mount)
    config = dict(QUICK, data=str(demo_copy), cache_dir=str(mount / "features"))
    results = run(RunConfig(out=str(tmp_path / "run"), **config), echo=lambda *_: None)
    assert results.best()["accuracy"] >= 0.5  # 6 test images of 3 classes: chance is 1/3
    warned = _warnings(caplog, "no space left")
    assert len(warned) == 3 and all("feature cache entry" in w and "going on without caching" in w for w in warned)
    assert not list((mount / "features").glob("*.safetensors"))


def test_a_read_only_cache_folder_is_read_and_not_written(tmp_path, demo_copy, small_disk, caplog):
    """A share of features computed once, mounted read-only: its entries serve the run, which keeps no new one."""
    mount, _ = small_disk
    config = dict(QUICK, data=str(demo_copy), cache_dir=str(mount / "features"))
    first = run(RunConfig(out=str(tmp_path / "first"), **config), echo=lambda *_: None)
    kept = sorted(p.name for p in (mount / "features").iterdir())
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    again = run(RunConfig(out=str(tmp_path / "again"), **config), echo=lambda *_: None)
    assert _warnings(caplog, "reads the entries it holds and keeps no new one")
    passes = json.loads((again.run_dir / "summary.json").read_text())["frozen_passes"]
    assert passes["hit"] == 3 and passes["miss"] == 0
    assert again.best()["accuracy"] == first.best()["accuracy"]
    assert sorted(p.name for p in (mount / "features").iterdir()) == kept


# Phone photos
def _as_heic(source: Path, target: Path) -> None:
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        out = target / path.relative_to(source).with_suffix(".heic")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:  # x265's fastest preset: a real HEIC, 7x quicker to make
            image.save(out, quality=90, enc_params={"preset": "ultrafast"})


@pytest.fixture(scope="module")
def photo_folders(tmp_path_factory, demo_dir):
    """Three classes of 20 demo photos as JPEG (as shipped) and as HEIC (made here with pillow-heif)."""
    folder = tmp_path_factory.mktemp("photos")
    jpeg, heic = folder / "jpeg", folder / "heic"
    for cls in ("daisy", "roses", "sunflowers"):
        (jpeg / cls).mkdir(parents=True)
        for path in sorted((demo_dir / cls).iterdir())[:20]:
            shutil.copy(path, jpeg / cls / path.name)
    _as_heic(jpeg, heic)
    return jpeg, heic


def test_heic_photos_train_predict_and_are_checked_for_copies_like_jpegs(tmp_path, photo_folders, capsys):
    jpeg, heic = photo_folders
    results = {kind: run(RunConfig(data=str(folder), out=str(tmp_path / kind), **dict(QUICK, epochs=10)),
                         echo=lambda *_: None)
               for kind, folder in (("jpeg", jpeg), ("heic", heic))}
    rows = {kind: r.best() for kind, r in results.items()}
    assert rows["heic"]["n_test"] == rows["jpeg"]["n_test"] == 9
    assert abs(rows["heic"]["accuracy"] - rows["jpeg"]["accuracy"]) <= 1 / 9 + 1e-9  # within one image
    code, out, err = _main(capsys, "predict", str(results["heic"].run_dir), str(heic / "roses"), "--format", "csv")
    assert code == 0, err
    assert out.count(".heic") == 20 and "roses" in out
    split = tmp_path / "split"  # train/ and test/, one training photo also in test under another name
    for cls in ("daisy", "roses"):
        photos = sorted((heic / cls).iterdir())
        for part, chosen in (("train", photos[:10]), ("test", photos[10:])):
            (split / part / cls).mkdir(parents=True)
            for path in chosen:
                shutil.copy(path, split / part / cls / path.name)
    shutil.copy(sorted((heic / "daisy").iterdir())[0], split / "test" / "daisy" / "a copy.heic")
    (leak,) = check_leakage(load_dataset(str(split)), drop=False).leaks
    assert Path(leak["path"]).name == "a copy.heic" and leak["duplicate_split"] == "train"


def test_heic_without_pillow_heif_is_one_line_not_an_empty_folder(photo_folders):
    _, heic = photo_folders
    probe = ("import sys; sys.modules['pillow_heif'] = None  # as if it were not installed\n"
             "from showdown.data import load_dataset\n"
             f"load_dataset({str(heic)!r})")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("showdown.errors.DataError: ") and "daisy" in error  # one line, printed as such by the CLI
    assert "need pillow-heif: pip install pillow-heif" in error


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_a_run_that_seems_stuck_prints_its_stacks_on_sigusr1_and_goes_on(tmp_path):
    import signal

    process = subprocess.Popen([sys.executable, "-m", "showdown", "run", "--data", "demo", *FLAGS, "--no-report",
                                "--out", str(tmp_path / "run")], text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    first_line = process.stdout.readline()  # the run has started (past the imports, where the handler is set)
    assert first_line.startswith("data: "), first_line
    process.send_signal(signal.SIGUSR1)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    assert "Current thread" in err and 'File "' in err  # faulthandler's dump of every thread
    assert "test accuracy" in first_line + out


def test_a_missing_explain_extra_is_one_line_after_the_entries_and_never_before_an_error(tmp_path, capsys,
                                                                                          monkeypatch):
    from showdown.experiment import runner

    monkeypatch.setattr(runner, "explain_available", lambda: False)  # as without pytorch-grad-cam installed
    quick = dict(models=["efficientnet_lite0"], strategy=["head"], image_size=64, max_per_class=4, epochs=1,
                 workers=0, record=False, report=False, label_issues="off")
    with pytest.raises(ShowdownError):
        run(data=str(tmp_path / "no-such-folder"), out=str(tmp_path / "bad"), **quick)
    assert "Grad-CAM" not in capsys.readouterr().err  # the error is the only line a user sees
    results = run(data="demo", out=str(tmp_path / "run"), **quick)
    err = capsys.readouterr().err
    assert err.count("Grad-CAM overlays skipped") == 1 and err.index("Grad-CAM") > err.index("epoch 1/1")
    assert not (results.run_dir / results.rows[0]["folder"] / "gradcam").exists()


def test_the_results_database_on_a_read_only_mount_is_read(small_disk, capsys):
    """`showdown runs` on a database someone shared read-only: it opened the file for writing (WAL, its schema)
    and failed with "read-only" where it only had to read."""
    from showdown.reporting import database

    mount, _ = small_disk
    path = mount / "showdown.db"
    with contextlib.closing(database.connect(path)) as conn:
        conn.execute("INSERT INTO runs (created, run_dir, config, environment, dataset_info) "
                     "VALUES ('2026-12-07', '/runs/a', '{}', '{}', '{}')")
        conn.commit()
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    assert [row["run_dir"] for row in database.list_runs(path)] == ["/runs/a"]
    assert main(["runs", "--db", str(path)]) == 0 and "/runs/a" in capsys.readouterr().out
    text = mount.parent / "notes.db"  # any file that is no database: one line, as before
    text.write_text("not a database\n" * 100)
    assert main(["runs", "--db", str(text)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot use the results database") and len(err.strip().splitlines()) == 1, err


def test_a_results_database_on_a_full_disk_is_said_full_before_the_work(small_disk, tmp_path):
    """SQLite meets a full disk making its WAL files and says "disk I/O error": it was called damaged ("move the
    file aside"), where the cure is room."""
    from showdown.errors import DiskError
    from showdown.reporting import database

    mount, _ = small_disk
    path = mount / "showdown.db"
    with contextlib.closing(database.connect(path)):
        pass  # made while there was room
    _fill(mount)
    with pytest.raises(DiskError, match="no space left on the device: could not write the results database") as info:
        database.check_database(path)
    assert "free some space" in str(info.value) and "move the file aside" not in str(info.value)
