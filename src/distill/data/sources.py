"""Batch sources: the one batching contract, for every kind of data a user brings.

distill's loop reads batches from a *batch source*: anything with

* ``len(source)``: batches per epoch (global batches: the same number on every process);
* ``source.epoch_batches(epoch, start=0)``: batches ``start, start + 1, ...`` of epoch
  ``epoch``, identical to the tail of the full epoch (so a run resumed at (epoch, batch)
  sees what the uninterrupted run saw);
* ``source.num_samples``: samples per epoch, or ``None`` when unknown;
* ``source.has_index``: whether batches carry ``"index"`` (stable sample ids 0..N-1, which
  the teacher-output cache keys on).

A batch is a dict ``{"input": Inputs, "target": (B,) int64, "index": (B,) int64}``, where
``Inputs`` is a tensor ``(B, ...)`` or a dict of tensors sharing ``B`` (``{"input_ids": (B, L)
int64, "attention_mask": (B, L) int64}``); ``"target"`` is absent when the data has no
labels, ``"index"`` when ``has_index`` is False.

The sources, by what the user has (``as_batch_source`` picks one):

=========================================  ==================  ======================
data                                       source              order owned by distill
=========================================  ==================  ======================
``ArrayDataset``, ``TensorData``,          ``TensorLoader``    yes (seed, epoch)
a tuple ``(inputs, targets)`` / a tensor
a map-style torch ``Dataset``, a Hugging   ``MapStyleLoader``  yes (seed, epoch)
Face ``datasets.Dataset``, a list
a torch ``DataLoader``                     ``DataLoaderSource``  only for Random /
                                                               Sequential / Distributed
                                                               samplers (see there)
=========================================  ==================  ======================

:func:`to_batch` turns what a user's data yields into a batch (and raises
:class:`DataFormatError` naming what it got and what it accepts); :func:`eval_batches`
gives every sample once, in order, for evaluation; :func:`describe_data` says in words what
a data object is.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate

from distill.core.io import Inputs, batch_size_of, select

from .datasets import ArrayDataset
from .loader import Augment, InMemoryLoader, derive_seed

Batch = dict[str, Inputs]  # {"input": Tensor (B, ...) | {name: (B, ...)}, "target": (B,) int64, "index": (B,) int64}

TARGET_KEYS = ("target", "targets", "label", "labels")
# keyword arguments of Hugging Face models: a mapping holding one of these keys (and a target)
# stays a dict input; a single other key becomes the tensor input itself (see to_batch)
HF_INPUT_NAMES = frozenset({
    "input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds",
    "pixel_values", "pixel_mask", "input_values", "input_features", "bbox",
    "decoder_input_ids", "decoder_attention_mask",
})
ACCEPTED_FORMATS = (
    "a tensor (B, ...) (no target); a tuple/list (input,) or (input, target); a dict with 'input' "
    "(and optionally 'target'/'label', 'index'); a dict of tensors with one of "
    f"{'/'.join(TARGET_KEYS)} as the target and the other keys as the input (a Hugging Face "
    "BatchEncoding too); where an input is a tensor or a dict of tensors sharing the batch size and "
    "a target is (B,) integer class ids"
)


class DataFormatError(ValueError):
    """Data whose items or batches distill cannot read; the message names what came and what is accepted."""


@runtime_checkable
class BatchSource(Protocol):
    """What the training loop reads: see the module docstring for the contract."""

    num_samples: int | None
    has_index: bool

    def __len__(self) -> int: ...

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]: ...


# --------------------------------------------------------------------------- helpers
def _shape(tensor: Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _a(name: str) -> str:
    """``name`` with its indefinite article: 'a str', 'an int'."""
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _describe_value(value: Any) -> str:
    """A short description of ``value`` for error messages."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {_shape(value)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} numpy array of shape {value.shape}"
    if isinstance(value, Mapping):
        return f"{_a(_type_name(value))} with keys {list(value.keys())}"
    if isinstance(value, (tuple, list)):
        kinds = ", ".join(_type_name(item) for item in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"{_a(_type_name(value))} of {len(value)} items ({kinds})"
    if isinstance(value, (str, bytes)):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{_a(_type_name(value))} ({shown!r})"
    return _a(_type_name(value))


def _as_tensor(value: Any) -> Tensor | None:
    """``value`` as a tensor when it is one (or a numpy array); else None."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(value))
    return None


def class_ids(value: Any, rows: int | None = None, *, where: str = "the data") -> Tensor:
    """``value`` (a tensor, numpy array or list of ints) as class ids: (rows,) int64, all >= 0.

    Integer dtypes are widened to int64; a float tensor is accepted only when every value is a
    whole number (then cast); bools, fractions, negatives, a 0-d value and a 2-D one (token
    labels, one-hot rows) raise :class:`DataFormatError` naming ``where`` and the shape.
    """
    tensor = _as_tensor(value)
    if tensor is None and isinstance(value, (list, tuple)):
        if not all(isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in value):
            raise DataFormatError(f"{where}: targets must be integer class ids, got {_describe_value(value)}")
        tensor = torch.tensor([int(item) for item in value], dtype=torch.int64)
    if tensor is None:
        raise DataFormatError(f"{where}: targets must be a tensor, numpy array or list of integer class ids, "
                              f"got {_describe_value(value)}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise DataFormatError(f"{where}: targets must be integer class ids, got a {tensor.dtype} tensor")
    if tensor.is_floating_point():
        if tensor.numel() and not bool(torch.all(torch.isfinite(tensor) & (tensor == tensor.round()))):
            bad = tensor[~(torch.isfinite(tensor) & (tensor == tensor.round()))].flatten()[0].item()
            raise DataFormatError(f"{where}: targets must be integer class ids, got {tensor.dtype} values such as "
                                  f"{bad} (regression targets are not supported; class ids only)")
    if tensor.ndim != 1:
        hint = (" (squeeze the trailing 1: targets.squeeze(1))" if tensor.ndim == 2 and tensor.shape[1] == 1 else
                " (token-level labels and one-hot or soft targets are not supported; give one class id per row)"
                if tensor.ndim >= 2 else " (one class id per sample: a batch of them is (B,))")
        raise DataFormatError(f"{where}: targets must be (B,) class ids, got shape {_shape(tensor)}{hint}")
    if rows is not None and len(tensor) != rows:
        raise DataFormatError(f"{where}: {len(tensor)} targets for {rows} inputs; they must agree")
    tensor = tensor.to(torch.int64)
    if tensor.numel() and int(tensor.min()) < 0:
        raise DataFormatError(f"{where}: targets must be class ids >= 0, got {int(tensor.min())}")
    return tensor


def _check_inputs(inputs: Any, *, where: str) -> Inputs:
    """``inputs`` as a tensor (B, ...) or a dict of tensors sharing B; else DataFormatError."""
    tensor = _as_tensor(inputs)
    if tensor is not None:
        if tensor.ndim == 0:
            raise DataFormatError(f"{where}: the input is a 0-d tensor; inputs need a batch dimension (B, ...)")
        return tensor
    if isinstance(inputs, Mapping):
        if not inputs:
            raise DataFormatError(f"{where}: the input is an empty {_type_name(inputs)}; expected tensors")
        out = {}
        for key, value in inputs.items():
            if not isinstance(key, str):
                raise DataFormatError(f"{where}: input keys must be str (they become keyword arguments of the "
                                      f"model), got {key!r}")
            tensor = _as_tensor(value)
            if tensor is None:
                hint = (" (text must be tokenised first: drop text columns, e.g. datasets' "
                        "dataset.remove_columns([...]), or tokenise in a collate_fn)"
                        if isinstance(value, (str, list, tuple)) else "")
                raise DataFormatError(f"{where}: input {key!r} is {_describe_value(value)}, not a tensor; every key "
                                      f"other than the target is passed to the model{hint}")
            if tensor.ndim == 0:
                raise DataFormatError(f"{where}: input {key!r} is a 0-d tensor; inputs need a batch dimension")
            out[key] = tensor
        try:
            batch_size_of(out)
        except ValueError as exc:
            raise DataFormatError(f"{where}: {exc}") from None
        return out
    raise DataFormatError(f"{where}: an input must be a tensor or a dict of tensors, got {_describe_value(inputs)}")


# --------------------------------------------------------------------------- to_batch / to_example
def to_batch(raw: Any, *, where: str = "the data") -> Batch:
    """Normalise one collated batch from a user's data into ``{"input", "target"?, "index"?}``.

    Accepted (``B`` rows):

    * a tensor ``(B, ...)``: the input, no target;
    * a tuple or list ``(input,)`` or ``(input, target)``;
    * a mapping with ``"input"``: that is the input; a target key (below) and ``"index"`` may
      sit beside it, nothing else (a distill batch passes through unchanged);
    * a mapping (a dict, a Hugging Face ``BatchEncoding``) with at most one target key among
      ``target``, ``targets``, ``label``, ``labels``: the other keys form the input dict,
      passed to the model as keyword arguments (``input_ids``, ``attention_mask``,
      ``pixel_values``, ...). The one exception: a target plus a *single* other key that is
      not a Hugging Face input name (:data:`HF_INPUT_NAMES`), as in ``{"image": x, "label":
      y}``, gives that tensor itself as the input, so a plain ``model(x)`` works;
      ``{"pixel_values": x, "label": y}`` stays a dict. Without a target key every key is
      input (``{"x": x, "y": y}`` is a dict input with no target: name the target ``label``).

    An input is a tensor or a dict of tensors sharing ``B`` (numpy arrays are taken as tensors).
    A target is ``(B,)`` integer class ids (see :func:`class_ids`: whole-valued floats are cast,
    other floats refused). Anything else raises :class:`DataFormatError` naming ``where``, what
    came (type, keys, shapes) and the accepted formats.
    """
    if _as_tensor(raw) is not None:
        return {"input": _check_inputs(raw, where=where)}
    if isinstance(raw, (tuple, list)):
        if len(raw) not in (1, 2):
            raise DataFormatError(f"{where}: got {_describe_value(raw)}; a tuple must be (input,) or (input, target). "
                                  f"Accepted formats: {ACCEPTED_FORMATS}")
        inputs = _check_inputs(raw[0], where=where)
        batch: Batch = {"input": inputs}
        if len(raw) == 2:
            batch["target"] = class_ids(raw[1], batch_size_of(inputs), where=where)
        return batch
    if isinstance(raw, Mapping):
        keys = list(raw.keys())
        found = [key for key in TARGET_KEYS if key in raw]
        if len(found) > 1:
            raise DataFormatError(f"{where}: keys {found} are all target names; give exactly one of "
                                  f"{'/'.join(TARGET_KEYS)} (keys received: {keys})")
        if "input" in raw:
            extra = [key for key in keys if key not in ("input", "index", *found)]
            if extra:
                raise DataFormatError(f"{where}: a mapping with 'input' may hold only a target ({'/'.join(TARGET_KEYS)}) "
                                      f"and 'index' beside it, got also {extra}; put model inputs inside 'input' "
                                      "(a dict of tensors)")
            inputs = _check_inputs(raw["input"], where=where)
            rows = batch_size_of(inputs)
            batch = {"input": inputs}
            if found:
                batch["target"] = class_ids(raw[found[0]], rows, where=where)
            if "index" in raw:
                batch["index"] = class_ids(raw["index"], rows, where=f"{where} ('index')")
            return batch
        rest = [key for key in keys if key not in found]
        if not rest:
            raise DataFormatError(f"{where}: a mapping with only a target ({keys}) and no input; "
                                  f"accepted formats: {ACCEPTED_FORMATS}")
        if len(rest) == 1 and found and rest[0] not in HF_INPUT_NAMES:
            inputs = _check_inputs({rest[0]: raw[rest[0]]}, where=where)[rest[0]]
        else:
            inputs = _check_inputs({key: raw[key] for key in rest}, where=where)
        batch = {"input": inputs}
        if found:
            batch["target"] = class_ids(raw[found[0]], batch_size_of(inputs), where=f"{where} (key {found[0]!r})")
        return batch
    raise DataFormatError(f"{where}: got {_describe_value(raw)}; accepted formats: {ACCEPTED_FORMATS}")


def _field(value: Any) -> Any:
    """One field of a sample, ready for ``default_collate``: numeric lists and arrays become tensors."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)) if value.dtype.kind in "biuf" else value
    if isinstance(value, (list, tuple)) and value and _numeric_nest(value):
        return torch.tensor(value)  # ints -> int64, floats -> float32
    return value  # numbers (collated to tensors), strings (left for a collate_fn; to_batch refuses them)


def _numeric_nest(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_numeric_nest(item) for item in value)
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def to_example(item: Any, *, where: str = "an item") -> Any:
    """One sample of a map-style data set, ready for ``default_collate``.

    A tensor stays; a numpy array becomes a tensor; a tuple/list is read as fields ``(input,
    target)`` and a mapping as named fields, each field converted: numeric lists (Hugging Face
    ``input_ids``) and arrays become tensors, numbers stay (collated to tensors), strings stay
    (for a ``collate_fn`` that tokenises; :func:`to_batch` refuses them later). A top-level
    string, bytes, None or any other object raises :class:`DataFormatError` naming ``where``.
    """
    if isinstance(item, Tensor):
        return item
    if isinstance(item, np.ndarray) and item.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(item))
    if isinstance(item, Mapping):
        return {key: _field(value) for key, value in item.items()}
    if isinstance(item, (tuple, list)):
        fields = [_field(value) for value in item]
        return fields if isinstance(item, list) else tuple(fields)
    hint = (" (text must be tokenised first: see distill.data.text, or return {'text': ...} and tokenise in a "
            "collate_fn)" if isinstance(item, (str, bytes)) else
            " (convert images to tensors in the data set, e.g. with a transform)" if _type_name(item).endswith("Image")
            else "")
    raise DataFormatError(f"{where} is {_describe_value(item)}{hint}; a sample must be a tensor, a tuple (input, "
                          "target) or a dict of fields")


