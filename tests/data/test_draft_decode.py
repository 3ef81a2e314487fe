"""Large JPEGs are decoded at a reduced scale inside the codec (draft mode); the preprocessed tensors must stay
within one 8-bit level (on average) of the full decode's, on 12-megapixel photos like a phone's."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from showdown.data import images
from showdown.data.images import (
    CROP_RATIO,
    CROP_SCALE,
    FULL_DECODE_ENV,
    ImageFiles,
    eval_transform,
    load_rgb,
    train_transform,
)
from showdown.data.preprocessing import Preprocessing

PHONE = (4000, 3000)  # 12 megapixels
LITE0 = Preprocessing((3, 224, 224), "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.875)  # resized to 256
WHOLE_128 = Preprocessing((3, 128, 128), "bilinear", crop_pct=1.0)  # resized to 128: decoded at 1/8 scale


@pytest.fixture(scope="module")
def phone_photos(tmp_path_factory, demo_dir):
    """Demo photos upscaled to 4000x3000 and saved at quality 90: two as they are, one with sensor-like noise
    (fine detail, the hard case), and one stored sideways with EXIF orientation 6 (a portrait photo)."""
    folder = tmp_path_factory.mktemp("phone")
    sources = [sorted((demo_dir / cls).iterdir())[3] for cls in ("daisy", "roses", "sunflowers", "tulips")]
    rng = np.random.default_rng(0)
    photos = {}
    for name, source in zip(("daisy", "roses", "noisy", "portrait"), sources):
        with Image.open(source) as small:
            big = small.convert("RGB").resize(PHONE, Image.BICUBIC)
        exif = Image.Exif()
        if name == "noisy":
            noise = rng.normal(0, 10, (PHONE[1], PHONE[0], 1)).astype(np.float32)
            big = Image.fromarray((np.asarray(big, dtype=np.float32) + noise).clip(0, 255).astype(np.uint8))
        if name == "portrait":
            exif[0x0112] = 6  # "rotate 90 clockwise to display": shown as 3000x4000
        photos[name] = folder / f"{name}.jpg"
        big.save(photos[name], quality=90, exif=exif)
    return photos


@pytest.fixture
def decoded_sizes(monkeypatch):
    """The size of every image the dataset decodes, before its transform."""
    sizes = []
    real_load = images.load_rgb

    def load_rgb(path, *args):
        image = real_load(path, *args)
        sizes.append(image.size)
        return image

    monkeypatch.setattr(images, "load_rgb", load_rgb)
    return sizes


def _levels(a: torch.Tensor, b: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """|a - b| of two normalised tensors in 8-bit levels."""
    return (a - b).abs() * torch.tensor(preprocessing.std).view(3, 1, 1) * 255


@pytest.mark.parametrize("preprocessing, scale", [(LITE0, 4), (WHOLE_128, 8)])
def test_draft_decoded_phone_photos_preprocess_within_one_level_of_the_full_decode(
        phone_photos, decoded_sizes, preprocessing, scale):
    transform = eval_transform(preprocessing)
    assert transform.decode_side == 2 * math.floor(preprocessing.side / preprocessing.crop_pct)
    for name, path in phone_photos.items():
        drafted = ImageFiles([(path, 0)], transform)[0][0]
        full = transform(load_rgb(path))  # the reference: decoded at full size
        shown = (PHONE[1], PHONE[0]) if name == "portrait" else PHONE
        assert decoded_sizes[-1] == (shown[0] // scale, shown[1] // scale), name  # the draft path was taken
        assert min(decoded_sizes[-1]) >= transform.decode_side
        levels = _levels(drafted, full, preprocessing)
        # Measured: 0.15-0.34 levels on average, at most 2-4 (the noisy photo the most).
        assert levels.mean() <= 1.0 and levels.max() <= 6, (name, levels.mean(), levels.max())
        assert levels.mean() > 0.05  # the comparison does see a difference
    portrait = load_rgb(phone_photos["portrait"])
    assert portrait.size == (3000, 4000)  # EXIF rotation still applied, after the draft: sides swapped


def test_the_full_decode_switch_and_other_files_are_decoded_as_before(phone_photos, decoded_sizes, monkeypatch,
                                                                      demo_dir, tmp_path):
    transform = eval_transform(LITE0)
    monkeypatch.setenv(FULL_DECODE_ENV, "1")
    full = ImageFiles([(phone_photos["daisy"], 0)], transform)[0][0]
    assert decoded_sizes == [PHONE] and torch.equal(full, transform(load_rgb(phone_photos["daisy"])))
    monkeypatch.delenv(FULL_DECODE_ENV)
    small = sorted((demo_dir / "daisy").iterdir())[0]  # a JPEG smaller than twice the decode side
    assert np.array_equal(np.asarray(load_rgb(small, 512)), np.asarray(load_rgb(small)))
    png = tmp_path / "big.png"
    load_rgb(small).resize((2000, 1500)).save(png)  # not a JPEG: no draft mode
    assert load_rgb(png, 256).size == (2000, 1500)


def test_random_resized_crops_get_a_source_large_enough_for_their_smallest_crop(phone_photos):
    """light/strong: decoded so that even the smallest crop (8% of the area at aspect 3/4) is not upscaled;
    that crop then matches the full decode's within a level."""
    for augment in ("light", "strong"):
        transform = train_transform(LITE0, augment)
        crop = transform.transforms[0]
        assert type(crop).__name__ == "RandomResizedCropAndInterpolation"
        assert tuple(crop.scale) == CROP_SCALE and tuple(crop.ratio) == CROP_RATIO
        assert transform.decode_side == math.ceil(224 / math.sqrt(0.08 * 0.75)) == 915
    assert train_transform(LITE0, "flip").decode_side == eval_transform(LITE0).decode_side == 512
    full, drafted = load_rgb(phone_photos["noisy"]), load_rgb(phone_photos["noisy"], 915)
    assert drafted.size == (2000, 1500)
    area = CROP_SCALE[0] * PHONE[0] * PHONE[1]
    for ratio in CROP_RATIO:  # the smallest crops, at the centre, on pixel boundaries of both decodes
        w, h = (round(math.sqrt(area * r)) // 8 * 8 for r in (ratio, 1 / ratio))
        top, left = (PHONE[1] - h) // 16 * 8, (PHONE[0] - w) // 16 * 8
        a = F.to_tensor(F.resized_crop(full, top, left, h, w, [224, 224], InterpolationMode.BICUBIC))
        b = F.to_tensor(F.resized_crop(drafted, top // 2, left // 2, h // 2, w // 2, [224, 224],
                                       InterpolationMode.BICUBIC))
        assert min(w, h) // 2 >= 224 and (a - b).abs().mean() * 255 <= 1.0  # measured 0.57


def test_the_feature_cache_key_names_the_decoder(demo_dir, monkeypatch):
    from showdown.frozen.feature_cache import cache_key
    from showdown.models.backbones import load_backbone

    lite0 = load_backbone("efficientnet_lite0")
    items = [(p, 0) for p in sorted((demo_dir / "daisy").iterdir())[:3]]
    keys = {cache_key(lite0, items, "fp32")}
    monkeypatch.setattr(images, "DECODER", "draft-v2")
    keys.add(cache_key(lite0, items, "fp32"))
    monkeypatch.setenv(FULL_DECODE_ENV, "1")
    keys.add(cache_key(lite0, items, "fp32"))
    assert len(keys) == 3


def test_strong_augmentation_posterizes_at_its_highest_magnitude_instead_of_failing():
    """RandAugment's noisy magnitude reaches its cap of 10 in ~2% of posterize draws, where timm asks Pillow to
    keep 0 bits (Pillow 13 raises ValueError, and the image was then dropped as unreadable): it keeps 1 bit."""
    transform = train_transform(LITE0, "strong")
    augment = next(step for step in transform.transforms if type(step).__name__ == "RandAugment")
    posterize = next(op for op in augment.ops if op.name == "PosterizeIncreasing")
    posterize.prob, posterize.magnitude, posterize.magnitude_std = 1.0, 10, 0
    image = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16).repeat(3).reshape(16, 16, 3))
    assert set(np.unique(np.asarray(posterize(image)))) == {0, 128}  # one bit kept, not black, no error


def test_a_photo_over_pillows_warning_limit_decodes_without_a_warning(tmp_path, monkeypatch):
    """Pillow warns (a RuntimeWarning, several lines on stderr) for an image over MAX_IMAGE_PIXELS and refuses one
    over twice that; the first decodes, quietly (a 100-megapixel photo, here scaled down to a 64 x 64 one)."""
    import warnings

    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    with warnings.catch_warnings(record=True) as caught:
        image = images.load_rgb(path)
    assert image.size == (64, 64) and not caught
