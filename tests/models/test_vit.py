"""Vision transformers: built for --image-size, DINOv2 at 224 px by default, weights from the Hugging Face cache."""
import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from showdown.errors import ModelError
from showdown.models.backbones import load_backbone
from showdown.models.saving import load_model

DINO = "vit_small_patch14_dinov2"
TINY = "vit_tiny_patch16_224"  # 5.7 M parameters: the quick ViT
TINY_REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # timm's default weights for it


def test_dinov2_runs_at_224_by_default_not_518():
    backbone = load_backbone(DINO, pretrained=False)
    assert backbone.preprocessing.input_size == (3, 224, 224)
    assert backbone.timm_kwargs["img_size"] == 224 and backbone.model.patch_embed.img_size == (224, 224)
    assert backbone.num_features == 384


def test_image_size_not_a_multiple_of_the_patch_is_one_line(tmp_path, capsys, demo_copy):
    from showdown.cli import main

    with pytest.raises(ModelError, match="multiple of its patch size 14 .e.g. 112 or 126"):
        load_backbone(DINO, pretrained=False, image_size=120)
    assert main(["run", "--data", str(demo_copy), "--models", DINO, "--no-pretrained", "--image-size", "120",
                 "--out", str(tmp_path / "err")]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1 and "patch size 14" in stderr


def test_dinov2_head_at_112_px_end_to_end(tmp_path, demo_copy):
    from showdown.cli import main

    out = tmp_path / "vit"
    assert main(["run", "--data", str(demo_copy), "--models", DINO, "--no-pretrained", "--allow-random-init",
                 "--image-size", "112", "--strategy", "head", "--epochs", "1", "--workers", "0",
                 "--precision", "fp32", "--out", str(out), "--quiet"]) == 0
    entry = out / f"{DINO}-head"
    assert json.loads((entry / "metrics.json").read_text())["accuracy"] >= 0
    model, info = load_model(entry)  # rebuilt at 112 px from the saved timm kwargs
    assert info.timm_kwargs["img_size"] == 112
    with torch.inference_mode():
        assert model.eval()(torch.zeros(1, 3, 112, 112)).shape == (1, 3)


def _hub_cache(root, repo_id, state_dict):
    """A Hugging Face hub cache holding `state_dict` as repo_id's model.safetensors, in the hub's own layout."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file(state_dict, str(snapshot / "model.safetensors"))


def test_weights_come_from_the_hugging_face_cache_offline(tmp_path, monkeypatch):
    torch.manual_seed(0)
    saved = {k: v + torch.randn_like(v) for k, v in timm.create_model(TINY, pretrained=False).state_dict().items()}
    _hub_cache(tmp_path / "hub", TINY_REPO, saved)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # HF_HUB_OFFLINE=1 is set by conftest.py

    backbone = load_backbone(TINY)
    assert backbone.source == f"Hugging Face cache ({TINY_REPO})" and backbone.pretrained
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, saved[key]), key

    # At another input size timm's checkpoint filter resamples the 14x14 position grid to 7x7.
    small = load_backbone(TINY, image_size=112)
    expected = resample_abs_pos_embed(saved["pos_embed"], (7, 7), num_prefix_tokens=1)
    assert torch.allclose(small.model.pos_embed, expected)
    assert torch.equal(small.model.blocks[0].attn.qkv.weight, saved["blocks.0.attn.qkv.weight"])


def test_empty_hugging_face_cache_is_named_in_the_error(tmp_path, monkeypatch):
    (tmp_path / "hub").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError) as info:
        load_backbone(TINY, weights_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"Hugging Face cache {tmp_path / 'hub'} (no {TINY_REPO})" in message and "HF_HUB_OFFLINE" in message


@pytest.mark.parametrize("count", [1, 3])
def test_blocks_k_on_a_vit_unfreezes_its_last_k_transformer_blocks(count):
    """`finetune=blocks:K` means transformer blocks on a ViT (timm's coarse groups: the embeddings, then one group
    per block, the final norm with the last), as it means stages on a CNN."""
    from showdown.models.classifier import Head, ImageClassifier
    from showdown.training.freezing import unfreeze

    backbone = load_backbone(TINY, pretrained=False, image_size=64)
    model = ImageClassifier(backbone.model, Head(backbone.num_features, 5))
    unfrozen = unfreeze(model, f"blocks:{count}")
    depth = len(backbone.model.blocks)
    top = tuple(f"blocks.{i}." for i in range(depth - count, depth))
    expected = {name for name, _ in backbone.model.named_parameters() if name.startswith((*top, "norm."))}
    assert set(unfrozen) == expected
    assert all(p.requires_grad == (n in expected) for n, p in backbone.model.named_parameters())


def test_dinov2_finetune_trains_on_cached_tokens_and_its_saved_model_reproduces_predictions(tmp_path, demo_copy,
                                                                                           monkeypatch):
    """`finetune=blocks:2` on DINOv2 ViT-S/14: the stem and the frozen blocks run once per image (every image decoded
    once), the top trains on cached tokens, and the saved model predicts what predictions.csv says (1e-4)."""
    import csv
    from collections import Counter

    import numpy as np

    from showdown import RunConfig, run
    from showdown.data import images
    from showdown.deploy.predict import open_model, predict_files

    decoded = Counter()
    load = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda path, side=None: decoded.update([path]) or load(path, side))
    lines = []
    results = run(RunConfig(data=str(demo_copy), models=[DINO], strategies=["finetune=blocks:2"], pretrained=False,
                            image_size=56, epochs=2, workers=0, precision="fp32", report=False, record=False,
                            label_issues="off", gradcam=0, activation_shift=1, out=str(tmp_path / "ft")),
                  echo=lines.append)
    assert any("boundary cache: frozen bottom (11 of 14 layers)" in line for line in lines), lines
    assert any("--activation-shift ignored: the cached activations are tokens" in line for line in lines), lines
    assert decoded and set(decoded.values()) == {1}  # one pass over the images: the head phase reuses the tokens
    assert len(decoded) == sum(1 for p in demo_copy.rglob("*.jpg"))
    monkeypatch.undo()
    folder = results.run_dir / results.rows[0]["folder"]
    with open(folder / "predictions.csv", newline="") as handle:
        recorded = list(csv.DictReader(handle))
    predicted = list(predict_files(open_model(folder), [r["path"] for r in recorded], top_k=1))
    np.testing.assert_allclose([p["top"][0][1] for p in predicted], [float(r["confidence"]) for r in recorded],
                               atol=1e-4)


def test_pool_stages_on_a_vit_takes_the_class_tokens_of_its_last_blocks_and_exports(tmp_path, demo_copy):
    """`--pool-stages K` on a ViT: the class token of each of the last K blocks and the mean patch token of the last,
    each through the final norm (DINOv2's linear evaluation). Trained, saved, reloaded and exported like any model."""
    import numpy as np

    from showdown import RunConfig, run
    from showdown.data.images import eval_transform, load_rgb
    from showdown.data.preprocessing import Preprocessing
    from showdown.deploy.export import export_model
    from showdown.deploy.predict import open_model

    backbone = load_backbone(TINY, pretrained=False, image_size=64, pool_stages=2)
    vit = backbone.model.model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        tokens = vit.forward_features(x)  # the last block's tokens through the final norm
        out = backbone.model(x)
    width = vit.embed_dim
    assert out.shape == (2, 3 * width) and backbone.num_features == 3 * width
    torch.testing.assert_close(out[:, width:2 * width], tokens[:, 0])  # the last block's class token
    torch.testing.assert_close(out[:, 2 * width:], tokens[:, vit.num_prefix_tokens:].mean(1))  # mean patch token

    results = run(RunConfig(data=str(demo_copy), models=[TINY], strategies=["head"], pretrained=False, image_size=64,
                            pool_stages=2, epochs=2, workers=0, precision="fp32", report=False, record=False,
                            label_issues="off", gradcam=0, out=str(tmp_path / "probe")), echo=lambda *_: None)
    folder = results.run_dir / results.rows[0]["folder"]
    model, info = load_model(folder)
    images = torch.stack([eval_transform(Preprocessing.from_dict(info.preprocessing))(load_rgb(p))
                          for p in sorted(demo_copy.rglob("*.jpg"))[:4]])
    with torch.inference_mode():
        expected = model(images).softmax(1).numpy()
    np.testing.assert_allclose(open_model(export_model(folder, "onnx"))(images), expected, atol=1e-4)


@pytest.mark.parametrize("name, resized, mean", [
    ("dinov2_vits14", 256, (0.485, 0.456, 0.406)),  # DINOv2's linear probes: short side 256, centre crop 224
    ("clip_vitb16", 224, (0.48145466, 0.4578275, 0.40821073)),  # CLIP's: short side 224, centre crop 224
    (TINY, 248, (0.5, 0.5, 0.5)),  # any other backbone keeps timm's config (crop_pct 0.9)
])
def test_dinov2_and_clip_are_evaluated_as_their_published_linear_probes(name, resized, mean):
    from torchvision import transforms

    from showdown.data.images import eval_transform

    preprocessing = load_backbone(name, pretrained=False).preprocessing
    assert preprocessing.input_size == (3, 224, 224) and preprocessing.interpolation == "bicubic"
    resize, crop, _, normalize = eval_transform(preprocessing).transforms
    assert isinstance(resize, transforms.Resize) and resize.size == resized  # an int: the shorter side
    assert resize.interpolation == transforms.InterpolationMode.BICUBIC
    assert isinstance(crop, transforms.CenterCrop) and crop.size == (224, 224)
    assert normalize.mean == pytest.approx(mean)