# --------------------------------------------------------------------------- TensorData / TensorLoader
def _balanced_choice(targets: Tensor, num_classes: int, num_samples: int, seed: int) -> Tensor:
    """Sorted row ids of ``num_samples`` rows, class-balanced round-robin (as ArrayDataset.subset)."""
    size = len(targets)
    perm = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    shuffled = targets[perm]
    order = torch.argsort(shuffled, stable=True)  # grouped by class, random within a class
    counts = torch.bincount(shuffled, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(size) - starts[shuffled[order]]  # rank of perm[i] within its class
    return perm[torch.argsort(rank * size + torch.arange(size))[:num_samples]].sort().values


class TensorData:
    """A data set held as tensors: ``inputs`` (N, ...) or a dict of (N, ...) tensors, ``targets`` (N,) int64.

    Like :class:`ArrayDataset` but for any per-sample shape and dtype (features (N, D), token
    ids (N, L) int64, images (N, C, H, W)), dict inputs (``{"input_ids": (N, L),
    "attention_mask": (N, L)}``) and unlabelled data (``targets=None``). Sample ids are row
    numbers 0..N-1; ``classes[k]`` names target ``k`` when given.

    Numpy arrays are taken as tensors; targets go through :func:`class_ids` (integer dtypes
    widened to int64, whole-valued floats cast, anything else refused). Mismatched lengths,
    0-d inputs and targets outside ``classes`` raise ValueError naming the sizes.
    """

    def __init__(self, inputs: Inputs | np.ndarray, targets: Tensor | np.ndarray | None = None, *,
                 name: str = "tensors", classes: Sequence[str] | None = None, split: str = "train") -> None:
        where = f"TensorData {name!r}"
        if isinstance(inputs, Mapping):
            if not inputs:
                raise ValueError(f"{where}: inputs is an empty mapping; give at least one tensor")
            converted = {}
            for key, value in inputs.items():
                tensor = _as_tensor(value)
                if not isinstance(key, str) or tensor is None or tensor.ndim == 0:
                    raise ValueError(f"{where}: input {key!r} must be a str key of an (N, ...) tensor, "
                                     f"got {_describe_value(value)}")
                converted[key] = tensor
            sizes = {key: len(value) for key, value in converted.items()}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"{where}: the input tensors disagree on the number of samples: {sizes}")
            inputs, size = converted, next(iter(sizes.values()))
        else:
            tensor = _as_tensor(inputs)
            if tensor is None or tensor.ndim == 0:
                raise ValueError(f"{where}: inputs must be an (N, ...) tensor or a dict of them, "
                                 f"got {_describe_value(inputs)}")
            inputs, size = tensor, len(tensor)
        if targets is not None:
            targets = class_ids(targets, where=f"{where} targets")  # a DataFormatError is a ValueError
            if len(targets) != size:
                raise ValueError(f"{where}: {len(targets)} targets for {size} inputs; they must agree (one per sample)")
        if classes is not None:
            classes = [str(c) for c in classes]
            if targets is not None and len(targets) and int(targets.max()) >= len(classes):
                raise ValueError(f"{where}: targets must lie in [0, {len(classes)}) (one per class name), "
                                 f"got a target {int(targets.max())}")
        self.inputs = inputs
        self.targets = targets
        self.classes = classes
        self.name = name
        self.split = split
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return batch_size_of(self.inputs)

    def __repr__(self) -> str:
        return f"TensorData({self.name!r}, {len(self)} samples, inputs {self.input_shape}, classes={self.num_classes})"

    @property
    def input_shape(self) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
        """Per-sample shape: ``inputs.shape[1:]``, or ``{name: shape[1:]}`` for dict inputs."""
        if isinstance(self.inputs, Mapping):
            return {key: _shape(value)[1:] for key, value in self.inputs.items()}
        return _shape(self.inputs)[1:]

    @property
    def num_classes(self) -> int | None:
        """``len(classes)`` when given, else ``targets.max() + 1``; None without either."""
        if self.classes is not None:
            return len(self.classes)
        if self.targets is None or not len(self.targets):
            return None
        return int(self.targets.max()) + 1

    def fingerprint(self) -> str:
        """16 hex digits of sha256 over name, split, classes, and every tensor's key, dtype, shape and bytes."""
        if self._fingerprint is None:
            digest = hashlib.sha256(f"{self.name}|{self.split}|{'|'.join(self.classes or [])}".encode())
            parts = sorted(self.inputs.items()) if isinstance(self.inputs, Mapping) else [("", self.inputs)]
            if self.targets is not None:
                parts.append(("\0targets", self.targets))
            for key, tensor in parts:
                digest.update(f"{key}|{tensor.dtype}|{_shape(tensor)}".encode())
                flat = tensor.detach().cpu().contiguous().view(-1)
                digest.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def subset(self, num_samples: int, seed: int = 0) -> "TensorData":
        """``num_samples`` rows chosen by ``seed`` (class-balanced when there are targets, as
        ``ArrayDataset.subset``), in their original order. Deterministic in (data, n, seed)."""
        size = len(self)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 0 < num_samples <= size:
            raise ValueError(f"subset size must be an int in [1, {size}] for TensorData {self.name!r}, got {num_samples!r}")
        if self.targets is not None:
            chosen = _balanced_choice(self.targets, self.num_classes, num_samples, seed)
        else:
            chosen = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:num_samples].sort().values
        return TensorData(select(self.inputs, chosen), None if self.targets is None else self.targets[chosen],
                          name=self.name, classes=self.classes, split=self.split)


