"""``image_folder``: any folder or tar of class sub-folders, any image size, resized to one size.

The generalisation of the CIFAR-10 loader (:mod:`distill.data.datasets`): the same layout
rules and safety checks (it reuses ``_image_source``, ``_folder_images``, ``_tar_entries``
and their ``_check_member``, ``_source_key``, ``_read_cache`` / ``_write_cache``), but images
may have any size and mode and are converted and resized while they are decoded.

Layouts (``layout="auto"`` picks the first that fits):

* ``"splits"``: ``root/<split>/<class>/<image>``, or ``root/<split>.tar.gz`` / ``<split>.tar``
  whose members are ``<top>/<class>/<image>`` (``train/cat/0001.jpg``).
* ``"single"``: ``root/<class>/<image>`` with no ``train`` / ``test`` source in ``root``, or
  ``root`` itself a ``.tar`` / ``.tar.gz`` / ``.tgz`` of ``<top>/<class>/<image>``. Both
  splits come from it by a deterministic stratified hold-out: in each class the
  ``floor(n * test_fraction + 0.5)`` images (halves round up; at least 1, at most n - 1) whose
  ``sha256("<split_seed>|<class>/<file>")`` is smallest are the test split. An image's place
  depends only on its own name, the seed and its class's size, never on file order or on the
  other classes. Every class needs at least 2 images.

Decoding (each image once; the result is cached): EXIF orientation applied; 16-bit greyscale
scaled to 8 bits; any other mode (L, RGBA, P, CMYK, ...) converted by PIL to RGB (alpha is
dropped, as ``torchvision``'s loader does), then for ``channels=1`` to L (ITU-R 601-2 luma);
then resized with ``Image.Resampling.BILINEAR`` to ``size`` (height, width) by ``resize``:

* ``"squash"``: stretch to the size, ignoring the aspect ratio;
* ``"center_crop"``: scale so the image covers the size, keep the centre (one resampling,
  of the centre box, so nothing is rounded twice);
* ``"pad"``: scale so the image fits inside, centre it on black (pixel value 0 before
  normalisation, so ``-mean / std`` after it).

Normalisation: ``(x / 255 - mean) / std`` per channel. With ``mean=std=None`` (the default)
they are the per-channel mean and standard deviation (population) of the *training* split's
decoded pixels, padding included, computed once and stored beside the cache, so the test
split is normalised with the training split's statistics (and so needs the training split).
Pass ``mean=0.5, std=0.5`` (or any numbers, one per channel or one for all) for fixed values,
``mean=0, std=1`` for raw [0, 1] pixels.

Cache: ``<cache_dir>/image_folder-<source>-<key>-<H>x<W>-<resize>-<rgb|grey>-v<N>.npz``
(uint8 (N, H, W, C), labels, classes, as the CIFAR-10 loader writes it) plus a ``.json`` beside
it (the row's files, the classes and the training statistics). ``key`` hashes the source's
full contents (:func:`~distill.data.datasets._source_key`), so an edited image is decoded afresh.
A test split with fixed ``mean``/``std`` reads only the training split's class names (remembered
in ``image_folder-train-<key>-classes-v<N>.json``), never decoding it.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import os
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import torch

from distill.registry import closest

from . import DATASETS
from .datasets import (
    IMAGE_LAYOUT,
    IMAGE_SUFFIXES,
    SPLITS,
    ArrayDataset,
    ImageSourceError,
    _check_split,
    _folder_images,
    _image_source,
    _normalise,
    _read_cache,
    _source_key,
    _tar_entries,
    _write_cache,
    default_cache_dir,
)

NAME = "image_folder"
RESIZE_MODES = ("squash", "center_crop", "pad")
LAYOUTS = ("auto", "splits", "single")
CHANNELS = (1, 3)
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
DECODER_VERSION = 1  # bump when decoding, resizing or the .json beside the cache change
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PROGRESS_MIN_IMAGES = 100  # no progress bar for fewer images than this
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # PNG 16-bit greyscale opens as one of these


class UnknownParameterError(TypeError, ValueError):
    """A keyword parameter that ``image_folder`` does not take (message names the closest valid one).

    Both a TypeError (what Python raises for a bad keyword) and a ValueError (what the CLI
    reports as a user error).
    """


@dataclass(frozen=True)
class _Geometry:
    """What decoding turns every image into: (height, width), resize mode, channels."""

    height: int
    width: int
    resize: str
    channels: int

    @property
    def tag(self) -> str:
        return f"{self.height}x{self.width}-{self.resize}-{'grey' if self.channels == 1 else 'rgb'}-v{DECODER_VERSION}"


@dataclass
class _Decoded:
    """A decoded source: uint8 (N, H, W, C), int64 labels (N,), classes, ``<class>/<file>`` per row."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    files: list[str]
    stats: dict  # tag -> {"mean": [...], "std": [...]}, filled lazily
    cache_path: Path


