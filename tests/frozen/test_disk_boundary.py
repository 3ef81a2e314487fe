"""Boundary activations over the RAM budget go to a memory-mapped file: the same batches as in RAM, a damaged file
recomputed, and a fine-tune on it whose saved model predicts what it recorded."""
import logging

import pytest
import torch

from showdown import RunConfig, run
from showdown.experiment.boundary_store import HEADROOM, disk_folder
from showdown.frozen import disk_activations
from showdown.frozen.disk_activations import RowWriter
from showdown.frozen.feature_cache import Features
from showdown.training.batches import TensorBatches
from tests.conftest import assert_saved_model_predicts_recorded


def _on_disk(path, features: Features, chunk=7) -> Features:
    """`features` written as the frozen pass writes them (chunk by chunk), mapped back from the sealed file."""
    writer = RowWriter(path, features.features.dtype)
    for part in features.features.split(chunk):
        writer.append(part)
    return writer.seal(Features(writer.tensor(), features.labels, features.indices, features.failed, False))


def _activations(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    maps = torch.randn(n, 4, 5, 5, generator=generator).to(torch.bfloat16)
    return Features(maps, torch.randint(0, 3, (n,), generator=generator), torch.arange(n), ["x.jpg"], False)


def test_the_disk_cache_gives_the_batches_the_ram_cache_gives(tmp_path):
    plain, mirrored = _activations(seed=1), _activations(seed=2)
    mirrored.labels, mirrored.indices = plain.labels, plain.indices
    disk_plain, disk_mirrored = _on_disk(tmp_path / "a.boundary", plain), _on_disk(tmp_path / "b.boundary", mirrored)
    assert disk_plain.features.dtype == torch.bfloat16 and torch.equal(disk_plain.features, plain.features)
    reread = disk_activations.read(tmp_path / "a.boundary")  # as a later run finds it
    assert reread.cache_hit and torch.equal(reread.labels, plain.labels) and reread.failed == ["x.jpg"]
    ram = TensorBatches(plain, 8, mirrored=mirrored, shift=1, seed=5)
    disk = TensorBatches(reread, 8, mirrored=disk_mirrored, shift=1, seed=5)
    for epoch in range(2):
        ram.set_epoch(epoch), disk.set_epoch(epoch)
        pairs = list(zip(ram, disk, strict=True))
        assert len(pairs) == 5
        for (x_ram, y_ram), (x_disk, y_disk) in pairs:
            assert torch.equal(x_ram, x_disk) and torch.equal(y_ram, y_disk)
    # and the order is the seeded shuffle: each row once per epoch, from its own view or its mirror image's
    rows = torch.cat([x for x, _ in TensorBatches(plain, 8, seed=5)])
    assert sorted(rows.float().sum((1, 2, 3)).tolist()) == sorted(plain.features.float().sum((1, 2, 3)).tolist())


def test_a_damaged_or_truncated_file_is_deleted_with_one_warning(tmp_path, caplog):
    features = _activations()
    for damage in ("flip", "truncate", "empty"):
        path = tmp_path / f"{damage}.boundary"
        _on_disk(path, features)
        data = bytearray(path.read_bytes())
        if damage == "flip":
            data[len(data) // 3] ^= 0x10  # a row's byte: size and trailer intact
        path.write_bytes(data[:-100] if damage == "truncate" else b"" if damage == "empty" else bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert disk_activations.read(path) is None
        assert not path.exists() and len(caplog.records) == 1 and "recomputing" in caplog.text, caplog.text
    assert disk_activations.read(tmp_path / "missing.boundary") is None  # nothing there: no warning either


def test_no_disk_room_no_cache_folder_or_opted_out_means_the_full_forward(tmp_path):
    assert disk_folder(tmp_path, 1000) == (tmp_path / "boundary", "")
    assert disk_folder(tmp_path, 2**60)[0] is None and "free" in disk_folder(tmp_path, 2**60)[1]
    assert disk_folder(None, 1000)[0] is None and disk_folder(tmp_path, 1000, allowed=False)[0] is None
    assert disk_folder(tmp_path, 1000, writable=False) == (None, f"; the cache folder {tmp_path} takes no new file")
    assert HEADROOM > 0


def _finetune_config(tmp_path, demo_dir, **extra) -> dict:
    return dict(data=str(demo_dir), models=["efficientnet_lite0"], strategies=["finetune=blocks:1"], pretrained=False,
                allow_random_init=True, image_size=64, workers=0, precision="fp32", report=False, record=False,
                cache_budget_gb=1e-6, cache_dir=str(tmp_path / "cache"), **extra)


def _check_predictions(run_dir):
    """The saved model, run on the test images, predicts what predictions.csv says."""
    (folder,) = [f for f in run_dir.iterdir() if f.is_dir() and f.name.startswith("efficientnet_lite0-")]
    assert_saved_model_predicts_recorded(folder)
    return folder


def test_finetune_over_the_ram_budget_trains_on_the_disk_cache(tmp_path, demo_dir):
    """A tiny --cache-budget-gb: the activations go to disk, not to the full forward, and the saved model predicts
    what predictions.csv says."""
    lines = []
    results = run(RunConfig(**_finetune_config(tmp_path, demo_dir, max_per_class=2, epochs=1, runtime="torch"),
                            out=str(tmp_path / "a")), echo=lines.append)
    on_disk = [line for line in lines if "boundary cache on disk:" in line]
    assert len(on_disk) == 1 and str(tmp_path / "cache" / "boundary") in on_disk[0], lines
    assert not any("full forward" in line for line in lines), lines
    assert len(list((tmp_path / "cache" / "boundary").glob("*.boundary"))) == 3  # train, val, test
    _check_predictions(results.run_dir)


@pytest.mark.slow
def test_a_rerun_reads_the_disk_cache_and_recomputes_a_damaged_file(tmp_path, demo_dir, caplog):
    """With flip augmentation (mirror images cached too): a re-run finds the files, and recomputes the one damaged
    in between, with one warning; both runs predict alike, and as their saved models do."""
    config = _finetune_config(tmp_path, demo_dir, max_per_class=4, epochs=1, ft_epochs=2, augment="flip")
    lines = []
    torch.manual_seed(0)  # the random init of the backbone (loaded before the entry's seed), alike in both runs
    first = run(RunConfig(**config, out=str(tmp_path / "a")), echo=lines.append)
    computed = first.frozen_counts["images"]
    on_disk = [line for line in lines if "boundary cache on disk:" in line]
    assert len(on_disk) == 1 and str(tmp_path / "cache" / "boundary") in on_disk[0], lines
    assert not any("full forward" in line for line in lines), lines
    files = sorted((tmp_path / "cache" / "boundary").glob("*.boundary"))
    assert len(files) == 4  # train, its mirror images, val, test
    folder = _check_predictions(first.run_dir)

    damaged = bytearray(files[0].read_bytes())
    damaged[100] ^= 0xFF
    files[0].write_bytes(bytes(damaged))
    caplog.clear()
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        second = run(RunConfig(**config, out=str(tmp_path / "b")), echo=lines.append)
    assert 0 < second.frozen_counts["images"] < computed  # only the damaged view's images ran again
    assert sum("damaged cache entry" in r.getMessage() for r in caplog.records) == 1, caplog.text
    assert files[0].is_file()  # recomputed
    again = second.run_dir / folder.name
    assert (again / "predictions.csv").read_text() == (folder / "predictions.csv").read_text()
