"""Teacher-output cache: run the teacher once over a data set, distil many students from disk.

>>> cache = build_cache(teacher, train, "runs/cache/mnist-k8", k=8)        # runs the teacher once
>>> cache = open_cache("runs/cache/mnist-k8", expect={"teacher_fingerprint": weights_fingerprint(teacher),
...                                                   "dataset_fingerprint": train.fingerprint()})
>>> teacher_logits = cache.lookup(batch["index"])     # SparseTeacher (top-k) or (B, C) float32

Layout of a cache folder (every array a ``.npy`` file, read memory-mapped)::

    <path>/manifest.json              written last; without it the folder is not a cache
    <path>/.distill-owned             distill's marker: a folder distill made (kind "teacher-cache")
    <path>/logits-00000.npy           dense:  (rows, C) float16 | bfloat16 (as uint16 bits) | float32
    <path>/values-00000.npy           top-k:  (rows, k) the k largest logits, same value dtypes
    <path>/indices-00000.npy          top-k:  (rows, k) class ids, uint8 | int16 | uint16 | int32
    <path>/log_tail-00000.npy         top-k:  (rows,) float32, log of the teacher's mass outside
                                      the top-k at the cache's temperature (for mode "tail")
    <path>/feature.<name>-00000.npy   optional: (rows, D) a module's output, flattened, value dtype

Shard ``s`` holds samples ``[s * shard_size, min((s + 1) * shard_size, N))`` (sample ids are
the data set's row numbers, the ``"index"`` of a batch). Reading a batch is one fancy-index
read per array per shard touched, ids sorted within the shard, the batch's order kept.

Identity. The manifest records the teacher's weights fingerprint (``weights_fingerprint``),
the data set's fingerprint, name, split and length, the transform fingerprint, ``k``,
``temperature``, ``dtype`` and the feature paths; ``open_cache(expect=...)`` and ``build_cache``
refuse a cache whose identity differs, naming each part. ``temperature`` is content only for
top-k caches (the stored tail mass); a dense cache holds raw logits, usable at any T, so its
temperature is never compared. The manifest also records ``precision``, the teacher's forward
during the build (``fp32``, or ``bf16`` / ``fp16`` autocast, as the run's mixed precision); it is
not identity: its effect on the stored logits is of the order of float16 storage.

Augmentation. The teacher sees the data set's stored inputs. A random augmentation applied at
training time would show the live teacher different inputs every epoch, so cached outputs would
be wrong: ``build_cache`` refuses any ``transform_fingerprint`` other than ``"none"`` (all of
distill's augmentations are random), and a run with augmentation must pass its augmentation's
fingerprint to ``open_cache(expect=...)``, which then refuses the cache.

Atomicity and resume. A build writes into ``<path>.partial/``: ``progress.json`` (the build's
identity and shard size) first, then each shard's arrays to temporary names, fsynced and renamed,
then a ``shard-NNNNN.done`` marker; the manifest is written last and the folder renamed to
``<path>``. ``open_cache`` never opens a ``.partial`` folder. Building again after a crash reuses
the finished shards of a matching ``.partial`` and runs the teacher only for the others; a
``.partial`` of another build is discarded (with a warning). Two builds of the same path at
the same time are not supported.

Ownership and overwrite. The ``.partial`` folder gets distill's marker file
(:data:`distill.safety.MARKER`, kind ``"teacher-cache"``) the moment it is made, so every
finished cache carries it. ``overwrite=True`` replaces only a teacher cache: a folder with that
marker, an empty folder, or (a cache written before markers existed) a folder holding nothing
but a cache's own files (manifest, shard arrays, build bookkeeping). Anything else (a symbolic
link, a file, a folder distill did not make that holds other things, a distill folder of another
kind) is refused with :class:`CacheFolderError` naming it and what it holds, before the teacher
runs. The old cache is deleted only after the new one has taken its name, and discarded
``.partial`` folders pass the same check.

Checksums. The manifest records the sha256 of every shard file (``"sha256"``: file name ->
hex), written atomically with the manifest. Opening stays fast (it reads only ``.npy``
headers): each shard file is verified the first time a lookup reads it (``verify()`` checks
them all at once), and a file whose bytes changed raises :class:`CacheError` naming it and
saying to rebuild with ``distill cache --overwrite``. Caches written before checksums existed
(no ``"sha256"`` in the manifest) still open, unverified, with a warning that says so.
Resuming a build re-checks each finished shard of the ``.partial`` against the checksum in its
``.done`` marker and recomputes any that differ.

Non-finite outputs. A teacher output (logits or a captured feature) holding NaN or inf stops the
build with a :class:`CacheError` naming the sample ids and the shard; that shard is not written,
so no finished cache ever holds a non-finite value.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import hashlib
import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor, nn

from distill.losses.sparse import SPARSE_MODES, SparseTeacher
from distill.safety import MARKER, FolderError, describe_contents, is_owned, mark_owned, remove_owned, sha256_file

from .datasets import ArrayDataset

FORMAT = "distill-teacher-cache"
VERSION = 1
DTYPES = ("float16", "bfloat16", "float32")
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
PARTIAL_SUFFIX = ".partial"
OWNED_KIND = "teacher-cache"  # the kind written into the marker file of every cache folder
# the parts of a cache's identity, with words for error messages
IDENTITY = {
    "teacher_fingerprint": "teacher weights",
    "dataset_fingerprint": "dataset contents",
    "dataset_name": "dataset name",
    "dataset_split": "dataset split",
    "num_samples": "number of samples",
    "transform_fingerprint": "input transform (augmentation)",
    "k": "top-k size (None: dense logits)",
    "temperature": "temperature of the stored tail mass",
    "dtype": "value dtype",
    "features": "captured features (name -> module path)",
}
_FEATURE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
# the names of the files a cache folder (finished or .partial) holds, and their temporary names
_OWN_FILE = (r"(?:manifest\.json|progress\.json|shard-\d{5}\.done"
             r"|(?:logits|values|indices|log_tail|offsets|feature\.[A-Za-z0-9_\-]+)-\d{5}\.npy)")
_CACHE_FILE = re.compile(rf"^(?:{_OWN_FILE}|\.{_OWN_FILE}\.tmp)$")


class CacheError(ValueError):
    """A teacher cache that is missing, unfinished, corrupt, or does not match the run."""


class CacheFolderError(CacheError, FolderError):
    """A path a cache build would replace or delete that is not a teacher cache distill made."""


# ----------------------------------------------------------------------------- fingerprints, dtypes
def weights_fingerprint(model: nn.Module) -> str:
    """16 hex digits of sha256 over the state dict: each entry's name, dtype, shape and bytes.

    Buffers count (they are in the state dict); the architecture's code does not, so two
    models with identical state dicts but different forward code share a fingerprint.
    """
    digest = hashlib.sha256(b"distill-weights-v1")
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def index_dtype(num_classes: int) -> np.dtype:
    """The smallest integer type holding class ids ``0..num_classes-1``."""
    for dtype in (np.uint8, np.int16, np.uint16, np.int32):
        if num_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _storage_dtype(dtype: str) -> np.dtype:
    return np.dtype({"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}[dtype])


def _encode(values: Tensor, dtype: str, what: str) -> np.ndarray:
    """float tensor -> numpy array in the cache's value dtype (bfloat16 as its uint16 bits)."""
    values = values.detach().to("cpu", torch.float32)
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    stored = values.to(torch_dtype)
    if torch.isinf(stored).any() and not torch.isinf(values[torch.isinf(stored)]).all():
        largest = float(values[torch.isfinite(values)].abs().max())
        raise CacheError(f"{what}: values up to {largest:.4g} overflow {dtype} (max "
                         f"{torch.finfo(torch_dtype).max:.4g}); build the cache with dtype='bfloat16' or 'float32'")
    if dtype == "bfloat16":
        return stored.view(torch.int16).numpy().view(np.uint16)
    return stored.numpy()


