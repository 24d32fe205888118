"""Data sets held as tensors in memory, and the registered loaders that build them.

Every loader is ``fn(split, root=None, cache_dir=None) -> ArrayDataset`` with ``split`` in
``SPLITS``; inputs come back normalised float32 (N, C, H, W), targets int64 (N,).

Image archives and folders (CIFAR-10) are data from elsewhere, so they are read defensively:
only regular files and folders (no symbolic or hard links, devices or FIFOs, no absolute or
``..`` member paths), and only the ``<top>/<class>/<image>`` layout (``train/cat/0001.jpg``;
for a folder source, ``<class>/<image>`` under the split folder), so a class name is always
the image's immediate folder. Anything else raises :class:`ImageSourceError` naming the
archive or folder and the entry. Files that are not images (``.DS_Store``, a README) are
skipped wherever they are. The decoded arrays are cached under a key made from the source's
full contents (see :func:`_source_key`).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from distill.safety import sha256_file

from . import DATASETS

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 2  # bump when the cache layout or the decoding rules change: old files are then never read
IMAGE_LAYOUT = "<split>/<class>/<image>"

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class ImageSourceError(ValueError):
    """An image archive or folder that is unreadable, holds an unsafe entry or breaks the layout.

    The message names the archive or folder, the entry, and the layout that would be right.
    """


@dataclass
class ArrayDataset:
    """A whole split in memory: ``inputs`` (N, C, H, W) float32, ``targets`` (N,) int64.

    Sample ids are row numbers (0..N-1); ``classes[k]`` names target ``k``.
    """

    inputs: Tensor
    targets: Tensor
    classes: list[str]
    name: str
    split: str
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.inputs.ndim != 4 or self.inputs.dtype != torch.float32:
            raise ValueError(f"{self.name}: inputs must be float32 (N, C, H, W), "
                             f"got {self.inputs.dtype} {tuple(self.inputs.shape)}")
        if self.targets.shape != (len(self.inputs),) or self.targets.dtype != torch.int64:
            raise ValueError(f"{self.name}: targets must be int64 ({len(self.inputs)},), "
                             f"got {self.targets.dtype} {tuple(self.targets.shape)}")
        if len(self.targets) and not 0 <= int(self.targets.min()) <= int(self.targets.max()) < len(self.classes):
            raise ValueError(f"{self.name}: targets must lie in [0, {len(self.classes)}) "
                             f"(one per class name), got [{int(self.targets.min())}, {int(self.targets.max())}]")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        return tuple(self.inputs.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def fingerprint(self) -> str:
        """16 hex digits of sha256 over name, split, classes and the tensors' bytes (computed once)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(f"{self.name}|{self.split}|{'|'.join(self.classes)}".encode())
            for tensor in (self.inputs, self.targets):
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).data)
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def subset(self, num_samples: int, seed: int = 0) -> "ArrayDataset":
        """``num_samples`` samples chosen by ``seed``, class-balanced as far as the classes allow.

        Classes are taken round-robin (each round in random order, random samples within a
        class), and the chosen rows keep their original order. Deterministic in (data, n, seed).
        """
        size = len(self)
        if not 0 < num_samples <= size:
            raise ValueError(f"subset size must be in [1, {size}] for {self.name}/{self.split}, got {num_samples}")
        perm = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
        shuffled = self.targets[perm]
        order = torch.argsort(shuffled, stable=True)  # grouped by class, random within a class
        counts = torch.bincount(shuffled, minlength=self.num_classes)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(size) - starts[shuffled[order]]  # rank of perm[i] within its class
        chosen = perm[torch.argsort(rank * size + torch.arange(size))[:num_samples]].sort().values
        return ArrayDataset(self.inputs[chosen], self.targets[chosen], list(self.classes), self.name, self.split)


