"""Cached teacher token logits: per valid token, the teacher's top-k logits, their ids and its tail mass.

A teacher too big to run beside the student is run once, ahead, over the training sequences;
students then train from disk (``distill.distil(None, student, train, task="token", cache=path)``).

>>> cache = build_token_cache(teacher, train, "runs/cache/gloss-k32", k=32)    # runs the teacher once
>>> cache.bytes_per_token                                                        # 132.0 for k=32, fp16, 32k vocab
>>> cache[batch["index"]]                        # TokenTeacher: (N valid tokens, k) rows for the batch

A token cache is a teacher cache (:mod:`distill.data.cache`: the same folder, manifest written
last, ownership marker, sha256 of every shard file checked on first read, refusal of another
teacher's / data set's / setting's cache naming each difference, atomic build into ``.partial``
with resume, no non-finite value ever stored) whose rows are tokens instead of samples::

    <path>/values-00000.npy     (tokens, k) the teacher's k largest logits (raw) at each valid position,
                                float16 | bfloat16 (as uint16 bits) | float32
    <path>/indices-00000.npy    (tokens, k) their token ids, uint8 | int16 | uint16 | int32 by vocabulary
    <path>/log_tail-00000.npy   (tokens,) float32: log of the teacher's probability mass outside the
                                top-k at the cache's temperature (one number per token)
    <path>/offsets-00000.npy    (samples + 1,) int64: sample ``s`` of the shard owns token rows
                                ``offsets[s]:offsets[s + 1]``

The manifest says ``"kind": "token"`` (``open_cache`` then gives a :class:`TokenTeacherCache`),
``num_tokens``, ``bytes_per_token`` and ``mode`` (default ``"tail"``: the losses compare k + 1
buckets, the k kept ids and one bucket for the rest, see :mod:`distill.losses.logits`).

Valid positions. Position ``i`` of a sequence carries a token loss when ``labels[i + 1] != -100``
(labels as the token task makes them: padding and masked prompts are -100). Only those positions
are stored, in row-major (sequence, position) order: the order in which the token task walks the
valid positions, so a lookup lines up with a batch without storing positions. A lookup is checked
against the batch (the token task compares each sequence's stored count with its valid positions).

Bytes per token: ``k x (value bytes + id bytes) + 4`` plus 8 bytes of offsets per sequence; at
k = 32, float16 and a 32k vocabulary (uint16 ids) 132 bytes (DistillKit stores about 300).
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from distill.losses.sparse import SparseTeacher
from distill.safety import mark_owned, sha256_file

from .cache import (FORMAT, IDENTITY, OWNED_KIND, PROGRESS, VERSION, CacheError, TeacherCache, _check_build_arguments,
                    teacher_autocast,
                    _check_replaceable, _decode, _encode, _existing_cache, _fsync_dir, _install, _load_progress,
                    _marker, _partial_path, _remove_cache_folder, _shard_file, _storage_dtype, _teacher_device,
                    _write_json, index_dtype, weights_fingerprint)

@dataclass
class TokenTeacher:
    """The teacher's top-k outputs for the valid tokens of a batch of sequences.

    Attributes:
        sparse: a :class:`SparseTeacher` over ``N`` token positions: ``values`` / ``indices`` (N, k),
            ``log_tail`` (N,); the rows of sequence 0's valid positions (in position order), then
            sequence 1's, and so on.
        counts: (B,) int64, the valid tokens of each sequence; ``counts.sum() == N``.
        vocab_size: the teacher's vocabulary V (ids lie in ``[0, V)``).
    """

    sparse: SparseTeacher
    counts: Tensor
    vocab_size: int

    def __post_init__(self) -> None:
        if self.sparse.values.ndim != 2:
            raise ValueError(f"TokenTeacher: sparse rows must be (N, k), got {tuple(self.sparse.values.shape)}")
        if self.counts.ndim != 1 or int(self.counts.sum()) != self.sparse.values.shape[0]:
            raise ValueError(f"TokenTeacher: counts {self.counts.tolist()} must be (B,) summing to the "
                             f"{self.sparse.values.shape[0]} token rows")

    @property
    def num_tokens(self) -> int:
        return self.sparse.values.shape[0]

    @property
    def k(self) -> int:
        return self.sparse.k

    def rows(self, start: int, stop: int) -> SparseTeacher:
        """Token rows ``start:stop`` as a SparseTeacher over ``stop - start`` positions (views)."""
        sparse = self.sparse
        return SparseTeacher(sparse.values[start:stop], sparse.indices[start:stop],
                             None if sparse.log_tail is None else sparse.log_tail[start:stop],
                             sparse.tail_temperature, sparse.mode)

    def to(self, device: torch.device | str) -> "TokenTeacher":
        return TokenTeacher(self.sparse.to(device), self.counts.to(device), self.vocab_size)

    @classmethod
    def from_logits(cls, logits: Tensor, valid: Tensor, k: int, *, temperature: float = 1.0,
                    mode: str = "tail", chunk_size: int = 1024) -> "TokenTeacher":
        """The top-k + tail of ``logits`` (B, L, V) at the positions where ``valid`` (B, L) is True,
        ``chunk_size`` positions at a time (no (N, V) float32 copy of all of them at once)."""
        if logits.ndim != 3 or valid.shape != logits.shape[:2]:
            raise ValueError(f"TokenTeacher.from_logits: logits (B, L, V) and valid (B, L), got "
                             f"{tuple(logits.shape)} and {tuple(valid.shape)}")
        rows = valid.reshape(-1).nonzero().squeeze(1)
        flat = logits.reshape(-1, logits.shape[-1])
        parts = [SparseTeacher.from_dense(flat[rows[start:start + chunk_size]].float(), k, temperature=temperature)
                 for start in range(0, len(rows), chunk_size)]
        if not parts:  # no valid token: empty rows
            empty = flat[:0].float()
            values, indices, log_tail = empty[:, :k], torch.zeros((0, k), dtype=torch.long, device=flat.device), empty[:, 0]
        else:
            values = torch.cat([part.values for part in parts])
            indices = torch.cat([part.indices for part in parts])
            log_tail = torch.cat([part.log_tail for part in parts])
        sparse = SparseTeacher(values, indices, log_tail, float(temperature), mode)
        return cls(sparse, valid.sum(1).long(), int(logits.shape[-1]))


# ----------------------------------------------------------------------------- reading
class TokenTeacherCache(TeacherCache):
    """A finished token cache, memory-mapped (:func:`build_token_cache`, or ``open_cache`` of its folder).

    ``lookup(ids)`` / ``cache[ids]`` with ids (B,) sample ids gives a :class:`TokenTeacher` of the
    sequences' stored tokens, in the order of ``ids``, on the ids' device.
    """

    def __init__(self, path: str | Path, manifest: dict[str, Any], *, mode: str = "tail") -> None:
        super().__init__(path, manifest, mode=mode)
        self.num_tokens: int = int(manifest["num_tokens"])
        self._offsets: dict[int, np.ndarray] = {}

    @property
    def bytes_per_token(self) -> float:
        """Bytes on disk of the array files (offsets and ``.npy`` headers included) per stored token."""
        total = sum(file.stat().st_size for file in self.path.glob("*.npy"))
        return total / max(self.num_tokens, 1)

    def __repr__(self) -> str:
        return (f"TokenTeacherCache({str(self.path)!r}, top-{self.k} ({self.mode}), {self.num_samples} sequences, "
                f"{self.num_tokens} tokens x vocabulary {self.num_classes}, {self.dtype}, "
                f"{self.bytes_per_token:.1f} bytes/token)")

    def _shard_offsets(self, shard: int) -> np.ndarray:
        if shard not in self._offsets:
            self._verify("offsets", shard)
            self._offsets[shard] = np.asarray(self._arrays["offsets"][shard], dtype=np.int64)
        return self._offsets[shard]

    def lookup(self, indices: Tensor | np.ndarray | list[int], *, mode: str | None = None) -> TokenTeacher:
        """The stored tokens of sequences ``indices`` (B,): a TokenTeacher with (N, k) rows, N = their tokens."""
        ids, shape, device = self._ids(indices)
        if len(shape) != 1:
            raise ValueError(f"token cache {self.path}: lookups take a 1-D batch of sample ids, got shape {shape}")
        shards = ids // self.shard_size
        local = ids - shards * self.shard_size
        starts = np.empty(len(ids), dtype=np.int64)
        counts = np.empty(len(ids), dtype=np.int64)
        for shard in np.unique(shards):
            offsets = self._shard_offsets(int(shard))
            here = shards == shard
            starts[here] = offsets[local[here]]
            counts[here] = offsets[local[here] + 1] - offsets[local[here]]
        destination = np.concatenate([[0], np.cumsum(counts)])
        out = {name: np.empty((int(destination[-1]), *self._arrays[name][0].shape[1:]),
                              dtype=self._arrays[name][0].dtype) for name in ("values", "indices", "log_tail")}
        for shard in np.unique(shards):
            members = np.flatnonzero(shards == shard)
            source = np.concatenate([np.arange(starts[m], starts[m] + counts[m]) for m in members])
            target = np.concatenate([np.arange(destination[m], destination[m + 1]) for m in members])
            for name, array in out.items():
                self._verify(name, int(shard))
                array[target] = self._arrays[name][int(shard)][source]
        values = _decode(out["values"], self.dtype)
        token_ids = torch.from_numpy(out["indices"].astype(np.int64))
        log_tail = torch.from_numpy(out["log_tail"])
        sparse = SparseTeacher(values, token_ids, log_tail, float(self.temperature), mode or self.mode).to(device)
        return TokenTeacher(sparse, torch.from_numpy(counts).to(device), self.num_classes)

    __getitem__ = lookup

    def lookup_features(self, name: str, indices: Tensor | np.ndarray | list[int]) -> Tensor:
        raise KeyError(f"token cache {self.path} stores no features (token caches hold top-k logits only)")


# ----------------------------------------------------------------------------- building
def _take(inputs: Any, begin: int, end: int) -> Any:
    if isinstance(inputs, dict):
        return {key: value[begin:end] for key, value in inputs.items()}
    return inputs[begin:end]


def _to(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, dict):
        return {key: value.to(device) for key, value in inputs.items()}
    return inputs.to(device)


def _valid_positions(inputs: Any, targets: Tensor | None) -> Tensor:
    """(b, L) bool: the positions that carry a token loss (the token task's labels, shifted)."""
    from distill.tasks.token import IGNORE_INDEX, next_token_labels, token_labels

    labels = token_labels({"input": inputs, "target": targets})
    return next_token_labels(labels) != IGNORE_INDEX


def build_token_cache(teacher: nn.Module, dataset: Any, path: str | Path, *, k: int = 32, temperature: float = 1.0,
                      dtype: str = "float16", shard_size: int = 256, batch_size: int = 8, mode: str = "tail",
                      overwrite: bool = False, device: torch.device | str | None = None,
                      progress: bool = True, report: Callable[[str], None] | None = print,
                      precision: str = "fp32") -> TokenTeacherCache:
    """Run the causal LM ``teacher`` once over ``dataset``'s sequences and store, per valid token, its
    top-k logits, their ids and its tail mass at ``path``.

    Args:
        teacher: a causal LM: ``teacher(**inputs)`` gives (b, L, V) logits (or a ModelOutput with them).
        dataset: token data (a :class:`distill.data.TensorData` such as :func:`distill.llm.packed_text_data`
            gives: inputs ``{"input_ids", "attention_mask"[, "loss_mask"]}`` (N, L), sample ids = rows).
        k: ids kept per token (1 <= k <= V; k = V keeps all, and the losses equal the dense ones).
        temperature: the temperature of the stored tail mass (mode "tail" needs the loss at this T).
        dtype: "float16", "bfloat16" or "float32" for the logits (the tail mass is float32).
        shard_size: sequences per shard file; batch_size: sequences per teacher forward.
        mode: the returned cache's lookup mode ("tail": k + 1 buckets; "renormalized": the k ids).
        overwrite: replace a cache at ``path`` that does not match (only a teacher cache distill made).
        report: called with one line giving tokens, bytes per token and size (None: silent).
        precision: the teacher's forward, "fp32" or "bf16" / "fp16" autocast (logits kept from fp32);
            recorded in the manifest, not part of the identity (see :func:`distill.data.build_cache`).

    Returns the opened cache (a matching finished cache is returned without running the teacher; a
    matching ``<path>.partial`` is resumed). Its manifest records ``bytes_per_token``.
    """
    path = Path(path)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"build_token_cache: k must be an int >= 1 (token ids kept per position), got {k!r}")
    _check_build_arguments("build_token_cache", path, temperature=temperature, dtype=dtype, shard_size=shard_size,
                           batch_size=batch_size, mode=mode, precision=precision)
    fingerprint = getattr(dataset, "fingerprint", None)
    if not callable(fingerprint) or not hasattr(dataset, "inputs"):
        raise CacheError(f"build_token_cache: {type(dataset).__name__} is not an in-memory token data set; give a "
                         "distill.data.TensorData (distill.llm.packed_text_data / prompt_response_data make one)")
    if len(dataset) == 0:
        raise ValueError(f"build_token_cache: {dataset.name}/{dataset.split} has no samples")
    config = {
        "teacher_fingerprint": weights_fingerprint(teacher), "dataset_fingerprint": fingerprint(),
        "dataset_name": dataset.name, "dataset_split": dataset.split, "num_samples": len(dataset),
        "transform_fingerprint": "none", "k": k, "temperature": float(temperature), "dtype": dtype,
        "features": {}, "shard_size": shard_size, "version": VERSION, "kind": "token",
        "precision": precision,
    }
    existing = _existing_cache(path, config, mode, overwrite)
    if existing is not None:
        return existing

    partial = _partial_path(path)
    _check_replaceable(partial, "unfinished teacher cache")
    done = _load_progress(partial, config) if partial.is_dir() else None
    if done is None:
        _remove_cache_folder(partial, "unfinished teacher cache")
        partial.mkdir(parents=True)
        _write_json(partial / PROGRESS, config)
        done = {}
    mark_owned(partial, OWNED_KIND)
    for stale in partial.glob(".*.tmp"):
        stale.unlink()
    num_shards = math.ceil(len(dataset) / shard_size)
    missing = [shard for shard in range(num_shards) if shard not in done]
    if missing:
        done.update(_run_token_teacher(teacher, dataset, partial, missing, config, batch_size, device, progress,
                                       path.name))
    vocab = next(iter(done.values()))["num_classes"]
    cache = _finalise_tokens(path, partial, config, done, vocab, mode, overwrite, teacher)
    if report is not None:
        report(f"token cache {path}: {cache.num_tokens:,} tokens of {cache.num_samples:,} sequences, top-{k} of "
               f"{vocab:,} ids in {dtype}: {cache.bytes_per_token:.1f} bytes/token, {cache.nbytes / 2**20:.1f} MiB")
    return cache