def _decode(array: np.ndarray, dtype: str) -> Tensor:
    """Stored array -> float32 tensor."""
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(np.ascontiguousarray(array)).float()


# ----------------------------------------------------------------------------- manifest helpers
def _identity(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest / build config that decide its content."""
    identity = {key: record.get(key) for key in IDENTITY}
    if isinstance(identity["features"], dict):
        identity["features"] = {name: (spec["path"] if isinstance(spec, dict) else spec)
                                for name, spec in identity["features"].items()}
    if identity["k"] is None:  # dense logits are raw: the temperature is not part of the content
        identity.pop("temperature")
    return identity


def _differences(have: dict[str, Any], want: dict[str, Any], wanted_by: str = "the run") -> list[str]:
    lines = []
    for key, wanted in want.items():
        if key not in have:
            continue
        stored = have[key]
        if key == "temperature" and stored is not None and wanted is not None:
            same = math.isclose(float(stored), float(wanted), rel_tol=1e-12, abs_tol=0.0)
        else:
            same = stored == wanted
        if not same:
            lines.append(f"  - {IDENTITY.get(key, key)} ({key}): cache has {stored!r}, {wanted_by} has {wanted!r}")
    return lines


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _shard_file(array: str, shard: int) -> str:
    return f"{array}-{shard:05d}.npy"


def _marker(shard: int) -> str:
    return f"shard-{shard:05d}.done"


def _array_names(k: int | None, features: dict[str, Any]) -> list[str]:
    names = ["logits"] if k is None else ["values", "indices", "log_tail"]
    return names + [f"feature.{name}" for name in features]


# ----------------------------------------------------------------------------- ownership
def _owned_kind(folder: Path) -> str | None:
    """The kind written in ``folder``'s marker file, or None when it has none (or it is unreadable)."""
    try:
        kind = json.loads((folder / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _check_replaceable(folder: Path, what: str) -> None:
    """Refuse (CacheFolderError) unless ``folder`` is absent, empty, or a teacher cache distill made.

    A teacher cache distill made: its marker says kind ``"teacher-cache"``, or (written before
    markers) it has no marker and holds nothing but a cache's own files.
    """
    if folder.is_symlink():
        raise CacheFolderError(f"{what} {folder} is a symbolic link; distill replaces only teacher cache folders it "
                               "made itself. Point the cache at the real folder, or choose another path.")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise CacheFolderError(f"{what} {folder} is a file, not a teacher cache folder; remove it yourself if it is "
                               "really to go, or choose another path")
    if is_owned(folder):
        kind = _owned_kind(folder)
        if kind == OWNED_KIND:
            return
        raise CacheFolderError(f"refusing to replace {what} {folder}: distill made it as a {kind or 'unknown'!s} "
                               f"folder, not a teacher cache, and it holds {describe_contents(folder)}. Choose "
                               "another path for the cache.")
    foreign = [entry for entry in folder.iterdir() if not _CACHE_FILE.match(entry.name) or entry.is_dir()]
    if foreign:
        raise CacheFolderError(
            f"refusing to replace {what} {folder}: distill did not make it (it has no {MARKER} marker) and it holds "
            f"{describe_contents(folder)}, not only a teacher cache's files. Remove it yourself if it is really to "
            "go, or choose another path for the cache."
        )


def _remove_cache_folder(folder: Path, what: str) -> None:
    """Delete ``folder`` after :func:`_check_replaceable` passes; the only way cache.py deletes a folder."""
    _check_replaceable(folder, what)
    if not folder.exists():
        return
    if is_owned(folder):
        remove_owned(folder, what)
    else:  # empty, or only the files of a cache written before markers existed (checked just above)
        shutil.rmtree(folder)


# ----------------------------------------------------------------------------- reading
def _rows_of(spec: dict[str, Any], shard: dict[str, Any]) -> int:
    """Rows of an array's file in ``shard``: one per sample, or (``"per": "token"``, a token cache)
    one per stored token, or (``"per": "sample+1"``) the samples' token offsets."""
    per = spec.get("per", "sample")
    if per == "token":
        return int(shard["tokens"])
    return int(shard["rows"]) + (1 if per == "sample+1" else 0)


class TeacherCache:
    """A finished cache, memory-mapped. Build with :func:`build_cache`, open with :func:`open_cache`.

    ``lookup(ids)`` returns the teacher's outputs for sample ids: a ``(..., C)`` float32 tensor
    (dense cache) or a :class:`~distill.losses.SparseTeacher` (top-k cache) in ``mode``;
    ``cache[ids]`` is the same, so a cache can stand where an ``(N, C)`` tensor of teacher
    outputs is indexed by ``batch["index"]``. Results are on the ids' device.
    """

    def __init__(self, path: str | Path, manifest: dict[str, Any], *, mode: str = "renormalized") -> None:
        if mode not in SPARSE_MODES:
            raise ValueError(f"TeacherCache: mode={mode!r} is not one of {SPARSE_MODES}")
        self.path = Path(path)
        self.manifest = manifest
        self.mode = mode
        self.num_samples: int = manifest["num_samples"]
        self.num_classes: int = manifest["num_classes"]
        self.k: int | None = manifest["k"]
        self.temperature: float = manifest["temperature"]
        self.dtype: str = manifest["dtype"]
        self.shard_size: int = manifest["shard_size"]
        self.features: dict[str, dict[str, Any]] = manifest["features"]
        self._checksums: dict[str, str] | None = manifest.get("sha256")
        self._verified: set[tuple[str, int]] = set()
        self._arrays: dict[str, list[np.ndarray]] = {}
        for name, spec in manifest["arrays"].items():
            shards = []
            for shard in manifest["shards"]:
                file = self.path / _shard_file(name, shard["index"])
                try:
                    array = np.load(file, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as exc:
                    raise CacheError(f"teacher cache {self.path}: cannot read {file.name} ({exc}); "
                                     "the cache is damaged: rebuild it with `distill cache --overwrite`") from exc
                expected = (_rows_of(spec, shard), *spec["row_shape"])
                if array.shape != expected or array.dtype != np.dtype(spec["storage"]):
                    raise CacheError(f"teacher cache {self.path}: {file.name} is {array.dtype} {array.shape}, the "
                                     f"manifest says {spec['storage']} {expected}; rebuild it with "
                                     "`distill cache --overwrite`")
                if self._checksums is not None and not isinstance(self._checksums.get(file.name), str):
                    raise CacheError(f"teacher cache {self.path}: its manifest records no sha256 for {file.name}; "
                                     "the manifest is damaged: rebuild it with `distill cache --overwrite`")
                shards.append(array)
            self._arrays[name] = shards
        if self._checksums is None:
            warnings.warn(f"teacher cache {self.path} has no shard checksums (it was built before distill recorded "
                          "them), so its files are not verified; rebuild it with `distill cache --overwrite` to add "
                          "them", stacklevel=3)

    # -- sizes
    def __len__(self) -> int:
        return self.num_samples

    @property
    def is_sparse(self) -> bool:
        return self.k is not None

    @property
    def nbytes(self) -> int:
        """True bytes on disk of every file in the cache folder (arrays, headers, manifest)."""
        return sum(file.stat().st_size for file in self.path.iterdir() if file.is_file())

    @property
    def bytes_per_sample(self) -> float:
        """Bytes on disk of the array files (``.npy`` headers included) per sample."""
        total = sum(file.stat().st_size for file in self.path.glob("*.npy"))
        return total / self.num_samples

    def __repr__(self) -> str:
        kind = "dense" if self.k is None else f"top-{self.k} ({self.mode})"
        return (f"TeacherCache({str(self.path)!r}, {kind}, {self.num_samples} samples x {self.num_classes} "
                f"classes, {self.dtype}, features={sorted(self.features)})")

    # -- integrity
    def _verify(self, name: str, shard: int) -> None:
        """Check the sha256 of array ``name``'s file of shard ``shard`` against the manifest (once)."""
        if self._checksums is None or (name, shard) in self._verified:
            return
        file = self.path / _shard_file(name, self.manifest["shards"][shard]["index"])
        try:
            actual = sha256_file(file)
        except OSError as exc:
            raise CacheError(f"teacher cache {self.path}: cannot read {file.name} ({exc.strerror}); rebuild it with "
                             "`distill cache --overwrite`") from exc
        expected = self._checksums[file.name]
        if actual != expected:
            raise CacheError(f"teacher cache {self.path}: shard file {file.name} is corrupted (its sha256 "
                             f"{actual[:16]}... differs from {expected[:16]}... recorded when it was written); "
                             "rebuild the cache with `distill cache --overwrite` (build_cache(..., overwrite=True))")
        self._verified.add((name, shard))

    def verify(self) -> None:
        """Check every shard file against the manifest's sha256 now (lookups check each file on first read)."""
        for name, shards in self._arrays.items():
            for shard in range(len(shards)):
                self._verify(name, shard)

    # -- reading
    def _read(self, name: str, shard: int, local_ids: np.ndarray) -> np.ndarray:
        """One fancy-index read of rows ``local_ids`` (sorted) of shard ``shard`` (its file verified first)."""
        self._verify(name, shard)
        return self._arrays[name][shard][local_ids]

    def _gather(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (1-D int64) of array ``name``: one read per shard touched, order kept."""
        first = self._arrays[name][0]
        out = np.empty((len(ids), *first.shape[1:]), dtype=first.dtype)
        if len(ids) == 0:
            return out
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        shards = sorted_ids // self.shard_size
        bounds = np.flatnonzero(np.diff(shards)) + 1
        for chunk in np.split(np.arange(len(ids)), bounds):
            shard = int(shards[chunk[0]])
            out[order[chunk]] = self._read(name, shard, sorted_ids[chunk] - shard * self.shard_size)
        return out

    def _ids(self, indices: Tensor | np.ndarray | list[int]) -> tuple[np.ndarray, tuple[int, ...], torch.device]:
        device = indices.device if isinstance(indices, Tensor) else torch.device("cpu")
        if isinstance(indices, Tensor):
            if indices.is_floating_point() or indices.dtype == torch.bool:
                raise ValueError(f"teacher cache lookup needs integer sample ids, got {indices.dtype}")
            array = indices.detach().to("cpu", torch.int64).numpy()
        else:
            array = np.asarray(indices)
            if array.dtype.kind not in "iu":
                raise ValueError(f"teacher cache lookup needs integer sample ids, got {array.dtype}")
            array = array.astype(np.int64)
        shape = array.shape
        ids = array.reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise IndexError(f"teacher cache {self.path}: sample ids must lie in [0, {self.num_samples}), got "
                             f"[{ids.min()}, {ids.max()}]")
        return ids, shape, device

    def lookup(self, indices: Tensor | np.ndarray | list[int], *, mode: str | None = None) -> Tensor | SparseTeacher:
        """Teacher outputs of sample ids ``indices`` ``(...)``: ``(..., C)`` float32, or a SparseTeacher.

        ``mode`` overrides the cache's ``mode`` for a top-k cache ("renormalized" or "tail");
        the SparseTeacher carries ``tail_temperature = temperature`` of the cache.
        """
        ids, shape, device = self._ids(indices)
        if self.k is None:
            return _decode(self._gather("logits", ids), self.dtype).reshape(*shape, self.num_classes).to(device)
        mode = self.mode if mode is None else mode
        values = _decode(self._gather("values", ids), self.dtype).reshape(*shape, self.k)
        classes = torch.from_numpy(self._gather("indices", ids).astype(np.int64)).reshape(*shape, self.k)
        log_tail = torch.from_numpy(self._gather("log_tail", ids)).reshape(shape)
        return SparseTeacher(values.to(device), classes.to(device), log_tail.to(device),
                             float(self.temperature), mode)

    __getitem__ = lookup

    def lookup_features(self, name: str, indices: Tensor | np.ndarray | list[int]) -> Tensor:
        """The stored output of feature ``name`` for ``indices`` ``(...)``: ``(..., *shape)`` float32."""
        if name not in self.features:
            raise KeyError(f"teacher cache {self.path} has no feature {name!r}; it holds {sorted(self.features)}")
        ids, shape, device = self._ids(indices)
        rows = _decode(self._gather(f"feature.{name}", ids), self.dtype)
        return rows.reshape(*shape, *self.features[name]["shape"]).to(device)


def _check_expect(path: Path, manifest: dict[str, Any], expect: dict[str, Any]) -> None:
    unknown = sorted(set(expect) - set(IDENTITY) - {"num_classes", "shard_size"})
    if unknown:
        raise ValueError(f"open_cache: unknown expect keys {unknown}; valid keys: "
                         f"{sorted(set(IDENTITY) | {'num_classes', 'shard_size'})}")
    have = dict(manifest)
    want = dict(expect)
    if "features" in want:  # the cache may hold more features than the run needs
        stored = {name: spec["path"] for name, spec in manifest["features"].items()}
        have["features"] = {name: stored.get(name) for name in want["features"] or {}}
        want["features"] = dict(want["features"] or {})
    if manifest["k"] is None:
        want.pop("temperature", None)  # raw logits: any temperature works
    lines = _differences(have, want)
    if lines:
        hint = ""
        if any(line.startswith("  - input transform") for line in lines):
            hint = ("\nCached teacher outputs are computed on the data set's inputs without augmentation; a run "
                    "with random augmentation needs the live teacher (or no augmentation).")
        raise CacheError(f"teacher cache {path} does not match this run:\n" + "\n".join(lines) + hint +
                         "\nRebuild it for this run with `distill cache RECIPE` (build_cache(..., overwrite=True)), "
                         "or point the run at a cache built for it.")


def open_cache(path: str | Path, *, expect: dict[str, Any] | None = None, mode: str | None = None) -> TeacherCache:
    """Open the finished cache at ``path``; refuse it when it differs from ``expect``.

    A token cache (manifest ``"kind": "token"``, from :func:`distill.data.token_cache.build_token_cache`)
    opens as a :class:`~distill.data.token_cache.TokenTeacherCache`. ``mode`` of the SparseTeacher
    lookups: default the mode the manifest records (token caches), else ``"renormalized"``.

    ``expect`` maps identity keys (``teacher_fingerprint``, ``dataset_fingerprint``,
    ``dataset_name``, ``dataset_split``, ``num_samples``, ``transform_fingerprint``, ``k``,
    ``temperature``, ``dtype``, ``features``, ``num_classes``, ``shard_size``) to the run's
    values; every difference is named in one CacheError. ``temperature`` is not compared for
    a dense cache; ``features`` (name -> module path) must be a subset of the cache's.
    Opening reads only the manifest and the ``.npy`` headers; each shard file's sha256 is
    checked when a lookup first reads it (``TeacherCache.verify()`` checks all of them now).
    """
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        raise CacheError(f"{path} is an unfinished teacher cache (a build was interrupted, or is running); build "
                         f"it again (`distill cache`, or build_cache) to resume; the finished cache will be "
                         f"{path.with_name(path.name[:-len(PARTIAL_SUFFIX)])}")
    if not path.is_dir():
        hint = ""
        if _partial_path(path).is_dir():
            hint = f"; an unfinished build is in {_partial_path(path)}: build again to resume it"
        raise CacheError(f"no teacher cache at {path}{hint} (create one with `distill cache RECIPE`)")
    if not (path / MANIFEST).is_file():
        raise CacheError(f"{path} is not a teacher cache: it has no {MANIFEST} (a cache's manifest is written last, "
                         "so this may be an unfinished build); rebuild it with `distill cache --overwrite`")
    try:
        manifest = _read_json(path / MANIFEST)
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path / MANIFEST} is unreadable ({exc}); rebuild the cache with "
                         "`distill cache --overwrite`") from exc
    if manifest.get("format") != FORMAT:
        raise CacheError(f"{path / MANIFEST} is not a distill teacher cache manifest (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise CacheError(f"teacher cache {path} has format version {manifest.get('version')!r}; this distill reads "
                         f"version {VERSION}: rebuild it with `distill cache --overwrite`")
    if expect:
        _check_expect(path, manifest, expect)
    mode = mode if mode is not None else manifest.get("mode", "renormalized")
    if manifest.get("kind") == "token":  # per-token rows of causal-LM sequences
        from .token_cache import TokenTeacherCache

        return TokenTeacherCache(path, manifest, mode=mode)
    return TeacherCache(path, manifest, mode=mode)


# ----------------------------------------------------------------------------- building
def _resolve_features(teacher: nn.Module, features: dict[str, str] | None) -> dict[str, nn.Module]:
    modules = {}
    names = [name for name, _ in teacher.named_modules() if name]
    for name, module_path in (features or {}).items():
        if not isinstance(name, str) or not _FEATURE_NAME.match(name):
            raise ValueError(f"feature name {name!r} must be letters, digits, '_' or '-' (it names a file)")
        try:
            modules[name] = teacher.get_submodule(module_path)
        except AttributeError:
            close = difflib.get_close_matches(module_path, names, n=5, cutoff=0.4) or names[:10]
            raise ValueError(f"feature {name!r}: the teacher has no module {module_path!r}; closest module paths: "
                             f"{', '.join(close) if close else '(the teacher has no submodules)'}") from None
    return modules


def _teacher_device(teacher: nn.Module) -> torch.device:
    for tensor in (*teacher.parameters(), *teacher.buffers()):
        return tensor.device
    return torch.device("cpu")


def _load_progress(partial: Path, config: dict[str, Any]) -> dict[int, dict[str, Any]] | None:
    """Finished shards of a matching ``.partial`` build, or None when it must be discarded."""
    try:
        progress = _read_json(partial / PROGRESS)
    except (OSError, ValueError):
        return None
    if progress != config:
        lines = _differences(progress, config, "this build")
        warnings.warn(f"discarding the unfinished teacher cache {partial}: it was built for another run"
                      + ("\n" + "\n".join(lines) if lines else ""), stacklevel=3)
        return None
    done = {}
    for marker in partial.glob("shard-*.done"):
        try:
            info = _read_json(marker)
            checksums = info.setdefault("sha256", {})  # a marker written before checksums: computed now
            for file, rows in info["files"].items():
                array = np.load(partial / file, mmap_mode="r", allow_pickle=False)
                if array.shape[0] != rows:
                    raise ValueError(f"{file} has {array.shape[0]} rows, expected {rows}")
                del array
                actual = sha256_file(partial / file)
                if checksums.setdefault(file, actual) != actual:
                    raise ValueError(f"{file} changed since it was written")
            done[int(info["shard"])] = info
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # recompute that shard
    return done


PRECISIONS = ("fp32", "bf16", "fp16")  # the teacher's forward while a cache is built (autocast for bf16 / fp16)


def teacher_autocast(precision: str, device: torch.device):
    """The autocast context a cache build runs the teacher under: none for ``"fp32"``, else bf16 / fp16
    autocast on ``device`` (outputs are cast to fp32 before they are stored)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _check_build_arguments(who: str, path: Path, *, temperature: float, dtype: str, shard_size: int, batch_size: int,
                           mode: str, precision: str = "fp32") -> None:
    """ValueError naming ``who``'s argument when a build's path or settings are not usable."""
    if precision not in PRECISIONS:
        raise ValueError(f"{who}: precision={precision!r} is not one of {PRECISIONS}")
    if path.name.endswith(PARTIAL_SUFFIX):
        raise ValueError(f"{who}: path {path} must not end in {PARTIAL_SUFFIX!r} (that suffix marks unfinished builds)")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"{who}: temperature must be > 0, got {temperature!r}")
    if dtype not in DTYPES:
        raise ValueError(f"{who}: dtype={dtype!r} is not one of {DTYPES}")
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name} must be an int >= 1, got {value!r}")
    if mode not in SPARSE_MODES:
        raise ValueError(f"{who}: mode={mode!r} is not one of {SPARSE_MODES}")


def build_cache(teacher: nn.Module, dataset: ArrayDataset, path: str | Path, *, k: int | None = None,
                temperature: float = 1.0, dtype: str = "float16", shard_size: int = 16384,
                batch_size: int = 512, transform_fingerprint: str = "none",
                features: dict[str, str] | None = None, mode: str = "renormalized",
                overwrite: bool = False, device: torch.device | str | None = None,
                progress: bool = True, precision: str = "fp32") -> TeacherCache:
    """Run ``teacher`` once over ``dataset`` (in order) and store its outputs at ``path``.

    Args:
        k: None stores dense logits; an int stores the top-k logits, their class ids and the
            log tail mass at ``temperature``.
        temperature: the temperature of the stored tail mass (top-k caches; mode "tail" of
            the losses needs the same T). Dense caches store raw logits.
        dtype: "float16", "bfloat16" (stored as uint16 bits) or "float32", for logits and
            features; the tail mass is float32.
        shard_size: samples per shard file; batch_size: samples per teacher forward.
        transform_fingerprint: must be "none" (see the module docstring: cached outputs would
            be wrong under random augmentation).
        features: {name: dotted module path}; each module's output is captured with a forward
            hook and stored flattened, per sample.
        mode: the mode of the returned cache's SparseTeacher lookups.
        overwrite: replace an existing cache at ``path`` that does not match, or that matches but
            whose files fail their checksums (all are verified first). Only a teacher cache
            distill made (or an empty folder) is ever replaced; anything else at ``path`` is
            refused with CacheFolderError (see "Ownership and overwrite" above).
        device: where to run the teacher (default: where its parameters are).
        precision: the teacher's forward: "fp32", or "bf16" / "fp16" autocast (what a run's
            ``train.mixed_precision`` resolves to; outputs are stored from fp32). Recorded in the
            manifest as ``precision``; not part of the cache's identity, so a cache built at one
            precision serves runs at another (the difference is of the order of float16 storage).

    Returns the opened cache. A matching finished cache at ``path`` is returned without running
    the teacher; a matching ``<path>.partial`` is resumed.
    """
    path = Path(path)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"build_cache: k must be None (dense) or an int >= 1, got {k!r}")
    _check_build_arguments("build_cache", path, temperature=temperature, dtype=dtype, shard_size=shard_size,
                           batch_size=batch_size, mode=mode, precision=precision)
    if transform_fingerprint != "none":
        raise CacheError(f"build_cache: transform {transform_fingerprint!r} is treated as random augmentation: the "
                         "teacher would see different inputs every epoch, so stored outputs would be wrong. Cache "
                         "teacher outputs only for runs without augmentation (transform_fingerprint='none'), or "
                         "train with the live teacher")
    if len(dataset) == 0:
        raise ValueError(f"build_cache: {dataset.name}/{dataset.split} has no samples")
    hooked = _resolve_features(teacher, features)
    config = {
        "teacher_fingerprint": weights_fingerprint(teacher),
        "dataset_fingerprint": dataset.fingerprint(),
        "dataset_name": dataset.name,
        "dataset_split": dataset.split,
        "num_samples": len(dataset),
        "transform_fingerprint": transform_fingerprint,
        "k": k,
        "temperature": float(temperature),
        "dtype": dtype,
        "features": dict(features or {}),
        "shard_size": shard_size,
        "version": VERSION,
        "precision": precision,
    }

    existing = _existing_cache(path, config, mode, overwrite)
    if existing is not None:
        return existing

    partial = _partial_path(path)
    done: dict[int, dict[str, Any]] | None = None
    _check_replaceable(partial, "unfinished teacher cache")  # a .partial must be ours to resume or discard
    if partial.is_dir():
        done = _load_progress(partial, config)
        if done is None:
            _remove_cache_folder(partial, "unfinished teacher cache")
    if done is None:
        partial.mkdir(parents=True)
        _write_json(partial / PROGRESS, config)
        done = {}
    mark_owned(partial, OWNED_KIND)  # also a resumed .partial made before markers existed
    for stale in partial.glob(".*.tmp"):  # from a hard crash mid-shard
        stale.unlink()

    num_shards = math.ceil(len(dataset) / shard_size)
    missing = [shard for shard in range(num_shards) if shard not in done]
    known = next(iter(done.values()), None)  # shapes from a finished shard, checked against new ones
    if missing:
        known = _run_teacher(teacher, dataset, partial, missing, hooked, config, known, batch_size,
                             device, progress, path.name)
        done.update(known["shards"])
    return _finalise(path, partial, config, done, known, mode, overwrite, teacher)


def _existing_cache(path: Path, config: dict[str, Any], mode: str, overwrite: bool) -> TeacherCache | None:
    """The finished cache at ``path`` when it matches the build ``config``; else None once replacing it
    is allowed (``overwrite`` and it is a teacher cache distill made), or CacheError naming each difference."""
    if path.exists():
        if (path / MANIFEST).is_file():
            try:
                existing = open_cache(path, mode=mode)
                lines = _differences(_identity(existing.manifest), _identity(config), "this build")
                if not lines and overwrite:  # --overwrite also replaces a matching cache whose bytes changed
                    existing.verify()
            except CacheError as exc:
                existing, lines = None, [f"  - the cache is unreadable: {exc}"]
            if existing is not None and existing.manifest.get("kind", "sample") != config.get("kind", "sample"):
                lines.append(f"  - kind: the cache holds {existing.manifest.get('kind', 'sample')} outputs, this build "
                             f"{config.get('kind', 'sample')} outputs")
            if not lines and existing is not None:
                return existing
            if not overwrite:
                raise CacheError(f"a teacher cache at {path} exists but does not match this build:\n" + "\n".join(lines)
                                 + "\nPass overwrite=True (`distill cache --overwrite`) to replace it, or choose another path.")
        elif not overwrite:
            raise CacheError(f"{path} exists and is not a teacher cache (no {MANIFEST}); remove it or choose another "
                             "path (overwrite=True replaces only an empty folder or a cache distill made)")
    if path.exists() or path.is_symlink():  # overwrite: refuse now, before the teacher runs, if it is not a cache
        _check_replaceable(path, "teacher cache path")
    return None


def _run_teacher(teacher: nn.Module, dataset: ArrayDataset, partial: Path, shards: list[int],
                 hooked: dict[str, nn.Module], config: dict[str, Any], known: dict[str, Any] | None,
                 batch_size: int, device: torch.device | str | None, progress: bool, label: str) -> dict[str, Any]:
    """Compute and write ``shards``; return the shapes seen and the new shards' markers."""
    from tqdm.auto import tqdm

    k, temperature, dtype, shard_size = config["k"], config["temperature"], config["dtype"], config["shard_size"]
    device = torch.device(device) if device is not None else _teacher_device(teacher)
    shapes = None if known is None else {"num_classes": known["num_classes"], "features": known["features"]}
    from distill.taps import Taps  # the one hook mechanism (features and quantization use it too)

    module_paths = {id(module): path for path, module in teacher.named_modules()}
    taps = Taps(teacher, {name: module_paths[id(module)] for name, module in hooked.items()}) if hooked else None
    captured: dict[str, Any] = taps.values if taps is not None else {}  # cleared by the taps at each forward
    was_training = teacher.training
    teacher.eval()
    total = sum(min(shard_size, len(dataset) - shard * shard_size) for shard in shards)
    bar = tqdm(total=total, desc=f"teacher cache {label}", unit="sample", disable=not progress, leave=False)
    new_shards: dict[int, dict[str, Any]] = {}
    try:
        for shard in shards:
            start, stop = shard * shard_size, min((shard + 1) * shard_size, len(dataset))
            writers: dict[str, np.ndarray] = {}
            nonfinite: dict[str, list[int]] = {}  # what -> sample ids, over the whole shard
            try:
                for begin in range(start, stop, batch_size):
                    end = min(begin + batch_size, stop)
                    with torch.inference_mode(), teacher_autocast(config.get("precision", "fp32"), device):
                        output = teacher(dataset.inputs[begin:end].to(device))
                    arrays = _batch_arrays(output, captured, hooked, k, temperature, dtype, end - begin,
                                           f"samples {begin}..{end - 1}", begin)
                    for what, ids in arrays.pop("__nonfinite__").items():
                        nonfinite.setdefault(what, []).extend(ids)
                    observed = {"num_classes": arrays.pop("__num_classes__"),
                                "features": {name: list(captured_shape) for name, captured_shape
                                             in arrays.pop("__feature_shapes__").items()}}
                    if shapes is None:
                        shapes = observed
                    elif observed != shapes:
                        raise CacheError(f"teacher outputs for samples {begin}..{end - 1} have shapes {observed}, "
                                         f"earlier ones {shapes}; a cache needs one shape per output")
                    if not writers:
                        for name, array in arrays.items():
                            tmp = partial / f".{_shard_file(name, shard)}.tmp"
                            writers[name] = open_memmap(tmp, mode="w+", dtype=array.dtype,
                                                        shape=(stop - start, *array.shape[1:]))
                    for name, array in arrays.items():
                        writers[name][begin - start:end - start] = array
                    bar.update(end - begin)
                if nonfinite:
                    raise CacheError(_nonfinite_message(nonfinite, shard, start, stop))
                files, checksums = {}, {}
                for writer in writers.values():
                    writer.flush()
                names = list(writers)
                writers.clear()  # unmaps the files before they are renamed
                for name in names:
                    tmp = partial / f".{_shard_file(name, shard)}.tmp"
                    with open(tmp, "rb+") as handle:
                        os.fsync(handle.fileno())
                    os.replace(tmp, partial / _shard_file(name, shard))
                    files[_shard_file(name, shard)] = stop - start
                    checksums[_shard_file(name, shard)] = sha256_file(partial / _shard_file(name, shard))
                writers.clear()
                _fsync_dir(partial)
                marker = {"shard": shard, "start": start, "rows": stop - start, "files": files,
                          "sha256": checksums, **shapes}
                _write_json(partial / _marker(shard), marker)
                new_shards[shard] = marker
            except BaseException:
                writers.clear()
                for stale in partial.glob(f".*-{shard:05d}.npy.tmp"):
                    stale.unlink(missing_ok=True)
                raise
    finally:
        if taps is not None:
            taps.remove()
        teacher.train(was_training)
        bar.close()
    return {**shapes, "shards": new_shards}


def _nonfinite_rows(values: Tensor, first: int) -> list[int]:
    """Sample ids (rows are samples ``first``, ``first + 1``, ...) whose row holds a NaN or an inf."""
    finite = torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
    return [] if bool(finite.all()) else ((~finite).nonzero().flatten() + first).tolist()


def _nonfinite_message(nonfinite: dict[str, list[int]], shard: int, start: int, stop: int, limit: int = 10) -> str:
    parts = []
    for what, ids in nonfinite.items():
        shown = ", ".join(str(i) for i in ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
        parts.append(f"{what} for sample id(s) {shown}")
    return (f"the teacher's outputs are not finite (NaN or inf) in shard {shard} (samples {start}..{stop - 1}): "
            f"{'; '.join(parts)}. A cache of them would poison every student trained on it, so this shard was not "
            "written and the build stopped (finished shards are kept). Check the teacher (its weights, its dtype, "
            "or inputs that overflow it) and build again")


def _batch_arrays(output: Any, captured: dict[str, Any], hooked: dict[str, nn.Module], k: int | None,
                  temperature: float, dtype: str, rows: int, where: str, first: int = 0) -> dict[str, Any]:
    """One batch's teacher outputs (samples ``first``, ``first + 1``, ...) as numpy arrays in their stored dtypes.

    ``"__nonfinite__"`` maps each output holding NaN or inf to the sample ids of those rows.
    """
    logits = getattr(output, "logits", output)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != rows:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise CacheError(f"teacher output for {where} must be logits of shape ({rows}, C), got {shape}")
    logits = logits.detach().float()
    num_classes = logits.shape[1]
    arrays: dict[str, Any] = {}
    nonfinite = {"logits": bad} if (bad := _nonfinite_rows(logits, first)) else {}
    if nonfinite:  # stored as zeros (never written: the shard is refused); keeps top-k and dtype checks quiet
        logits = torch.nan_to_num(logits, nan=0.0, posinf=0.0, neginf=0.0)
    if k is None:
        arrays["logits"] = _encode(logits, dtype, f"teacher logits for {where}")
    else:
        if k > num_classes:
            raise CacheError(f"build_cache: k={k} is larger than the teacher's {num_classes} classes")
        sparse = SparseTeacher.from_dense(logits, k, temperature=temperature)
        arrays["values"] = _encode(sparse.values, dtype, f"teacher logits for {where}")
        arrays["indices"] = sparse.indices.cpu().numpy().astype(index_dtype(num_classes))
        arrays["log_tail"] = sparse.log_tail.cpu().numpy().astype(np.float32)
    feature_shapes = {}
    for name in hooked:
        value = captured.get(name)
        if not isinstance(value, Tensor) or value.dim() < 1 or value.shape[0] != rows:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CacheError(f"feature {name!r}: the module's output for {where} must be a tensor of shape "
                             f"({rows}, ...), got {got}")
        feature_shapes[name] = tuple(value.shape[1:])
        value = value.detach().float()
        if bad := _nonfinite_rows(value, first):
            nonfinite[f"feature {name!r}"] = bad
            value = torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)
        arrays[f"feature.{name}"] = _encode(value.reshape(rows, -1), dtype, f"feature {name!r} for {where}")
    arrays["__nonfinite__"] = nonfinite
    arrays["__num_classes__"] = num_classes
    arrays["__feature_shapes__"] = feature_shapes
    return arrays


def _finalise(path: Path, partial: Path, config: dict[str, Any], done: dict[int, dict[str, Any]],
              shapes: dict[str, Any], mode: str, overwrite: bool, teacher: nn.Module) -> TeacherCache:
    """Write the manifest, rename ``.partial`` to ``path``, drop the build's bookkeeping files."""
    k, dtype, num_classes = config["k"], config["dtype"], shapes["num_classes"]
    storage = _storage_dtype(dtype)
    arrays: dict[str, dict[str, Any]] = {}
    if k is None:
        arrays["logits"] = {"storage": storage.str, "encoding": dtype, "row_shape": [num_classes]}
    else:
        arrays["values"] = {"storage": storage.str, "encoding": dtype, "row_shape": [k]}
        arrays["indices"] = {"storage": index_dtype(num_classes).str, "encoding": "class ids", "row_shape": [k]}
        arrays["log_tail"] = {"storage": np.dtype(np.float32).str, "encoding": "float32", "row_shape": []}
    features = {}
    for name, module_path in config["features"].items():
        shape = list(shapes["features"][name])
        features[name] = {"path": module_path, "shape": shape}
        arrays[f"feature.{name}"] = {"storage": storage.str, "encoding": dtype,
                                     "row_shape": [int(np.prod(shape, dtype=np.int64))]}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        **{key: config[key] for key in IDENTITY},
        "features": features,
        "num_classes": num_classes,
        "index_dtype": None if k is None else index_dtype(num_classes).name,
        "shard_size": config["shard_size"],
        "precision": config.get("precision", "fp32"),
        "shards": [{"index": shard, "start": done[shard]["start"], "rows": done[shard]["rows"]} for shard in sorted(done)],
        "arrays": arrays,
        "sha256": {file: digest for shard in sorted(done) for file, digest in sorted(done[shard]["sha256"].items())},
        "teacher_class": type(teacher).__name__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _install(path, partial, manifest, overwrite)
    return TeacherCache(path, manifest, mode=mode)


def _install(path: Path, partial: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Write ``manifest`` into the finished ``partial`` build and rename it to ``path`` (replacing, with
    ``overwrite``, only a teacher cache distill made); drop the build's bookkeeping files."""
    _write_json(partial / MANIFEST, manifest)
    _fsync_dir(partial)
    if path.exists() or path.is_symlink():
        if not overwrite:  # appeared while we were building
            raise CacheError(f"{path} appeared while the cache was being built; the finished build is in {partial}")
        _check_replaceable(path, "teacher cache path")  # again: it may have changed while the teacher ran
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        number = 0
        while old.exists() or old.is_symlink():  # never rename onto (and so replace) something else
            number += 1
            old = path.with_name(f"{path.name}.old-{os.getpid()}-{number}")
        os.rename(path, old)
        os.rename(partial, path)
        _remove_cache_folder(old, "replaced teacher cache")
    else:
        os.rename(partial, path)
    _fsync_dir(path.parent)
    for bookkeeping in (*path.glob("shard-*.done"), path / PROGRESS):
        bookkeeping.unlink(missing_ok=True)
