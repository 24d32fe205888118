"""Data: in-memory data sets by name, fast tensor batching and batch augmentations.

>>> from distill.data import build_dataset, InMemoryLoader
>>> train = build_dataset("digits", "train")            # inputs (1437, 1, 8, 8)
>>> loader = InMemoryLoader(train, 64, seed=0)
>>> batch = next(iter(loader.epoch_batches(0)))          # {"input", "target", "index"}
"""
from __future__ import annotations

from distill.registry import Registry

DATASETS = Registry("dataset")  # name -> fn(split, root=None, cache_dir=None) -> ArrayDataset
AUGMENTS = Registry("augment")  # name -> class; instances are fn(inputs, generator) -> inputs

from .augment import RandomCropFlip, RandomShift  # noqa: E402  (registries first)
from .datasets import (  # noqa: E402
    SPLITS,
    ArrayDataset,
    build_dataset,
    default_cache_dir,
    read_idx,
)
from .loader import InMemoryLoader, derive_seed, iterate_batches  # noqa: E402

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "SPLITS",
    "ArrayDataset",
    "InMemoryLoader",
    "RandomCropFlip",
    "RandomShift",
    "build_dataset",
    "default_cache_dir",
    "derive_seed",
    "iterate_batches",
    "read_idx",
]