def build_dataset(name: str, split: str, root: str | Path | None = None,
                  cache_dir: str | Path | None = None, **params) -> ArrayDataset:
    """The registered data set ``name`` (or ``package.module:callable``) for ``split``.

    ``params`` (a recipe's ``data.params``, e.g. ``size`` of ``image_folder``) go to the builder; one
    it does not take is refused naming the data set, the parameter and the valid ones."""
    import inspect

    from distill.registry import closest

    builder = DATASETS.get(name)
    if params:
        try:
            signature = inspect.signature(builder).parameters
        except (TypeError, ValueError):
            signature = {}
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.values())
        valid = [key for key, p in signature.items() if key not in ("split", "root", "cache_dir")
                 and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        unknown = [key for key in params if key not in valid]
        if unknown and not takes_any:
            hints = [f"{key!r}" + (f" (did you mean {closest(key, valid)!r}?)" if closest(key, valid) else "")
                     for key in unknown]
            raise ValueError(f"dataset {name!r} has no parameter {', '.join(hints)}; valid parameters: "
                             f"{', '.join(valid) or '(none)'}")
    return builder(split, root=root, cache_dir=cache_dir, **params)


def default_cache_dir() -> Path:
    """``$DISTILL_CACHE/datasets``, else ``~/.cache/distill/datasets``."""
    return Path(os.environ.get("DISTILL_CACHE") or "~/.cache/distill").expanduser() / "datasets"


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name}: unknown split {split!r}; valid splits are {', '.join(SPLITS)}")


def _require_root(name: str, root: str | Path | None, folder: str, holding: str) -> Path:
    if root is None:
        raise ValueError(f"dataset {name!r} needs root= the folder holding {holding}, "
                         f"e.g. '../shared/data/{folder}'")
    root = Path(root).expanduser()
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"dataset {name!r}: root {str(root)!r} {problem} "
                                f"(expected the folder holding {holding}, e.g. '../shared/data/{folder}')")
    return root


def _normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (N, C, H, W) -> float32 ((x / 255) - mean) / std, per channel."""
    shape = (1, len(mean), 1, 1)
    return images.float().div_(255).sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape))


# --------------------------------------------------------------------------- digits
@DATASETS.register("digits")
def digits(split: str, root: str | Path | None = None, cache_dir: str | Path | None = None) -> ArrayDataset:
    """scikit-learn's 8x8 digits (bundled, no download): (1437 | 360, 1, 8, 8), 10 classes.

    Stratified 80/20 split (``random_state=0``); values / 16, then standardised with the
    train split's scalar mean and std. ``root`` and ``cache_dir`` are unused.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_split("digits", split)
    bunch = load_digits()
    images = torch.from_numpy(bunch.data.astype(np.float32) / 16.0).view(-1, 1, 8, 8)
    targets = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(np.arange(len(targets)), test_size=0.2, random_state=0,
                                           stratify=bunch.target)
    train = images[torch.from_numpy(train_idx)]
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    inputs = (images[idx] - train.mean()) / train.std()
    return ArrayDataset(inputs.contiguous(), targets[idx], [str(d) for d in range(10)], "digits", split)