class TensorLoader(InMemoryLoader):
    """:class:`InMemoryLoader` for :class:`TensorData` (any shape, dict inputs, no targets) and ArrayDataset.

    The order, ``drop_last``, ``start``, the seeded ``augment`` and the ``rank``/``world_size``
    sharding of the global batch are InMemoryLoader's own (inherited); only the row selection
    is generalised through :func:`distill.core.io.select`, so batches of an ArrayDataset are
    identical to InMemoryLoader's. ``augment(inputs, generator)`` needs tensor inputs.
    Batches: ``{"input": (B, ...) | {name: (B, ...)}, "target": (B,) int64 (when the data has
    targets), "index": (B,) int64}``.
    """

    def __init__(self, dataset: TensorData | ArrayDataset, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, augment: Augment | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        if not isinstance(dataset, (TensorData, ArrayDataset)):
            raise TypeError(f"TensorLoader takes a TensorData or ArrayDataset, got {describe_data(dataset)} "
                            "(as_batch_source picks the right source for other data)")
        if augment is not None and isinstance(dataset.inputs, Mapping):
            raise ValueError(f"augment= works on tensor inputs, but {dataset.name!r} has dict inputs "
                             f"{sorted(dataset.inputs)}; augment inside the model or give tensor inputs")
        super().__init__(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, augment=augment,
                         rank=rank, world_size=world_size)

    def __repr__(self) -> str:
        return (f"TensorLoader({self.dataset.name}/{self.dataset.split}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, augment={self.augment!r})")



# --------------------------------------------------------------------------- map-style data sets
def _hf_module():
    """The Hugging Face ``datasets`` module when already imported (a user's HF data set implies it), else None."""
    return sys.modules.get("datasets")


def is_hf_dataset(data: Any) -> bool:
    module = _hf_module()
    return module is not None and isinstance(data, getattr(module, "Dataset", ()))


def _is_iterable_style(data: Any) -> bool:
    module = _hf_module()
    if isinstance(data, torch.utils.data.IterableDataset):
        return True
    if module is not None and isinstance(data, getattr(module, "IterableDataset", ())):
        return True
    return hasattr(data, "__iter__") and not hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, Mapping))