# --------------------------------------------------------------------------- the loader
def image_folder(split: str, root: str | Path | None = None, cache_dir: str | Path | None = None, *,
                 size: int | Sequence[int] = 32, resize: str = "squash", channels: int = 3,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                 layout: str = "auto", test_fraction: float | None = None, split_seed: int | None = None,
                 **unknown) -> ArrayDataset:
    """A folder or tar of ``<class>/<image>`` images as one split: inputs (N, C, H, W) float32.

    Args:
        split: ``"train"`` or ``"test"``.
        root: the folder holding ``train/`` and ``test/`` (or ``train.tar.gz`` ...), or a folder
            (or tar) of class folders for the single-folder layout (see the module docstring).
        cache_dir: where decoded arrays are cached (default ``default_cache_dir()``).
        size: output ``H = W = size``, or ``(height, width)``; positive integers.
        resize: ``"squash"``, ``"center_crop"`` or ``"pad"``.
        channels: 3 (RGB) or 1 (greyscale).
        mean, std: per-channel normalisation (a number or one per channel); both None: the
            training split's statistics.
        layout: ``"auto"``, ``"splits"`` or ``"single"``.
        test_fraction: single-folder layout only: the held-out share of each class (default 0.2).
        split_seed: single-folder layout only: which images are held out (default 0).

    Returns:
        ArrayDataset: inputs (N, channels, H, W) float32, targets (N,) int64 indexing ``classes``
        (folder names, sorted; the same for both splits), rows sorted by (class, file name).

    Raises:
        FileNotFoundError: root or a split is missing (names it and the expected layout).
        ImageSourceError: an unsafe entry, a broken layout, no images, a class folder without
            images, an undecodable image (each named).
        ValueError: a bad parameter value, or test classes that differ from train's.
        UnknownParameterError: a parameter this loader does not take (names the closest).
    """
    if unknown:
        _reject_unknown(unknown)
    _check_split(NAME, split)
    geometry = _Geometry(*_check_size(size), _check_choice("resize", resize, RESIZE_MODES),
                         _check_channels(channels))
    fixed = _check_normalisation(mean, std, channels)
    _check_choice("layout", layout, LAYOUTS)
    root = _check_root(root)
    chosen = _choose_layout(root, split, layout)

    if chosen == "single":
        fraction, seed = _check_holdout(test_fraction, split_seed)
        decoded = _load(root, geometry, cache_dir)
        train_rows, test_rows = _holdout(decoded, fraction, seed)
        rows = train_rows if split == "train" else test_rows
        if fixed is None:
            fixed = _train_stats(decoded, f"holdout-train:{fraction!r}:{seed}", train_rows)
        images, labels, classes = decoded.images[rows], decoded.labels[rows], decoded.classes
    else:
        for given, param in ((test_fraction, "test_fraction"), (split_seed, "split_seed")):
            if given is not None:
                raise ValueError(f"{NAME}: {param}= applies only to the single-folder layout (root/<class>/<image>), "
                                 f"but {root} holds {'/'.join(SPLITS)} split sources; remove {param}= or pass "
                                 "layout='single' if root's sub-folders are the classes")
        source = _image_source(NAME, root, split)
        decoded = _load_hinting(root, source, geometry, cache_dir, layout)
        images, labels, classes = decoded.images, decoded.labels, decoded.classes
        if split == "train":
            if fixed is None:
                fixed = _train_stats(decoded, "train", None)
        else:
            train_classes, train_stats = _train_info(root, geometry, cache_dir, need_stats=fixed is None)
            _check_same_classes(decoded, train_classes, root)
            if fixed is None:
                fixed = train_stats
    inputs = _normalise(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous(), *fixed)
    return ArrayDataset(inputs, torch.from_numpy(labels.astype(np.int64)), list(classes), NAME, split)


DATASETS.register(NAME, image_folder)

_PARAMETERS = [name for name, p in inspect.signature(image_folder).parameters.items()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]


