import io
import shutil
import tarfile
import zipfile

import pytest

from showdown.data import load_dataset
from showdown.data.archive import extract_once
from showdown.errors import DataError
from tests.conftest import DATASETS, needs_cifar10, needs_flowers


def test_demo_split_is_stratified_reproducible_and_disjoint():
    a = load_dataset("demo", seed=0)
    assert a.classes == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert a.counts() == {"train": 170, "val": 40, "test": 40}
    for split, per_class in (("train", 34), ("val", 8), ("test", 8)):
        labels = [label for _, label in a.splits[split]]
        assert all(labels.count(c) == per_class for c in range(5)), split
    files = [set(p for p, _ in a.splits[s]) for s in ("train", "val", "test")]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    assert load_dataset("demo", seed=0).splits == a.splits
    assert load_dataset("demo", seed=1).splits["test"] != a.splits["test"]
    assert load_dataset("demo", split=(0.8, 0.1, 0.1)).counts() == {"train": 200, "val": 25, "test": 25}


def test_a_folder_named_from_another_place_is_the_same_dataset_for_the_caches(tmp_path, demo_copy, monkeypatch):
    from showdown.frozen.feature_cache import cache_key
    from showdown.models.backbones.loader import load_backbone

    absolute = load_dataset(str(demo_copy))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    relative = load_dataset("../flowers")  # how `showdown run --data ../flowers` names it from there
    assert relative.root == absolute.root == demo_copy.resolve()
    assert relative.fingerprint == absolute.fingerprint and relative.splits == absolute.splits
    backbone = load_backbone("efficientnet_lite0", image_size=64)
    keys = {cache_key(backbone, spec.splits["train"], "fp32") for spec in (relative, absolute)}
    assert len(keys) == 1


def test_given_split_folders_are_used(tmp_path, demo_copy):
    root = tmp_path / "presplit"
    for split, files in (("train", slice(0, 8)), ("test", slice(8, 12))):
        for cls in ("daisy", "roses"):
            (root / split / cls).mkdir(parents=True)
            for path in sorted((demo_copy / cls).iterdir())[files]:
                shutil.copy(path, root / split / cls / path.name)
    spec = load_dataset(str(root))
    assert spec.counts()["test"] == 8
    assert spec.counts()["train"] + spec.counts()["val"] == 16 and spec.counts()["val"] >= 2
    assert "given" in spec.split_source and "val carved from train" in spec.split_source


def test_hidden_files_and_empty_classes_are_ignored(demo_copy):
    (demo_copy / "empty").mkdir()
    (demo_copy / ".hidden").mkdir()
    (demo_copy / "__MACOSX").mkdir()
    shutil.copy(next((demo_copy / "daisy").iterdir()), demo_copy / "__MACOSX" / "x.jpg")
    (demo_copy / "daisy" / ".DS_Store").write_bytes(b"junk")
    spec = load_dataset(str(demo_copy))
    assert spec.classes == ["daisy", "roses", "sunflowers"]
    assert any("empty" in w for w in spec.warnings)


def test_linked_folders_are_read_and_a_link_looping_back_adds_nothing(tmp_path, demo_copy):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(demo_copy / "sunflowers", elsewhere)
    (demo_copy / "sunflowers").symlink_to(elsewhere)  # a class folder that is a link
    more = tmp_path / "more-roses"
    more.mkdir()
    shutil.copy(next((demo_copy / "daisy").iterdir()), more / "extra.jpg")
    (demo_copy / "roses" / "more").symlink_to(more)  # a linked folder inside a class
    (demo_copy / "roses" / "loop").symlink_to(demo_copy / "roses")  # back into the class: nothing twice
    (demo_copy / "roses" / "up").symlink_to(demo_copy)  # up to the root: the other classes are not roses
    (demo_copy / "roses" / "0-self").symlink_to("0-self")  # a link that loops on itself costs only itself
    spec = load_dataset(str(demo_copy))
    files = [str(path.relative_to(demo_copy)) for items in spec.splits.values() for path, _ in items]
    assert len(files) == 12 + 13 + 12 and len(set(files)) == len(files)
    assert "roses/more/extra.jpg" in files and not any("loop" in name or "up/" in name for name in files)
    assert sum(name.startswith("sunflowers/") for name in files) == 12


def test_errors_for_missing_path_and_single_class(tmp_path, demo_copy):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    one = tmp_path / "one"
    shutil.copytree(demo_copy / "daisy", one / "daisy")
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(str(one))


def test_named_dataset_missing_locally_says_where_to_put_it(tmp_path, monkeypatch):
    import showdown.data.download as download

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    with pytest.raises(DataError, match=f"put the dataset under {tmp_path}"):
        download.download_named("tf_flowers", tmp_path)
    with pytest.raises(DataError, match="could not be downloaded"):
        load_dataset("tf_flowers", data_root=str(tmp_path))


def _zip_of(folder, path):
    with zipfile.ZipFile(path, "w") as zf:
        for file in folder.rglob("*"):
            zf.write(file, f"flowers/{file.relative_to(folder)}")


def test_zip_and_tar_archives_are_extracted_once(tmp_path, demo_copy):
    archive = tmp_path / "flowers.zip"
    _zip_of(demo_copy, archive)
    spec = load_dataset(str(archive))
    assert spec.classes == ["daisy", "roses", "sunflowers"] and sum(spec.counts().values()) == 36
    assert load_dataset(str(archive)).root == spec.root  # cached, not extracted again
    tgz = tmp_path / "flowers.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(demo_copy, arcname="flowers")
    assert load_dataset(str(tgz)).classes == spec.classes


def _tar_with(path, name, *, symlink=False):
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo(name)
        if symlink:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
        else:
            data = b"gotcha"
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_archive_member_escaping_the_folder_is_refused(tmp_path, kind):
    archive = tmp_path / f"evil.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("a/b.jpg", b"ok")
            zf.writestr("../../escaped.txt", b"gotcha")
    else:
        _tar_with(archive, "../../escaped.txt")
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(DataError, match="outside its folder"):
        extract_once(archive, cache)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not cache.exists() or not any(p for p in cache.iterdir() if not p.name.startswith("."))


def test_archive_symlink_and_bomb_are_refused(tmp_path):
    link = tmp_path / "link.tar"
    _tar_with(link, "cls/evil.jpg", symlink=True)
    with pytest.raises(DataError, match="link"):
        extract_once(link, tmp_path / "cache")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/zeros.jpg", b"\0" * 5_000_000)
    with pytest.raises(DataError, match="limit"):
        extract_once(bomb, tmp_path / "cache", max_member=1_000_000)


@needs_flowers
def test_tf_flowers_by_name_from_the_data_root():
    spec = load_dataset("tf_flowers", data_root=str(DATASETS))
    assert len(spec.classes) == 5 and sum(spec.counts().values()) == 3670


@needs_cifar10
def test_cifar10_by_name_from_its_archive():
    spec = load_dataset("cifar10", data_root=str(DATASETS))
    assert len(spec.classes) == 10 and spec.counts()["test"] == 10000
    assert spec.counts()["train"] + spec.counts()["val"] == 50000