def _run_token_teacher(teacher: nn.Module, dataset: Any, partial: Path, shards: list[int], config: dict[str, Any],
                       batch_size: int, device: torch.device | str | None, progress: bool,
                       label: str) -> dict[int, dict[str, Any]]:
    """Compute and write ``shards``; return their markers (rows, tokens, files, checksums, vocabulary)."""
    from tqdm.auto import tqdm

    from distill.core.io import call_model, logits_of

    k, temperature, dtype, shard_size = config["k"], config["temperature"], config["dtype"], config["shard_size"]
    device = torch.device(device) if device is not None else _teacher_device(teacher)
    targets = getattr(dataset, "targets", None)
    targets = targets if isinstance(targets, Tensor) and targets.ndim == 2 else None  # (N, L) labels, if given
    was_training = teacher.training
    teacher.eval()
    total = sum(min(shard_size, len(dataset) - shard * shard_size) for shard in shards)
    bar = tqdm(total=total, desc=f"token cache {label}", unit="seq", disable=not progress, leave=False)
    markers: dict[int, dict[str, Any]] = {}
    vocab = None
    try:
        for shard in shards:
            start, stop = shard * shard_size, min((shard + 1) * shard_size, len(dataset))
            parts: dict[str, list[np.ndarray]] = {"values": [], "indices": [], "log_tail": []}
            counts = []
            for begin in range(start, stop, batch_size):
                end = min(begin + batch_size, stop)
                inputs = _take(dataset.inputs, begin, end)
                valid = _valid_positions(inputs, None if targets is None else targets[begin:end])
                with torch.inference_mode(), teacher_autocast(config["precision"], device):
                    logits = logits_of(call_model(teacher, _to(inputs, device)), who="the teacher").float()
                if logits.ndim != 3 or logits.shape[:2] != valid.shape:
                    raise CacheError(f"the teacher's logits for samples {begin}..{end - 1} are {tuple(logits.shape)}; "
                                     f"a causal LM gives (batch, length, vocabulary) = ({end - begin}, "
                                     f"{valid.shape[1]}, V)")
                if vocab is None:
                    vocab = int(logits.shape[-1])
                    if k > vocab:
                        raise CacheError(f"build_token_cache: k={k} is larger than the teacher's vocabulary of {vocab}")
                valid = valid.to(logits.device)
                rows = logits[valid]
                finite = torch.isfinite(rows).all(-1)
                if not bool(finite.all()):
                    owners = valid.nonzero()[~finite][:, 0].unique() + begin
                    raise CacheError(f"the teacher's logits are not finite (NaN or inf) for sample id(s) "
                                     f"{owners.tolist()[:10]} in shard {shard}; a cache of them would poison every "
                                     "student trained on it, so the shard was not written (finished shards are "
                                     "kept). Check the teacher (its weights, its dtype) and build again")
                rows_teacher = TokenTeacher.from_logits(logits, valid, k, temperature=temperature).sparse
                where = f"teacher logits for samples {begin}..{end - 1}"
                parts["values"].append(_encode(rows_teacher.values, dtype, where))
                parts["indices"].append(rows_teacher.indices.cpu().numpy().astype(index_dtype(vocab)))
                parts["log_tail"].append(rows_teacher.log_tail.cpu().numpy().astype(np.float32))
                counts.append(valid.sum(1).cpu().numpy().astype(np.int64))
                bar.update(end - begin)
            arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
            arrays["offsets"] = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
            files, checksums = {}, {}
            for name, array in arrays.items():
                file = _shard_file(name, shard)
                tmp = partial / f".{file}.tmp"
                with open(tmp, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, partial / file)
                files[file] = len(array)
                checksums[file] = sha256_file(partial / file)
            _fsync_dir(partial)
            marker = {"shard": shard, "start": start, "rows": stop - start, "tokens": int(arrays["offsets"][-1]),
                      "files": files, "sha256": checksums, "num_classes": vocab}
            _write_json(partial / _marker(shard), marker)
            markers[shard] = marker
    finally:
        teacher.train(was_training)
        bar.close()
    return markers