def _is_map_style(data: Any) -> bool:
    return (hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, Mapping))
            and not _is_iterable_style(data))


class _Collate:
    """``collate(items)``: :func:`to_example` on each item, then ``collate_fn`` (picklable, for workers)."""

    def __init__(self, collate_fn: Callable[[list], Any] | None, where: str) -> None:
        self.collate_fn = collate_fn
        self.where = where

    def __call__(self, items: list, ids: Sequence[int] | None = None) -> Any:
        names = [f"item {i}" for i in ids] if ids is not None else ["an item"] * len(items)
        examples = [to_example(item, where=f"{name} of {self.where}") for item, name in zip(items, names)]
        if self.collate_fn is not None:
            return self.collate_fn(examples)
        try:
            return default_collate(examples)
        except (RuntimeError, TypeError) as exc:
            ragged = isinstance(exc, RuntimeError) and ("equal size" in str(exc) or "same size" in str(exc))
            hint = (" Items of different lengths (token ids not padded) need padding: pad when tokenising "
                    "(padding='max_length') or pass a collate_fn that pads (e.g. transformers.DataCollatorWithPadding)."
                    if ragged else " Pass a collate_fn that builds the batch.")
            raise DataFormatError(f"cannot stack {len(items)} items of {self.where} into a batch ({exc}).{hint} "
                                  f"The first, {names[0]}, was {_describe_value(items[0])}") from exc