# --------------------------------------------------------------------------- checks
def _reject_unknown(unknown: dict) -> None:
    named = []
    for name in sorted(unknown):
        hint = closest(name, _PARAMETERS)
        named.append(f"{name!r} (did you mean {hint!r}?)" if hint else repr(name))
    raise UnknownParameterError(f"{NAME}: unknown parameter{'s' if len(named) > 1 else ''} {', '.join(named)}; "
                                f"valid parameters: {', '.join(_PARAMETERS)}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_size(size) -> tuple[int, int]:
    pair = (size, size) if _is_int(size) else tuple(size) if isinstance(size, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(_is_int(v) and v > 0 for v in pair):
        raise ValueError(f"{NAME}: size must be a positive integer (square) or a (height, width) pair of positive "
                         f"integers, e.g. size=32 or size=[32, 48]; got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_choice(param: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        hint = closest(str(value), choices)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise ValueError(f"{NAME}: unknown {param} {value!r}{suggestion} (valid: {', '.join(choices)})")
    return value


def _check_channels(channels) -> int:
    if not _is_int(channels) or channels not in CHANNELS:
        raise ValueError(f"{NAME}: channels must be 3 (RGB) or 1 (greyscale), got {channels!r}")
    return int(channels)


def _per_channel(param: str, value, channels: int) -> tuple[float, ...]:
    values = [value] if isinstance(value, (int, float, np.number)) else list(value) if isinstance(
        value, (tuple, list)) else None
    if (values is None or len(values) not in (1, channels)
            or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)
                       for v in values)):
        raise ValueError(f"{NAME}: {param} must be a finite number or {channels} of them (one per channel), "
                         f"got {value!r}")
    return tuple(float(v) for v in values) * (channels if len(values) == 1 else 1)


def _check_normalisation(mean, std, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        missing = "mean" if mean is None else "std"
        raise ValueError(f"{NAME}: give both mean= and std=, or neither (the training split's statistics); "
                         f"{missing}= is missing")
    mean, std = _per_channel("mean", mean, channels), _per_channel("std", std, channels)
    if min(std) <= 0:
        raise ValueError(f"{NAME}: std must be positive, got {std}")
    return mean, std


def _check_holdout(test_fraction, split_seed) -> tuple[float, int]:
    fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
    seed = DEFAULT_SPLIT_SEED if split_seed is None else split_seed
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"{NAME}: test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"{NAME}: split_seed must be a non-negative integer, got {split_seed!r}")
    return float(fraction), int(seed)


def _is_tar_name(path: Path) -> bool:
    return path.name.lower().endswith(TAR_SUFFIXES)


def _check_root(root) -> Path:
    expected = (f"a folder holding {IMAGE_LAYOUT} folders (or <split>.tar.gz archives), or a folder (or .tar/.tar.gz) "
                "of <class>/<image> folders")
    if root is None:
        raise ValueError(f"dataset {NAME!r} needs root=: {expected}")
    root = Path(root).expanduser()
    if root.is_dir() or (root.is_file() and _is_tar_name(root)):
        return root
    problem = "is not a folder or a .tar/.tar.gz/.tgz archive" if root.exists() else "does not exist"
    raise FileNotFoundError(f"dataset {NAME!r}: root {str(root)!r} {problem} (expected {expected})")


def _split_source(root: Path, split: str) -> Path | None:
    try:
        return _image_source(NAME, root, split)
    except FileNotFoundError:
        return None


def _choose_layout(root: Path, split: str, layout: str) -> str:
    """``"splits"`` or ``"single"`` for ``root``; a missing split is a FileNotFoundError naming what was found."""
    if root.is_file():
        if layout == "splits":
            raise FileNotFoundError(f"{NAME}: layout='splits' needs root to be a folder holding {split}/ or "
                                    f"{split}.tar.gz, but {root} is an archive (read it with layout='single')")
        return "single"
    if layout == "single":
        return "single"
    found = {s: _split_source(root, s) for s in SPLITS}
    if found[split] is not None:
        return "splits"
    others = [s for s in SPLITS if found[s] is not None]
    if others or layout == "splits":
        listing = sorted(e.name + ("/" if e.is_dir() else "") for e in root.iterdir() if not e.name.startswith("."))
        held = (", ".join(listing[:12]) or "nothing") + (" ..." if len(listing) > 12 else "")
        raise FileNotFoundError(f"{NAME} {split}: expected {split}.tar.gz (or {split}.tar) or a "
                                f"{split}/<class>/<image> folder in {root}, which holds {held}")
    return "single"


def _load_hinting(root: Path, source: Path, geometry: _Geometry, cache_dir, layout: str) -> _Decoded:
    """``_load``, adding a hint when an automatic split layout may have been the wrong guess."""
    try:
        return _load(source, geometry, cache_dir)
    except ImageSourceError as exc:
        split_names = set(SPLITS) | {f"{s}.tar" for s in SPLITS} | {f"{s}.tar.gz" for s in SPLITS}
        if layout != "auto" or not any(e.is_dir() and not e.name.startswith(".") and e.name not in split_names
                                       for e in root.iterdir()):
            raise
        raise ImageSourceError(f"{exc}. (root {root} was read as {'/'.join(SPLITS)} splits because it holds "
                               f"{source.name}; if root's sub-folders are the classes themselves, pass "
                               "layout='single')") from exc


# --------------------------------------------------------------------------- decoding
def _to_channels(img, channels: int):
    """A PIL image in mode L (channels=1) or RGB (channels=3); 16-bit greyscale scaled, not clipped."""
    from PIL import Image

    if img.mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(img).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"mode {img.mode} pixel values outside 0..65535 ({array.min()}..{array.max()})")
        img = Image.fromarray(((array * 255 + 32767) // 65535).astype(np.uint8), "L")
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    if channels == 1 and img.mode in ("1", "LA", "La"):
        return img.convert("L")
    rgb = img.convert("RGB")
    return rgb if channels == 3 else rgb.convert("L")


def _fit(img, geometry: _Geometry):
    """Resize a PIL image to (geometry.width, geometry.height) by ``geometry.resize``."""
    from PIL import Image

    bilinear = Image.Resampling.BILINEAR
    target = (geometry.width, geometry.height)
    src_w, src_h = img.size
    if geometry.resize == "squash":
        return img.resize(target, bilinear)
    if geometry.resize == "center_crop":
        scale = max(geometry.width / src_w, geometry.height / src_h)
        box_w, box_h = min(src_w, geometry.width / scale), min(src_h, geometry.height / scale)
        left, top = (src_w - box_w) / 2, (src_h - box_h) / 2
        return img.resize(target, bilinear, box=(left, top, left + box_w, top + box_h))
    scale = min(geometry.width / src_w, geometry.height / src_h)  # pad
    inner_w = min(geometry.width, max(1, round(src_w * scale)))
    inner_h = min(geometry.height, max(1, round(src_h * scale)))
    canvas = Image.new(img.mode, target, 0)
    canvas.paste(img.resize((inner_w, inner_h), bilinear),
                 ((geometry.width - inner_w) // 2, (geometry.height - inner_h) // 2))
    return canvas


def _decode_one(data: bytes, geometry: _Geometry) -> np.ndarray:
    """Image bytes -> uint8 (H, W, C) per ``geometry`` (EXIF orientation applied first)."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
        img = _to_channels(img, geometry.channels)
        if img.size != (geometry.width, geometry.height):  # every mode leaves an image of the right size alone
            img = _fit(img, geometry)
        array = np.asarray(img)
    return array.reshape(geometry.height, geometry.width, geometry.channels)


def _entries(source: Path) -> list[tuple[str, str, str, Callable[[], bytes]]]:
    """(class, file, where, read bytes) per image of a tar or folder, sorted by (class, file); checked.

    A folder's images are read one at a time while decoding (not all held in memory).
    """
    if source.is_file():
        found = [(cls, file, f"{source}: {member}", (lambda data=data: data))
                 for cls, file, member, data in _tar_entries(source)]
    else:
        found = [(path.parent.name, path.name, str(path), path.read_bytes) for _, path in _folder_images(source)]
    found.sort(key=lambda entry: entry[:2])
    return found


def _class_folders(source: Path) -> set[str]:
    """Names of the class folders of a tar or folder, images or not (hidden ones left out)."""
    if source.is_dir():
        with os.scandir(source) as listing:
            names = {entry.name for entry in listing if entry.is_dir(follow_symlinks=False)}
    else:
        names = set()
        with tarfile.open(source, "r|*") as tar:  # already checked by _tar_entries
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if len(parts) >= 3 or (len(parts) == 2 and member.isdir()):
                    names.add(parts[1])
    return {name for name in names if not name.startswith(".")}


def _decode(source: Path, geometry: _Geometry) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode every ``<class>/<image>`` of a tar or folder: uint8 (N, H, W, C), labels (N,), classes, files."""
    from PIL import Image
    from tqdm.auto import tqdm

    entries = _entries(source)
    if not entries:
        raise ImageSourceError(f"{source}: no images found; expected <class>/<image> files ending in "
                               f"{'|'.join(IMAGE_SUFFIXES)} under it (the whole layout is {IMAGE_LAYOUT}, or "
                               "root/<class>/<image> for a single folder)")
    classes = sorted({cls for cls, _, _, _ in entries})
    empty = sorted(_class_folders(source) - set(classes))
    if empty:
        raise ImageSourceError(f"{source}: class folder(s) {', '.join(map(repr, empty))} hold no images (files ending "
                               f"in {'|'.join(IMAGE_SUFFIXES)}); add images or remove the folder, since every class "
                               "folder is a class")
    class_index = {cls: k for k, cls in enumerate(classes)}
    images = np.empty((len(entries), geometry.height, geometry.width, geometry.channels), dtype=np.uint8)
    progress = tqdm(entries, desc=f"decoding {source.name} to {geometry.height}x{geometry.width}", unit="img",
                    leave=False, disable=len(entries) < PROGRESS_MIN_IMAGES)
    for i, (_, _, where, read) in enumerate(progress):
        try:
            images[i] = _decode_one(read(), geometry)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageSourceError(f"{where}: cannot decode the image ({exc})") from exc
    labels = np.array([class_index[cls] for cls, _, _, _ in entries], dtype=np.int64)
    return images, labels, classes, [f"{cls}/{file}" for cls, file, _, _ in entries]


# --------------------------------------------------------------------------- cache
def _cache_path(source: Path, geometry: _Geometry, cache_dir) -> Path:
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stem = source.name.split(".")[0]
    return cache / f"{NAME}-{stem}-{_source_key(source)}-{geometry.tag}.npz"


def _meta_path(cache_path: Path) -> Path:
    return cache_path.with_suffix(".json")


def _read_meta(cache_path: Path) -> dict | None:
    """The ``.json`` beside a cache file, or None when absent, unreadable or stale."""
    path = _meta_path(cache_path)
    if not (path.is_file() and cache_path.is_file()):
        return None
    try:
        meta = json.loads(path.read_text())
        if (meta.get("version") != DECODER_VERSION or not isinstance(meta.get("classes"), list)
                or not isinstance(meta.get("files"), list) or not isinstance(meta.get("stats"), dict)):
            raise ValueError("unexpected contents")
        return meta
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable dataset cache metadata {path} ({exc}); decoding again", stacklevel=3)
        return None


def _write_meta(cache_path: Path, meta: dict) -> None:
    _write_json(_meta_path(cache_path), meta)


def _write_json(path: Path, value) -> None:
    """Write atomically: a temp file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(source: Path, geometry: _Geometry, cache_dir) -> _Decoded:
    """The decoded source, from the cache when it holds it, else decoded and cached."""
    path = _cache_path(source, geometry, cache_dir)
    meta = _read_meta(path)
    cached = _read_cache(path) if meta is not None else None
    if cached is not None:
        images, labels, classes = cached
        if (images.shape[1:] == (geometry.height, geometry.width, geometry.channels)
                and classes == meta["classes"] and len(meta["files"]) == len(images)):
            return _Decoded(images, labels, classes, meta["files"], meta["stats"], path)
        warnings.warn(f"ignoring inconsistent dataset cache {path}; decoding again", stacklevel=2)
    images, labels, classes, files = _decode(source, geometry)
    _write_cache(path, images, labels, classes)
    decoded = _Decoded(images, labels, classes, files, {}, path)
    _save_meta(decoded)
    return decoded


def _save_meta(decoded: _Decoded) -> None:
    _write_meta(decoded.cache_path, {"version": DECODER_VERSION, "classes": decoded.classes,
                                     "files": decoded.files, "stats": decoded.stats})


# --------------------------------------------------------------------------- statistics, splits, classes
def _channel_stats(images: np.ndarray, rows: np.ndarray | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``images[rows] / 255`` (uint8 (N, H, W, C)), exactly, by histogram."""
    channels = images.shape[-1]
    counts = np.zeros((channels, 256), dtype=np.int64)
    rows = np.arange(len(images)) if rows is None else rows
    for start in range(0, len(rows), 4096):  # bounded memory
        chunk = images[rows[start:start + 4096]]
        for c in range(channels):
            counts[c] += np.bincount(chunk[..., c].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255
    totals = counts.sum(axis=1).astype(np.float64)
    mean = counts @ values / totals
    std = np.sqrt(np.maximum((counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / totals, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _train_stats(decoded: _Decoded, tag: str, rows: np.ndarray | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The training pixels' per-channel (mean, std), stored in the cache's ``.json`` under ``tag``."""
    stored = decoded.stats.get(tag)
    if stored is None:
        mean, std = _channel_stats(decoded.images, rows)
        stored = decoded.stats[tag] = {"mean": list(mean), "std": list(std)}
        _save_meta(decoded)
    return _usable(stored)


def _usable(stored: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Stored training statistics as (mean, std); a zero std (every pixel equal) is an error."""
    mean, std = tuple(stored["mean"]), tuple(stored["std"])
    flat = [c for c, s in enumerate(std) if s == 0]
    if flat:
        raise ValueError(f"{NAME}: the training images have zero standard deviation on channel(s) {flat} (every "
                         f"pixel equal), so they cannot be standardised; pass mean= and std= explicitly")
    return mean, std


def _holdout(decoded: _Decoded, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train rows, test rows) of a single-folder source: stratified, seeded by file name."""
    test: list[int] = []
    for k, cls in enumerate(decoded.classes):
        rows = np.flatnonzero(decoded.labels == k)
        if len(rows) < 2:
            raise ValueError(f"{NAME}: class {cls!r} has 1 image; the single-folder layout holds out part of every "
                             "class for the test split, so each class needs at least 2 images (or give separate "
                             "train/ and test/ folders)")
        count = min(len(rows) - 1, max(1, math.floor(len(rows) * fraction + 0.5)))
        scores = [(hashlib.sha256(f"{seed}|{decoded.files[r]}".encode()).digest(), int(r)) for r in rows]
        test.extend(r for _, r in sorted(scores)[:count])
    is_test = np.zeros(len(decoded.labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _train_info(root: Path, geometry: _Geometry, cache_dir, need_stats: bool
                ) -> tuple[list[str], tuple[tuple[float, ...], tuple[float, ...]] | None]:
    """The training split's classes (and statistics when ``need_stats``), decoding it only if stats are needed."""
    source = _split_source(root, "train")
    if source is None:
        why = ("its images are normalised with the training split's statistics (or pass mean= and std=) and its "
               "labels index the training split's classes") if need_stats else \
            "its labels index the training split's classes"
        raise FileNotFoundError(f"{NAME} test: expected train.tar.gz (or train.tar) or a train/<class>/<image> folder "
                                f"in {root} beside the test split: {why}")
    meta = _read_meta(_cache_path(source, geometry, cache_dir))
    if meta is not None and (not need_stats or "train" in meta["stats"]):
        stored = meta["stats"].get("train")
        return meta["classes"], _usable(stored) if need_stats else None
    if need_stats:
        decoded = _load(source, geometry, cache_dir)
        return decoded.classes, _train_stats(decoded, "train", None)
    return _listed_classes(source, cache_dir), None


def _listed_classes(source: Path, cache_dir) -> list[str]:
    """The classes of a source that holds images, without decoding; remembered (by content) in the cache folder."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache / f"{NAME}-{source.name.split('.')[0]}-{_source_key(source)}-classes-v{DECODER_VERSION}.json"
    try:
        classes = json.loads(path.read_text())
        if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
            return classes
    except (OSError, ValueError):
        pass
    classes = sorted({cls for cls, _, _, _ in _entries(source)})
    _write_json(path, classes)
    return classes


def _check_same_classes(test: _Decoded, train_classes: list[str], root: Path) -> None:
    if test.classes == list(train_classes):
        return
    missing = sorted(set(train_classes) - set(test.classes))
    extra = sorted(set(test.classes) - set(train_classes))
    parts = [f"missing from test: {', '.join(map(repr, missing))}" if missing else "",
             f"only in test: {', '.join(map(repr, extra))}" if extra else ""]
    raise ValueError(f"{NAME}: the test split's classes differ from the training split's in {root} "
                     f"({'; '.join(p for p in parts if p)}); both splits need the same class folders, since a "
                     "label is the class's index among the sorted names")