def _finalise_tokens(path: Path, partial: Path, config: dict[str, Any], done: dict[int, dict[str, Any]], vocab: int,
                     mode: str, overwrite: bool, teacher: nn.Module) -> TokenTeacherCache:
    k, dtype = config["k"], config["dtype"]
    storage = _storage_dtype(dtype)
    arrays = {
        "values": {"storage": storage.str, "encoding": dtype, "row_shape": [k], "per": "token"},
        "indices": {"storage": index_dtype(vocab).str, "encoding": "token ids", "row_shape": [k], "per": "token"},
        "log_tail": {"storage": np.dtype(np.float32).str, "encoding": "float32", "row_shape": [], "per": "token"},
        "offsets": {"storage": np.dtype(np.int64).str, "encoding": "token row offsets", "row_shape": [],
                    "per": "sample+1"},
    }
    num_tokens = sum(int(done[shard]["tokens"]) for shard in done)
    array_bytes = sum(os.path.getsize(partial / file) for shard in done for file in done[shard]["files"])
    manifest = {
        "format": FORMAT, "version": VERSION, "kind": "token", "mode": mode,
        **{key: config[key] for key in IDENTITY},
        "num_classes": vocab, "index_dtype": index_dtype(vocab).name, "shard_size": config["shard_size"],
        "precision": config["precision"],
        "shards": [{"index": shard, "start": done[shard]["start"], "rows": done[shard]["rows"],
                    "tokens": done[shard]["tokens"]} for shard in sorted(done)],
        "arrays": arrays,
        "sha256": {file: digest for shard in sorted(done) for file, digest in sorted(done[shard]["sha256"].items())},
        "num_tokens": num_tokens,
        "bytes_per_token": array_bytes / max(num_tokens, 1),
        "bytes_per_token_nominal": k * (storage.itemsize + index_dtype(vocab).itemsize) + 4,
        "teacher_class": type(teacher).__name__, "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _install(path, partial, manifest, overwrite)
    return TokenTeacherCache(path, manifest, mode=mode)


__all__ = ["TokenTeacher", "TokenTeacherCache", "build_token_cache"]