class MapStyleLoader:
    """Batches of a map-style data set (``__len__`` + ``__getitem__``): a torch ``Dataset``, a
    Hugging Face ``datasets.Dataset``, a list of samples.

    The order is InMemoryLoader's: epoch ``e`` visits ``randperm(N)`` seeded by
    ``derive_seed(seed, e)`` (identity without shuffle), with the same ``drop_last`` and
    ``rank``/``world_size`` rules; each process fetches only its rows ``rank::W`` of the global
    batch, and ``epoch_batches(e, start=b)`` fetches nothing for the skipped batches. Items
    (``dataset.__getitems__(ids)`` where the data set has it, as HF datasets do, else
    ``dataset[i]``) go through :func:`to_example`, then ``collate_fn`` (default
    ``torch.utils.data.default_collate``), then :func:`to_batch`; ``"index"`` is the sample ids.

    ``num_workers > 0`` fetches and collates in a torch ``DataLoader`` whose ``batch_sampler``
    is this epoch's precomputed batches, so the order is the same as with 0 workers; its
    generator is seeded by ``(seed, epoch)``. Random transforms inside the data set's
    ``__getitem__`` use torch's global (or per-worker) RNG, so they are not resume-exact: use
    ``augment=`` on in-memory data for that.
    """

    has_index = True

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool = True, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1,
                 collate_fn: Callable[[list], Any] | None = None, num_workers: int = 0) -> None:
        if not _is_map_style(dataset):
            raise TypeError(f"MapStyleLoader needs a map-style data set (with __len__ and __getitem__), got "
                            f"{describe_data(dataset)}" + (": wrap an iterable data set in a torch DataLoader"
                                                           if _is_iterable_style(dataset) else ""))
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"collate_fn must be callable (items -> batch), got {_describe_value(collate_fn)}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.collate_fn = collate_fn
        self.num_workers = num_workers
        self.epoch = 0  # the epoch the next plain iteration walks
        # the order and its checks are InMemoryLoader's, over the sample ids alone
        self._plan = TensorLoader(TensorData(torch.arange(len(dataset)), name=_type_name(dataset), split="map-style"),
                                  batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank,
                                  world_size=world_size)
        self._collate = _Collate(collate_fn, describe_data(dataset))

    def __len__(self) -> int:
        return len(self._plan)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return (f"MapStyleLoader({describe_data(self.dataset)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}, num_workers={self.num_workers})")

    def permutation(self, epoch: int) -> Tensor:
        """Sample ids in epoch ``epoch``'s order: (N,) int64 (InMemoryLoader's permutation)."""
        return self._plan.permutation(epoch)

    def _fetch(self, ids: list[int]) -> list:
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            return list(getitems(ids))
        return [self.dataset[i] for i in ids]

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start``, ``start + 1``, ... of epoch ``epoch``; identical to the tail of a full epoch."""
        plan = self._plan.epoch_batches(epoch, start)  # checks start now
        return self._batches(plan, epoch, start)

    def _batches(self, plan: Iterator[Batch], epoch: int, start: int) -> Iterator[Batch]:
        where = describe_data(self.dataset)
        if self.num_workers == 0:
            for b, planned in enumerate(plan, start):
                ids = planned["index"]
                ids_list = ids.tolist()
                batch = to_batch(self._collate(self._fetch(ids_list), ids_list), where=f"batch {b} of {where}")
                yield self._with_index(batch, ids, b, where)
            return
        planned = list(plan)
        loader = DataLoader(self.dataset, batch_sampler=[p["index"].tolist() for p in planned],
                            collate_fn=self._collate, num_workers=self.num_workers,
                            generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
        for b, (raw, p) in enumerate(zip(loader, planned), start):
            yield self._with_index(to_batch(raw, where=f"batch {b} of {where}"), p["index"], b, where)

    @staticmethod
    def _with_index(batch: Batch, ids: Tensor, b: int, where: str) -> Batch:
        rows = batch_size_of(batch["input"])
        if rows != len(ids):
            raise DataFormatError(f"batch {b} of {where}: the collated batch has {rows} rows for {len(ids)} items; "
                                  "a collate_fn must keep one row per item")
        batch["index"] = ids
        return batch

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.epoch_batches(epoch)


# --------------------------------------------------------------------------- a user's DataLoader
def _order_sampler(loader: DataLoader) -> Any:
    """The sampler that decides the order: the BatchSampler's sampler, else ``loader.sampler``."""
    batch_sampler = loader.batch_sampler
    if isinstance(batch_sampler, torch.utils.data.BatchSampler):
        return batch_sampler.sampler
    return batch_sampler if batch_sampler is not None else loader.sampler


