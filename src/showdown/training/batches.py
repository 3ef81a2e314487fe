"""What the training loop iterates over: (inputs, targets) batches from cached tensors (features or boundary
activations, optionally mixed with their mirror images) or from decoded images.

Training batches are drawn in DistributedSampler order (seeded, `set_epoch` every epoch). With `split` (data
parallel under torchrun) each process takes its share of every global batch of --batch-size; a single process
takes the whole batch, so the global batches are the same for any number of processes. Evaluation batches
with `split` are this process's contiguous shard, without padding (distributed.shard).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from showdown import distributed
from showdown.config.run_config import RunConfig
from showdown.data.images import eval_transform, image_loader, train_transform
from showdown.frozen.feature_cache import FEATURE_BATCH


class InOrder:
    """(inputs, targets) batches of two tensors in order, as slices (views: nothing is copied). A DataLoader over
    a TensorDataset would index and stack every row on its own, a third of a cached head's epoch."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int):
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.targets), self.batch_size):
            yield self.inputs[start:start + self.batch_size], self.targets[start:start + self.batch_size]


def feature_batches(features, batch_size: int) -> InOrder:
    """Cached tensors in order, whole on every process (evaluation, and validation of a phase that every
    process runs alike)."""
    return InOrder(features.features, features.labels, batch_size)


def training_sampler(n: int, seed: int, split: bool) -> DistributedSampler:
    """The shuffled order of n training items: the same global order for any number of processes."""
    replicas, rank = (distributed.world_size(), distributed.rank()) if split else (1, 0)
    return DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=True, seed=seed)


class TensorBatches:
    """Shuffled training batches of cached tensors. With `mirrored`, every image appears as itself or as its
    mirror image, by a coin per image and epoch: the `flip` augmentation on cached features or boundary
    activations (both computed once). With `shift`, every activation map moves by up to that many cells in each
    direction, at random per image and epoch: the cached analogue of a random crop. The draws are seeded by
    (seed, epoch) like the order: the same on every process."""

    def __init__(self, plain, batch_size: int, *, mirrored=None, shift: int = 0, seed: int = 0,
                 split: bool = False):
        if mirrored is not None and not torch.equal(plain.indices, mirrored.indices):
            raise RuntimeError("plain and mirrored images differ")  # both skip the same unreadable files
        self.plain, self.labels = plain.features, plain.labels
        self.sorted_reads = plain.on_disk  # a memory-mapped file: each batch's rows read front to back
        self.mirrored = mirrored.features if mirrored is not None else None
        if shift and self.plain.dim() != 4:
            raise ValueError("only activation maps (N, C, H, W) can be shifted")
        self.shift = shift
        self.sampler = training_sampler(len(self.labels), seed, split)
        self.batch_size = distributed.per_rank_batch(batch_size) if split else batch_size
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        order = torch.tensor(list(self.sampler))
        coins = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        mirror = torch.rand(len(self.labels), generator=coins) < 0.5 if self.mirrored is not None else None
        offsets = torch.randint(0, 2 * self.shift + 1, (len(self.labels), 2), generator=coins) if self.shift \
            else None
        for batch in order.split(self.batch_size):
            if mirror is None:
                inputs = rows(self.plain, batch, self.sorted_reads)
            elif not self.sorted_reads:  # in RAM: every row of the plain ones, the mirrored ones over them
                inputs = rows(self.plain, batch)
                pick = mirror.index_select(0, batch)
                inputs[pick] = rows(self.mirrored, batch[pick])
            else:  # each row read from one of the two: a memory-mapped cache reads no row it does not use
                pick = mirror[batch]
                inputs = torch.empty((len(batch), *self.plain.shape[1:]), dtype=self.plain.dtype)
                inputs[~pick] = rows(self.plain, batch[~pick], self.sorted_reads)
                inputs[pick] = rows(self.mirrored, batch[pick], self.sorted_reads)
            if offsets is not None:
                inputs = shifted(inputs, offsets[batch], self.shift)
            yield inputs, self.labels.index_select(0, batch)