# --------------------------------------------------------------------------- IDX (MNIST family)
def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or not) into a uint8 array of its dims.

    Header: big-endian magic ``0x0000 08 <ndim>`` (0x00000803 images, 0x00000801 labels),
    then one uint32 size per dimension. Raises ValueError naming the file on a bad magic,
    an unexpected ``ndim`` or a size that does not match the header.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            data = bytearray(f.read())  # writable, so torch.from_numpy needs no copy
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read gzip stream ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (magic {bytes(data[:4]).hex()!r}, "
                         f"expected 00000801 for labels or 00000803 for images)")
    if data[2] != 0x08:
        raise ValueError(f"{path}: IDX element type 0x{data[2]:02x} is not supported (only 0x08, unsigned byte)")
    dims_found = data[3]
    if ndim is not None and dims_found != ndim:
        raise ValueError(f"{path}: IDX magic {bytes(data[:4]).hex()} says {dims_found} dimension(s), "
                         f"expected {ndim} (magic 0000080{ndim})")
    header = 4 + 4 * dims_found
    if len(data) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(data)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims_found, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(f"{path}: IDX header says dims {dims} ({expected} bytes) but the file holds "
                         f"{len(data)} bytes ({'truncated' if len(data) < expected else 'trailing data'})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_dataset(name: str, folder: str, split: str, root: str | Path | None,
                 classes: list[str], mean: float, std: float) -> ArrayDataset:
    _check_split(name, split)
    root = _require_root(name, root, folder, "its IDX files (train-images-idx3-ubyte.gz, ...)")
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        stem = f"{prefix}-{kind}-idx{ndim}-ubyte"
        path = next((root / n for n in (stem + ".gz", stem) if (root / n).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{name} {split}: expected {stem}.gz or {stem} in {root}")
        arrays.append(read_idx(path, ndim))
    images, labels = arrays
    if len(images) != len(labels):
        raise ValueError(f"{name} {split}: {len(images)} images but {len(labels)} labels in {root}")
    inputs = _normalise(torch.from_numpy(images).unsqueeze(1), (mean,), (std,))
    return ArrayDataset(inputs, torch.from_numpy(labels.astype(np.int64)), list(classes), name, split)


@DATASETS.register("mnist")
def mnist(split: str, root: str | Path | None = None, cache_dir: str | Path | None = None) -> ArrayDataset:
    """MNIST from IDX files in ``root``: (60000 | 10000, 1, 28, 28), normalised 0.1307 / 0.3081."""
    return _idx_dataset("mnist", "mnist", split, root, MNIST_CLASSES, 0.1307, 0.3081)


@DATASETS.register("fashion_mnist")
def fashion_mnist(split: str, root: str | Path | None = None, cache_dir: str | Path | None = None) -> ArrayDataset:
    """Fashion-MNIST from IDX files in ``root``: (60000 | 10000, 1, 28, 28), normalised 0.2860 / 0.3530."""
    return _idx_dataset("fashion_mnist", "fashion-mnist", split, root, FASHION_CLASSES, 0.2860, 0.3530)


# --------------------------------------------------------------------------- image folders (CIFAR-10)
def _image_source(name: str, root: Path, split: str) -> Path:
    """``<split>.tar.gz`` / ``<split>.tar`` in root, else an extracted ``<split>/`` folder."""
    candidates = [root / f"{split}.tar.gz", root / f"{split}.tar", root / split]
    for path in candidates:
        if path.is_file() or path.is_dir():
            return path
    raise FileNotFoundError(f"{name} {split}: expected {split}.tar.gz (or {split}.tar) or a "
                            f"{split}/<class>/*.jpg folder in {root}")


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def _layout_error(source: Path, entry: str, problem: str) -> ImageSourceError:
    example = "train/cat/0001.jpg" if source.is_file() else "cat/0001.jpg"
    where = "members" if source.is_file() else "images under the split folder"
    expected = "<top>/<class>/<image>" if source.is_file() else "<class>/<image>"
    return ImageSourceError(f"{source}: {entry!r} {problem}; the expected layout is {IMAGE_LAYOUT} ({where} "
                            f"as {expected}, e.g. {example!r}), so each image's folder names its class")


def _check_member(source: Path, member: tarfile.TarInfo) -> None:
    """Refuse a tar member that is not a plain file or folder, or whose path leaves the archive."""
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise ImageSourceError(f"{source}: member {name!r} has an absolute path; an image archive's members must be "
                               f"relative paths ({IMAGE_LAYOUT})")
    if ".." in re.split(r"[\\/]", name):
        raise ImageSourceError(f"{source}: member {name!r} has a '..' path component; an image archive's members "
                               f"must stay inside it ({IMAGE_LAYOUT})")
    if member.isreg() or member.isdir():
        return
    if member.issym():
        kind = f"a symbolic link (to {member.linkname!r})"
    elif member.islnk():
        kind = f"a hard link (to {member.linkname!r})"
    elif member.ischr() or member.isblk():
        kind = "a device file"
    elif member.isfifo():
        kind = "a FIFO"
    else:
        kind = f"of tar type {member.type!r}"
    raise ImageSourceError(f"{source}: member {name!r} is {kind}; an image archive may hold only regular files and "
                           "folders (store the image itself, not a link to it)")


def _tar_entries(source: Path) -> list[tuple[str, str, str, bytes]]:
    """(class, file name, member name, bytes) of every image in the tar ``source``, checked."""
    entries = []
    seen: set[str] = set()
    top = None
    try:
        with tarfile.open(source, "r|*") as tar:  # streaming: one pass, no seeks
            for member in tar:
                _check_member(source, member)
                if member.isdir() or not _is_image(member.name):
                    continue
                parts = PurePosixPath(member.name).parts
                if len(parts) != 3:
                    problem = ("is not inside a class folder" if len(parts) < 3 else
                               "is deeper than <top>/<class>/<image>")
                    raise _layout_error(source, member.name, problem)
                if top is None:
                    top = parts[0]
                elif parts[0] != top:
                    raise _layout_error(source, member.name, f"is under top folder {parts[0]!r}, but earlier "
                                                             f"members are under {top!r} (one top folder expected)")
                key = "/".join(parts)
                if key in seen:
                    raise ImageSourceError(f"{source}: member {member.name!r} appears twice; an image archive must "
                                           "hold each image once")
                seen.add(key)
                entries.append((parts[1], parts[2], member.name, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ImageSourceError(f"{source}: cannot read it as a tar archive ({exc}); expected a .tar or .tar.gz "
                               f"of {IMAGE_LAYOUT} images (or an extracted folder)") from exc
    return entries


def _folder_images(folder: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every image under ``folder`` (a split folder), sorted; checked.

    No link is followed or accepted (a symbolic link to a file or a folder is refused), nor a
    FIFO or device; images must sit exactly one folder deep (``<class>/<image>``).
    """
    images = []
    pending = [("", 0)]  # (relative path of a folder, its depth)
    while pending:
        relative, depth = pending.pop()
        current = folder / relative if relative else folder
        try:
            with os.scandir(current) as listing:
                found = list(listing)
        except OSError as exc:
            raise ImageSourceError(f"{folder}: cannot list {current} ({exc.strerror})") from exc
        for entry in found:
            shown = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_symlink():
                raise ImageSourceError(f"{folder}: {shown!r} is a symbolic link (to {os.readlink(entry.path)!r}); an "
                                       "image folder may hold only regular files and folders (copy the image in instead)")
            if entry.is_dir(follow_symlinks=False):
                pending.append((shown, depth + 1))
            elif not entry.is_file(follow_symlinks=False):
                raise ImageSourceError(f"{folder}: {shown!r} is not a regular file (a FIFO, socket or device); an "
                                       "image folder may hold only regular files and folders")
            elif _is_image(entry.name):
                if depth != 1:
                    raise _layout_error(folder, shown, "is not inside a class folder" if depth < 1
                                        else "is deeper than <class>/<image>")
                images.append((shown, Path(entry.path)))
    return sorted(images)


def _source_key(source: Path) -> str:
    """Cache key over the source's full contents (16 hex digits).

    A tar: sha256 of the whole file. A folder: sha256 over every image's relative path and the
    sha256 of its bytes (so an edit that keeps a file's size and mtime still changes the key).
    """
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    if source.is_file():
        digest.update(f"tar|{sha256_file(source)}".encode())
    else:
        for relative, path in _folder_images(source):
            digest.update(f"{relative}|{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:16]


def _read_entries(source: Path) -> list[tuple[str, str, str, bytes]]:
    """(class, file name, where, bytes) of every image of a tar or folder, sorted by (class, file name)."""
    if source.is_file():
        entries = _tar_entries(source)
    else:
        entries = [(path.parent.name, path.name, str(path), path.read_bytes())
                   for _, path in _folder_images(source)]
    entries.sort()
    return entries


def _decode_images(source: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode ``<class>/<file>`` images from a tar or folder: uint8 (N, H, W, 3), labels (N,), classes.

    Classes are the folder names sorted alphabetically; samples are sorted by (class, file
    name). The layout and the entries are checked first (see the module docstring).
    """
    from PIL import Image
    from tqdm.auto import tqdm

    entries = _read_entries(source)
    if not entries:
        raise ImageSourceError(f"{source}: no <class>/<image> files found (images end in "
                               f"{'|'.join(IMAGE_SUFFIXES)}); the expected layout is {IMAGE_LAYOUT}")
    classes = sorted({cls for cls, _, _, _ in entries})
    class_index = {cls: k for k, cls in enumerate(classes)}
    images = None
    for i, (cls, _, where, data) in enumerate(tqdm(entries, desc=f"decoding {source.name}", unit="img",
                                                   leave=False)):
        shown = f"{source}: {where}" if source.is_file() else where
        try:
            with Image.open(io.BytesIO(data)) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageSourceError(f"{shown}: cannot decode the image ({exc})") from exc
        if images is None:
            images = np.empty((len(entries), *array.shape), dtype=np.uint8)
        elif array.shape != images.shape[1:]:
            raise ValueError(f"{shown}: image of shape {array.shape}, but earlier images are {images.shape[1:]}")
        images[i] = array
    labels = np.array([class_index[cls] for cls, _, _, _ in entries], dtype=np.int64)
    return images, labels, classes


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """The cached arrays, or None when absent or unreadable (a warning says which)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels, classes = archive["images"], archive["labels"], [str(c) for c in archive["classes"]]
        if (images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),)
                or (len(labels) and not 0 <= labels.min() <= labels.max() < len(classes))):
            raise ValueError("arrays have unexpected shapes or values")
        return images, labels, classes
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring unreadable dataset cache {path} ({exc}); decoding again", stacklevel=3)
        return None


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """Write atomically: a temp file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, classes=np.array(classes, dtype=str))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_image_folder(name: str, source: Path, cache_dir: str | Path | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decoded images of a tar or folder, cached as ``<cache_dir>/<name>-<source>-<key>.npz``.

    ``key`` hashes the source's full contents (:func:`_source_key`), so an edited archive or
    image is decoded afresh. Returns uint8 (N, H, W, 3), int64 labels (N,) and the sorted class
    names.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stem = source.name.split(".")[0]
    path = cache / f"{name}-{stem}-{_source_key(source)}.npz"
    cached = _read_cache(path)
    if cached is not None:
        return cached
    images, labels, classes = _decode_images(source)
    _write_cache(path, images, labels, classes)
    return images, labels, classes


@DATASETS.register("cifar10")
def cifar10(split: str, root: str | Path | None = None, cache_dir: str | Path | None = None) -> ArrayDataset:
    """CIFAR-10 from ``root/<split>.tar.gz`` or ``root/<split>/<class>/*.jpg``: (N, 3, 32, 32).

    Decoded once into ``cache_dir`` (default ``default_cache_dir()``); normalised per channel
    with the standard CIFAR-10 mean/std. The python-pickle CIFAR format is not read.
    """
    _check_split("cifar10", split)
    root = _require_root("cifar10", root, "cifar10", "train.tar.gz / test.tar.gz or train/<class>/ folders")
    images, labels, classes = load_image_folder("cifar10", _image_source("cifar10", root, split), cache_dir)
    if images.shape[1:] != (32, 32, 3):
        raise ValueError(f"cifar10 {split}: images in {root} are {images.shape[1:]}, expected 32x32 RGB")
    inputs = _normalise(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), CIFAR10_MEAN, CIFAR10_STD)
    return ArrayDataset(inputs, torch.from_numpy(labels), classes, "cifar10", split)