class DataLoaderSource:
    """A user's torch ``DataLoader``, whose order distill does not own, as a batch source.

    ``len()`` is ``len(loader)`` (a loader without a length is refused). ``epoch_batches(e,
    start)`` makes the order reproducible where it can: a ``RandomSampler`` is given a fresh
    generator seeded with ``derive_seed(seed, e)`` (so the order does not depend on the
    loader's ``generator=``; that one, when set, is re-seeded with ``derive_seed(seed, e, 1)``
    for the workers' seeds), a ``DistributedSampler`` gets ``set_epoch(e)`` (its order then
    follows its own ``seed``), a ``SequentialSampler`` is fixed. The user's sampler and
    generator are changed in place. ``start`` batches are skipped by iterating them (they are
    loaded, then dropped). Each batch goes through :func:`to_batch`; batches carry no
    ``"index"`` (``has_index`` is False: the teacher cache needs stable sample ids, so give
    distill the data set itself for that).

    Exact resume needs a reproducible order: ``reproducible`` is True only for the samplers
    above over a map-style data set. With an iterable data set or a custom sampler, a resumed
    epoch may see other batches. Random transforms in the data set are reproducible per epoch
    only if they draw from the loader's generator-seeded worker seeds.
    """

    has_index = False

    def __init__(self, loader: DataLoader, *, seed: int = 0) -> None:
        if not isinstance(loader, DataLoader):
            raise TypeError(f"DataLoaderSource wraps a torch DataLoader, got {describe_data(loader)}")
        try:
            len(loader)
        except TypeError:
            raise ValueError(f"{describe_data(loader)} has no length (an iterable data set without __len__): distill "
                             "needs the number of batches per epoch; give the data set a __len__ or pass a map-style "
                             "data set") from None
        self.loader = loader
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int | None:
        try:
            return len(self.loader.dataset)
        except TypeError:
            return None

    @property
    def reproducible(self) -> bool:
        """Whether ``epoch_batches(e, ...)`` gives the same batches for the same ``(seed, e)``."""
        sampler = _order_sampler(self.loader)
        known = (torch.utils.data.RandomSampler, torch.utils.data.SequentialSampler,
                 torch.utils.data.DistributedSampler)
        return (not _is_iterable_style(self.loader.dataset) and isinstance(sampler, known)
                and (self.loader.batch_sampler is None
                     or type(self.loader.batch_sampler) is torch.utils.data.BatchSampler))

    def __repr__(self) -> str:
        return f"DataLoaderSource({describe_data(self.loader)}, seed={self.seed})"

    def _seed_order(self, epoch: int) -> None:
        sampler = _order_sampler(self.loader)
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)
        elif isinstance(sampler, torch.utils.data.RandomSampler):  # its own generator, apart from the loader's
            sampler.generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        if self.loader.generator is not None:  # the workers' base seed
            self.loader.generator.manual_seed(derive_seed(self.seed, epoch, 1))

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start``, ``start + 1``, ... of epoch ``epoch`` (the first ``start`` are loaded and dropped)."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in [0, {len(self)}] (batches per epoch), got {start}")
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[Batch]:
        self._seed_order(epoch)
        where = describe_data(self.loader)
        for b, raw in enumerate(self.loader):
            if b < start:
                continue
            batch = to_batch(raw, where=f"batch {b} of {where}")
            batch.pop("index", None)  # has_index is False: a user's ids are not distill's stable sample ids
            yield batch

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.epoch_batches(epoch)


