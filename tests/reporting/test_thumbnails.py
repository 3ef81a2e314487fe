"""The report's thumbnails kept in the cache: read back while their images are unchanged, made again otherwise."""
import os
import shutil
from pathlib import Path

import showdown
from showdown.reporting.thumbnails import Bundles, Thumbnails

DEMO = Path(showdown.__file__).parent / "demo" / "flowers" / "daisy"


def _scrambled_in_place(path: Path) -> None:
    """Garbage of the same size and modification time: only a decode would notice."""
    facts = path.stat()
    path.write_bytes(b"\0" * facts.st_size)
    os.utime(path, ns=(facts.st_atime_ns, facts.st_mtime_ns))


def test_a_later_report_reads_kept_thumbnails_and_remakes_changed_or_damaged_ones(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    paths = [shutil.copy(p, images) for p in sorted(DEMO.glob("*.jpg"))[:3]]
    first = Thumbnails(kept=Bundles(tmp_path / "cache"))
    uris = [first.uri(str(p)) for p in paths]
    assert all(u and u.startswith("data:image/jpeg;base64,") for u in uris)
    first.kept.save()
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1  # one bundle for the folder at this size

    for p in paths:
        _scrambled_in_place(Path(p))
    again = Thumbnails(kept=Bundles(tmp_path / "cache"))
    assert [again.uri(str(p)) for p in paths] == uris  # from the bundle: nothing decoded

    os.utime(paths[0], ns=(0, 10**18))  # another time: decoded again (and now unreadable)
    assert Thumbnails(kept=Bundles(tmp_path / "cache")).uri(str(paths[0])) is None

    bundle = next((tmp_path / "cache").glob("*.json"))
    bundle.write_bytes(bundle.read_bytes()[:-5] + b"XXXXX")  # damaged: discarded, its thumbnails made again
    assert Thumbnails(kept=Bundles(tmp_path / "cache")).uri(str(paths[1])) is None
    assert not bundle.exists()


def test_saving_replaces_the_bundle_and_this_runs_own_pictures_are_not_kept(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    paths = [shutil.copy(p, images) for p in sorted(DEMO.glob("*.jpg"))[:2]]
    for p in paths:
        thumbs = Thumbnails(kept=Bundles(tmp_path / "cache"))
        thumbs.uri(str(p))
        thumbs.uri(str(p), 336, keep=False)  # e.g. a Grad-CAM overlay the run just wrote
        thumbs.kept.save()
    kept = list((tmp_path / "cache").glob("*.json"))
    assert len(kept) == 1 and kept[0].read_text().count("data:image") == 2

    Path(paths[0]).unlink()  # an image deleted: dropped from its bundle when the bundle is next written
    later = shutil.copy(sorted(DEMO.glob("*.jpg"))[2], images)
    thumbs = Thumbnails(kept=Bundles(tmp_path / "cache"))
    thumbs.uri(str(later))
    thumbs.kept.save()
    kept = list((tmp_path / "cache").glob("*.json"))
    assert len(kept) == 1 and Path(paths[0]).name not in kept[0].read_text()
    assert kept[0].read_text().count("data:image") == 2
