"""What the training loop iterates over: (inputs, targets) batches from cached tensors (features or boundary
activations, optionally mixed with their mirror images) or from decoded images."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from showdown.config.run_config import RunConfig
from showdown.data.images import eval_transform, image_loader, train_transform
from showdown.frozen.feature_cache import FEATURE_BATCH


def feature_batches(features, batch_size: int, *, shuffle: bool = False) -> DataLoader:
    """Shuffled from the global RNG, which `fit` seeds at every epoch."""
    return DataLoader(TensorDataset(features.features, features.labels), batch_size=batch_size, shuffle=shuffle)


class MirrorBatches:
    """Shuffled training batches in which every image appears as itself or as its mirror image, by a coin per
    image and epoch: the `flip` augmentation on cached features or boundary activations (both computed once).
    Drawn from the global RNG, which `fit` seeds at every epoch."""

    def __init__(self, plain, mirrored, batch_size: int):
        if not torch.equal(plain.indices, mirrored.indices):
            raise RuntimeError("plain and mirrored images differ")  # both skip the same unreadable files
        self.plain, self.mirrored, self.labels = plain.features, mirrored.features, plain.labels
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.labels))
        mirror = torch.rand(len(self.labels)) < 0.5
        for batch in order.split(self.batch_size):
            pick = mirror[batch].view(-1, *[1] * (self.plain.dim() - 1))
            yield torch.where(pick, self.mirrored[batch], self.plain[batch]), self.labels[batch]


def cached_train_batches(cached: dict, batch_size: int):
    """Training batches from cached tensors per split, mirrored half the time when "train_mirrored" is there."""
    if "train_mirrored" in cached:
        return MirrorBatches(cached["train"], cached["train_mirrored"], batch_size)
    return feature_batches(cached["train"], batch_size, shuffle=True)


class ImageBatches:
    """(inputs, targets) batches from an image loader, whose batches also carry indices and failures.
    `readable` lists, after a pass, the item indices of the images it yielded (unreadable files are skipped)."""

    def __init__(self, loader):
        self.loader = loader
        self.readable: list[int] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.readable = []
        for images, labels, indices, _ in self.loader:
            if len(images):
                self.readable += indices.tolist()
                yield images.contiguous(memory_format=torch.channels_last), labels


def image_batches(items, preprocessing, config: RunConfig, *, train: bool) -> ImageBatches:
    transform = train_transform(preprocessing, config.augment) if train else eval_transform(preprocessing)
    return ImageBatches(image_loader(items, transform, batch_size=config.batch_size if train else FEATURE_BATCH,
                                     workers=config.workers, shuffle=train))