# --------------------------------------------------------------------------- dispatch
def _tensor_pair(data: tuple, **names: Any) -> TensorData:
    if len(data) not in (1, 2):
        raise DataFormatError(f"a tuple of data must be (inputs,) or (inputs, targets), got {_describe_value(data)}")
    return TensorData(*data, **names)


def as_batch_source(data: Any, *, batch_size: int, shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                    rank: int = 0, world_size: int = 1, augment: Augment | None = None,
                    collate_fn: Callable[[list], Any] | None = None) -> BatchSource:
    """The batch source for ``data``:

    * an ``ArrayDataset`` or ``TensorData``: :class:`TensorLoader` (an :class:`InMemoryLoader`);
    * a tuple ``(inputs, targets)`` or ``(inputs,)`` of tensors / numpy arrays (inputs may be a
      dict of them), or a tensor alone: wrapped in a ``TensorData``, then :class:`TensorLoader`;
    * a torch ``DataLoader``: :class:`DataLoaderSource`. The loader keeps its own batch size,
      shuffling and ``drop_last`` (``batch_size``/``shuffle``/``drop_last`` here are ignored);
      ``augment``, ``collate_fn`` or ``world_size > 1`` are refused (put them in the loader:
      its dataset, its ``collate_fn``, a ``DistributedSampler``);
    * a Hugging Face ``datasets.Dataset``, a map-style torch ``Dataset`` or a list of samples:
      :class:`MapStyleLoader` (``augment`` is refused: augment in the data set);
    * a batch source (anything with ``epoch_batches``, ``num_samples`` and ``has_index``) is
      returned as it is; a bare ``InMemoryLoader`` becomes the equal ``TensorLoader``.

    An iterable-style data set, a ``DatasetDict`` or anything else raises
    :class:`DataFormatError` saying what to pass instead.
    """
    batching = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank,
                    world_size=world_size)
    if isinstance(data, BatchSource):
        return data
    if isinstance(data, InMemoryLoader):
        return TensorLoader(data.dataset, data.batch_size, shuffle=data.shuffle, drop_last=data.drop_last,
                            seed=data.seed, augment=data.augment, rank=data.rank, world_size=data.world_size)
    if isinstance(data, (TensorData, ArrayDataset)) or isinstance(data, (tuple, Tensor, np.ndarray)):
        if collate_fn is not None:
            raise ValueError(f"collate_fn is for map-style data sets; {describe_data(data)} is batched by tensor "
                             "indexing (leave collate_fn unset)")
        if isinstance(data, tuple):
            data = _tensor_pair(data)
        elif not isinstance(data, (TensorData, ArrayDataset)):
            data = TensorData(data)
        return TensorLoader(data, augment=augment, **batching)
    if isinstance(data, DataLoader):
        refused = [name for name, value in (("augment", augment), ("collate_fn", collate_fn)) if value is not None]
        if world_size != 1 or rank != 0:
            refused.append("rank/world_size")
        if refused:
            raise ValueError(f"{', '.join(refused)} cannot apply to {describe_data(data)}: distill iterates a "
                             "DataLoader as it is; augment in its dataset, collate in its collate_fn, shard with a "
                             "DistributedSampler, or pass the data set itself")
        return DataLoaderSource(data, seed=seed)
    if isinstance(data, Mapping):
        hint = (f"pass one split, e.g. data[{next(iter(data))!r}]" if data and _type_name(data).endswith("DatasetDict")
                else "pass TensorData(inputs, targets) or a tuple (inputs, targets); inputs may be a dict")
        raise DataFormatError(f"{describe_data(data)} is not a data set: {hint}")
    if _is_iterable_style(data):
        raise DataFormatError(f"{describe_data(data)} is an iterable-style data set (no random access, no known "
                              "length): wrap it in a torch DataLoader (DataLoader(data, batch_size=...)) and pass "
                              "that; its order is then its own")
    if _is_map_style(data):
        if augment is not None:
            raise ValueError(f"augment= works on in-memory tensors (TensorData, ArrayDataset); for "
                             f"{describe_data(data)} augment inside its __getitem__ (or a collate_fn)")
        return MapStyleLoader(data, collate_fn=collate_fn, **batching)
    raise DataFormatError(f"cannot batch {describe_data(data)}: distill takes an ArrayDataset, a TensorData, a tuple "
                          "(inputs, targets) of tensors, a torch DataLoader, a map-style torch Dataset or a Hugging "
                          "Face datasets.Dataset")


