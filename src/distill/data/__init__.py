"""Data: in-memory data sets by name, fast tensor batching, batch augmentations, and the
teacher-output cache (``build_cache`` / ``open_cache``: top-k or dense, memory-mapped).

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
    ImageSourceError,
    build_dataset,
    default_cache_dir,
    read_idx,
)
from .loader import InMemoryLoader, derive_seed, iterate_batches  # noqa: E402
from .image_folder import UnknownParameterError, image_folder  # noqa: E402  (registers "image_folder")
from .cache import (  # noqa: E402
    CacheError,
    CacheFolderError,
    TeacherCache,
    build_cache,
    open_cache,
    weights_fingerprint,
)

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "SPLITS",
    "ArrayDataset",
    "CacheError",
    "CacheFolderError",
    "ImageSourceError",
    "InMemoryLoader",
    "UnknownParameterError",
    "image_folder",
    "RandomCropFlip",
    "RandomShift",
    "TeacherCache",
    "build_cache",
    "build_dataset",
    "default_cache_dir",
    "derive_seed",
    "iterate_batches",
    "open_cache",
    "read_idx",
    "weights_fingerprint",
]

from .sources import (  # noqa: E402
    Batch,
    BatchSource,
    DataFormatError,
    DataLoaderSource,
    MapStyleLoader,
    TensorData,
    TensorLoader,
    as_batch_source,
    describe_data,
    eval_batches,
    to_batch,
    to_example,
)
from .text import TextFileError, WordVocab, read_sentences, read_text_classification, sentence_data  # noqa: E402
from .text import text_classification, text_classification_data  # noqa: E402

DATASETS.register("text_classification", text_classification)


def causal_lm_text(split, root=None, cache_dir=None, **params):
    """Text for causal LMs (task token): :func:`distill.llm.data.causal_lm_text`, imported on use (it
    needs the token task, which needs this package)."""
    from distill.llm.data import causal_lm_text as build

    return build(split, root, cache_dir, **params)


DATASETS.register("causal_lm_text", causal_lm_text)

__all__ += [
    "Batch",
    "BatchSource",
    "DataFormatError",
    "DataLoaderSource",
    "MapStyleLoader",
    "TensorData",
    "TensorLoader",
    "TextFileError",
    "WordVocab",
    "as_batch_source",
    "describe_data",
    "eval_batches",
    "read_sentences",
    "read_text_classification",
    "sentence_data",
    "text_classification_data",
    "to_batch",
    "to_example",
]