def rows(source: torch.Tensor, index: torch.Tensor, sorted_reads: bool = False) -> torch.Tensor:
    """source[index], by index_select: a row at a time, where indexing goes element by element (24 against 140 us
    for 64 rows of 1,280 features, one thread of the 2-core box). `sorted_reads` (a memory-mapped cache file,
    frozen/disk_activations.py): the rows are read in ascending index order and put back in the batch's, so the file
    is read front to back, the way the disk and the page cache read ahead; in RAM that would only cost two more
    sorts and a copy."""
    if not sorted_reads:
        return source.index_select(0, index)
    ascending, order = index.sort()
    return source.index_select(0, ascending).index_select(0, order.argsort())


def shifted(maps: torch.Tensor, offsets: torch.Tensor, shift: int) -> torch.Tensor:
    """Each map of `maps` (N, C, H, W) moved by its row of `offsets` (N, 2; 0..2*shift, shift = not moved),
    the cells it uncovers filled with the edge's values (as replicate padding does)."""
    height, width = maps.shape[-2:]
    padded = F.pad(maps, (shift,) * 4, mode="replicate")
    out = torch.empty_like(maps)
    for dy, dx in offsets.unique(dim=0).tolist():
        pick = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
        out[pick] = padded[pick, :, dy:dy + height, dx:dx + width]
    return out


def cached_train_batches(cached: dict, batch_size: int, seed: int = 0, *, shift: int = 0,
                         split: bool = False) -> TensorBatches:
    """Training batches from cached tensors per split, mirrored half the time when "train_mirrored" is there,
    activation maps shifted by up to `shift` cells."""
    return TensorBatches(cached["train"], batch_size, mirrored=cached.get("train_mirrored"), shift=shift, seed=seed,
                         split=split)


def sharded_batches(features, batch_size: int) -> InOrder:
    """This process's contiguous shard of cached tensors, in order (a data-parallel phase's validation)."""
    part = distributed.shard(len(features.labels))
    return InOrder(features.features[part], features.labels[part], batch_size)


class ImageBatches:
    """(inputs, targets) batches from an image loader, whose batches also carry indices and failures.
    `readable` lists, after a pass, the item indices of the images it yielded (unreadable files are skipped);
    `offset` is where this process's shard starts in the split. Batches stay as the loader made them (NCHW, in
    pinned memory for a GPU): the training loop makes them channels-last on the device, after the copy.

    `lockstep` (data-parallel training under torchrun): a batch none of whose images could be read is skipped by
    every process, not only by its own (one process taking a step fewer would leave the others waiting for it in
    DistributedDataParallel's gradient exchange)."""

    def __init__(self, loader, offset: int = 0, seed: int = 0, lockstep: bool = False):
        self.loader = loader
        self.offset = offset
        self.seed = seed
        self.lockstep = lockstep
        self.readable: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        """The epoch's order, and the seed of its random augmentations: (seed, epoch, process), so epochs and
        processes differ and a resumed epoch repeats itself."""
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        if self.loader.generator is not None:
            self.loader.generator.manual_seed(hash((self.seed, epoch, distributed.rank())))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.readable = []
        for images, labels, indices, _ in self.loader:
            readable = len(images) > 0
            if self.lockstep:
                readable = distributed.all_true(readable)
            if readable:
                self.readable += (indices + self.offset).tolist()
                yield images, labels


def image_batches(items, preprocessing, config: RunConfig, *, train: bool, split: bool = False,
                  pin_memory: bool = False) -> ImageBatches:
    """Training batches (shuffled; with `split` this process's share of each global batch) or evaluation batches
    (in order; with `split` this process's shard)."""
    workers = config.worker_count
    if train:
        transform = train_transform(preprocessing, config.augment)
        batch = distributed.per_rank_batch(config.batch_size) if split else config.batch_size
        return ImageBatches(image_loader(items, transform, batch_size=batch, workers=workers, pin_memory=pin_memory,
                                         sampler=training_sampler(len(items), config.seed, split),
                                         generator=torch.Generator()), seed=config.seed, lockstep=split)
    part = distributed.shard(len(items)) if split else slice(0, len(items))
    return ImageBatches(image_loader(items[part], eval_transform(preprocessing), batch_size=FEATURE_BATCH,
                                     workers=workers, pin_memory=pin_memory), part.start)