def eval_batches(data: Any, batch_size: int) -> Iterator[Batch]:
    """Every sample once, in order (no shuffle, no drop, no augmentation): for evaluation.

    Takes what :func:`as_batch_source` takes. A torch ``DataLoader`` is iterated as it is
    (its own batch size and order, so a shuffling loader gives its samples in its order); one
    with ``drop_last=True`` is refused, since it would skip samples. A loader built by distill
    (TensorLoader / InMemoryLoader / MapStyleLoader) is evaluated over its data set.
    """
    if isinstance(data, DataLoaderSource):
        data = data.loader
    if isinstance(data, DataLoader):
        if data.drop_last:
            raise ValueError(f"{describe_data(data)} has drop_last=True, so evaluating through it would skip samples; "
                             "pass a DataLoader with drop_last=False, or the data set itself")
        source = DataLoaderSource(data)
        return source.epoch_batches(0)
    if isinstance(data, MapStyleLoader):
        return MapStyleLoader(data.dataset, batch_size, shuffle=False, collate_fn=data.collate_fn).epoch_batches(0)
    if isinstance(data, InMemoryLoader):
        data = data.dataset
    return as_batch_source(data, batch_size=batch_size, shuffle=False, drop_last=False).epoch_batches(0)


# --------------------------------------------------------------------------- describe
def _shape_text(shape: Any) -> str:
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{key}: {tuple(value)}" for key, value in shape.items()) + "}"
    return str(tuple(shape))


def describe_data(data: Any) -> str:
    """One line saying what ``data`` is, for reports and errors.

    >>> describe_data(TensorData(torch.zeros(1000, 3, 32, 32), name="x"))
    "TensorData 'x' of 1,000 samples, inputs (3, 32, 32)"
    """
    if isinstance(data, TensorData):
        text = f"TensorData {data.name!r} of {len(data):,} samples, inputs {_shape_text(data.input_shape)}"
        if data.targets is None:
            return text + ", no targets"
        return text + (f", {data.num_classes} classes" if data.classes is not None else "")
    if isinstance(data, ArrayDataset):
        return (f"ArrayDataset '{data.name}/{data.split}' of {len(data):,} samples, inputs "
                f"{_shape_text(data.input_shape)}, {data.num_classes} classes")
    if isinstance(data, (TensorLoader, InMemoryLoader)):
        return f"{_type_name(data)} over {describe_data(data.dataset)} (batch {data.batch_size})"
    if isinstance(data, MapStyleLoader):
        return f"MapStyleLoader over {describe_data(data.dataset)} (batch {data.batch_size})"
    if isinstance(data, DataLoaderSource):
        return describe_data(data.loader)
    if isinstance(data, DataLoader):
        try:
            size = f"{len(data.dataset):,} samples"
        except TypeError:
            size = "length unknown"
        batch = data.batch_size if data.batch_size is not None else "set by its batch_sampler"
        return f"DataLoader over {_type_name(data.dataset)} ({size}, batch {batch})"
    if is_hf_dataset(data):
        return f"Hugging Face Dataset of {len(data):,} rows (columns {', '.join(data.column_names)})"
    if isinstance(data, tuple):
        parts = ", ".join(("inputs " if i == 0 else "targets ") + _describe_value(item) for i, item in enumerate(data[:2]))
        return f"a tuple of {len(data)} ({parts})" if len(data) <= 2 else f"a tuple of {len(data)} items"
    if isinstance(data, (Tensor, np.ndarray)):
        return _describe_value(data)
    if isinstance(data, Mapping):
        return f"{_a(_type_name(data))} with keys {list(data.keys())[:8]}"
    if _is_iterable_style(data):
        return f"{_type_name(data)} (iterable-style)"
    if _is_map_style(data):
        try:
            return f"{_type_name(data)} (map-style, {len(data):,} samples)"
        except TypeError:
            return f"{_type_name(data)} (map-style)"
    return _describe_value(data)


__all__ = [
    "ACCEPTED_FORMATS",
    "Batch",
    "BatchSource",
    "DataFormatError",
    "DataLoaderSource",
    "HF_INPUT_NAMES",
    "MapStyleLoader",
    "TARGET_KEYS",
    "TensorData",
    "TensorLoader",
    "as_batch_source",
    "class_ids",
    "describe_data",
    "eval_batches",
    "is_hf_dataset",
    "to_batch",
    "to_example",
]
