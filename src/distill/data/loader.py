"""Batching an in-memory data set by tensor indexing: no workers, no per-sample Python.

Everything random is a pure function of (seed, epoch[, batch]), so a run resumed at
(epoch, batch) sees exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Iterator

import torch
from torch import Tensor

from distill.core.io import select

from .datasets import ArrayDataset

Batch = dict[str, Tensor]  # {"input": (B, ...) or {name: (B, ...)}, "target": (B,) int64, "index": (B,) int64}
Augment = Callable[[Tensor, torch.Generator], Tensor]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of the integers ``parts`` (blake2b of their text)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class InMemoryLoader:
    """Batches of an in-memory data set (``ArrayDataset``, or :class:`distill.data.TensorData`: any
    shape, dict inputs, no targets): ``{"input", "target", "index"}`` dicts, ``len()`` per epoch.

    Epoch ``e`` visits the samples in ``permutation(e)`` (a ``torch.randperm`` seeded by
    ``derive_seed(seed, e)``; identity order when ``shuffle=False``). ``augment(inputs,
    generator)`` runs on each batch with a generator seeded by ``derive_seed(seed, e, b)``.
    Resume with ``epoch_batches(e, start=b)``; plain iteration walks epochs 0, 1, 2, ...

    Data parallel: with ``world_size`` W > 1, ``batch_size`` is the *global* batch; every
    process builds (and augments) the same global batch and keeps rows ``rank::W``, so the
    processes never overlap and together see exactly what one process would.
    ``len()`` counts global batches, so counters mean the same for any W.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, augment: Augment | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an int >= 1 (the number of processes), got {world_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if world_size > 1 and (batch_size % world_size or not drop_last):
            raise ValueError(
                f"with {world_size} processes the global batch_size ({batch_size}) must divide evenly "
                f"between them and drop_last must be on, so every process gets an equal share"
            )
        if drop_last and batch_size > len(dataset):
            raise ValueError(f"drop_last with batch_size {batch_size} > {len(dataset)} samples "
                             f"in {dataset.name}/{dataset.split} leaves no batch")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.augment = augment
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0  # the epoch the next plain iteration walks

    has_index = True  # batches carry "index": stable sample ids 0..N-1

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        size = len(self.dataset)
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    def __repr__(self) -> str:
        return (f"InMemoryLoader({self.dataset.name}/{self.dataset.split}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, augment={self.augment!r})")

    def permutation(self, epoch: int) -> Tensor:
        """Sample ids in epoch ``epoch``'s order: (N,) int64."""
        size = len(self.dataset)
        if not self.shuffle:
            return torch.arange(size)
        return torch.randperm(size, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start``, ``start + 1``, ... of epoch ``epoch``; identical to the tail of a full epoch."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in [0, {len(self)}] (batches per epoch), got {start}")
        return self._batches(self.permutation(epoch), epoch, start)

    def _batches(self, order: Tensor, epoch: int, start: int) -> Iterator[Batch]:
        dataset, size = self.dataset, self.batch_size
        for b in range(start, len(self)):
            ids = order[b * size:(b + 1) * size]
            inputs = select(dataset.inputs, ids)
            if self.augment is not None:
                inputs = self.augment(inputs, torch.Generator().manual_seed(derive_seed(self.seed, epoch, b)))
            batch: Batch = {"input": inputs}
            if dataset.targets is not None:
                batch["target"] = dataset.targets[ids]
            batch["index"] = ids
            if self.world_size > 1:  # this process's share of the global batch (augmented as a whole)
                share = slice(self.rank, None, self.world_size)
                batch = {key: select(value, share) for key, value in batch.items()}
            yield batch

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.epoch_batches(epoch)


def iterate_batches(dataset: ArrayDataset, batch_size: int) -> Iterator[Batch]:
    """Every sample once, in order, no augmentation (the last batch may be short): for evaluation."""
    return InMemoryLoader(dataset, batch_size, shuffle=False).epoch_batches(0)
