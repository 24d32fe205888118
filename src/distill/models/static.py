"""A static (lookup-table) sentence encoder distilled from a transformer, as Model2Vec does.

Cross-architecture distillation, transformer -> table: every vocabulary token is embedded *alone*
by the teacher (``[CLS] token [SEP]`` through the whole encoder, pooled), the table is reduced
with PCA to ``dim`` columns, and a sentence is the weighted mean of its tokens' rows:

    e(s) = P( sum_t w_t E[t] / sum_t w_t ),   w_t = a / (a + p(t))   (SIF; Arora et al. 2017)

with ``p(t)`` the token's frequency in a corpus (else Zipf's ``log(1 + rank)``, Model2Vec's
default), special and padding tokens left out, and ``P`` an optional linear map back to the
teacher's width (initialised with the PCA components, so P(E[t]) starts as the PCA
reconstruction of the teacher's vector). Tukker, Dekker et al. (2024), "Model2Vec: fast
state-of-the-art static embeddings", github.com/MinishLab/model2vec. The table can then be
fine-tuned to the teacher's sentence embeddings with ``distill.distil(..., task="embedding")``.

A forward pass is an embedding gather and a masked mean: no attention, no matmul over the
sequence, so it runs orders of magnitude faster than the teacher (the tokenizer dominates).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from distill.models import MODELS
from distill.models.utils import check_size


@MODELS.register("static_embedding")
class StaticEmbedding(nn.Module):
    """(B, L) token ids (+ attention mask) -> (B, D) sentence embeddings from a table of token vectors.

    Args:
        input_shape: ``(max_length,)`` of its token batches (recorded for export).
        num_classes: ignored; the config records the output width D here, so the registry can rebuild it.
        vocab_size: V, the tokenizer's vocabulary size.
        dim: width of the table (after PCA).
        out_dim: width of the output; with ``out_dim`` a linear map ``dim -> out_dim`` follows the mean.
        ignore_ids: ids never pooled (the tokenizer's [CLS], [SEP], [PAD] ...).
        normalize: L2-normalise the output (as sentence-transformers' Normalize module).

    Module paths: ``embed`` (V, dim), ``project`` (out_dim, dim) when ``out_dim`` is set; buffer
    ``token_weights`` (V,) holds each token's pooling weight (0 for ignored ids).
    """

    def __init__(self, input_shape=(128,), num_classes=None, *, vocab_size: int, dim: int = 256,
                 out_dim: int | None = None, ignore_ids: Sequence[int] = (0,), normalize: bool = True):
        super().__init__()
        check_size("vocab_size", vocab_size, "the tokenizer's vocabulary size (an integer >= 1)")
        check_size("dim", dim, "the table width must be an integer >= 1")
        if out_dim is not None:
            check_size("out_dim", out_dim, "the output width must be an integer >= 1 (or None)")
        ignore_ids = [int(i) for i in ignore_ids]
        if any(not 0 <= i < vocab_size for i in ignore_ids):
            raise ValueError(f"ignore_ids {ignore_ids} must lie in [0, vocab_size={vocab_size})")
        # num_classes records the output width (the registry's "outputs per sample"); it is not a class count
        self.config = dict(input_shape=list(input_shape), num_classes=out_dim or dim, vocab_size=vocab_size, dim=dim,
                           out_dim=out_dim, ignore_ids=ignore_ids, normalize=normalize)
        self.embed = nn.Embedding(vocab_size, dim)
        self.project = nn.Linear(dim, out_dim) if out_dim is not None else None
        weights = torch.ones(vocab_size)
        weights[ignore_ids] = 0.0
        self.register_buffer("token_weights", weights)
        self.normalize = normalize

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None) -> Tensor:
        weights = self.token_weights[input_ids]  # (B, L)
        if attention_mask is not None:
            weights = weights * attention_mask.to(weights.dtype)
        vectors = self.embed(input_ids)  # (B, L, dim)
        pooled = (vectors * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-9)
        if self.project is not None:
            pooled = self.project(pooled)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def sif_weights(token_counts: np.ndarray, a: float = 1e-3) -> np.ndarray:
    """SIF weights ``a / (a + p(t))`` from per-token counts (V,), p = count / total (Arora et al. 2017)."""
    total = max(float(token_counts.sum()), 1.0)
    return a / (a + token_counts / total)


def zipf_weights(vocab_size: int) -> np.ndarray:
    """Model2Vec's frequency proxy when no corpus is given: ``log(1 + rank)`` with rank = the token id."""
    return np.log1p(np.arange(vocab_size, dtype=np.float64) + 1.0)


def count_tokens(tokenizer, sentences: Iterable[str], vocab_size: int, batch_size: int = 1024) -> np.ndarray:
    """How often each token id occurs in ``sentences`` (special tokens excluded): (V,) int64."""
    counts: Counter[int] = Counter()
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, add_special_tokens=False, truncation=False)["input_ids"]:
            counts.update(ids)
        batch.clear()

    for sentence in sentences:
        batch.append(sentence)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    out = np.zeros(vocab_size, dtype=np.int64)
    for token, count in counts.items():
        if 0 <= token < vocab_size:
            out[token] = count
    return out


@torch.inference_mode()
def token_vectors(encoder: nn.Module, tokenizer, *, batch_size: int = 1024, progress: bool = True) -> np.ndarray:
    """(V, D) float32: each vocabulary token embedded alone by ``encoder`` (``[CLS] t [SEP]``, pooled as the
    encoder pools, before its L2 normalisation)."""
    from tqdm.auto import tqdm

    vocab_size = len(tokenizer)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    prefix = [cls_id] if cls_id is not None else []
    suffix = [sep_id] if sep_id is not None else []
    normalize = getattr(encoder, "normalize", False)
    was_training = encoder.training
    encoder.eval()
    if normalize:
        encoder.normalize = False  # the raw pooled vector: its norm carries information the PCA keeps
    chunks = []
    try:
        for start in tqdm(range(0, vocab_size, batch_size), desc="token vectors", disable=not progress, leave=False):
            ids = torch.arange(start, min(start + batch_size, vocab_size)).unsqueeze(1)
            input_ids = torch.cat([torch.full((len(ids), len(prefix)), prefix[0]) if prefix else ids[:, :0], ids,
                                   torch.full((len(ids), len(suffix)), suffix[0]) if suffix else ids[:, :0]], 1)
            out = encoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
            chunks.append(out.float().numpy())
    finally:
        if normalize:
            encoder.normalize = True
        encoder.train(was_training)
    return np.concatenate(chunks)


def pca(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reduced (V, dim), components (dim, D), mean (D,)): PCA by SVD of the centred vectors (float64)."""
    if not 1 <= dim <= min(vectors.shape):
        raise ValueError(f"dim must be in [1, {min(vectors.shape)}] (the teacher's width, and at most the vocabulary "
                         f"size), got {dim}")
    mean = vectors.mean(0)
    centred = (vectors - mean).astype(np.float64)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:dim]
    return (centred @ components.T).astype(np.float32), components.astype(np.float32), mean.astype(np.float32)


def distill_static(encoder: nn.Module, tokenizer, *, dim: int = 256, corpus: Iterable[str] | None = None,
                   project: bool = True, sif_a: float = 1e-3, max_length: int = 128, batch_size: int = 1024,
                   progress: bool = True) -> StaticEmbedding:
    """A :class:`StaticEmbedding` from a sentence encoder and its tokenizer (see the module docstring).

    Args:
        encoder: the teacher, ``encoder(input_ids=, attention_mask=) -> (B, D)`` (a SentenceEncoder).
        tokenizer: its Hugging Face tokenizer (vocabulary size V = ``len(tokenizer)``).
        dim: the table's width after PCA (<= D).
        corpus: sentences whose token frequencies give SIF weights (else Zipf by token id).
        project: add the linear map back to D (initialised from the PCA), so the student's embeddings
            are comparable with the teacher's (cosine, MSE) and it can be fine-tuned against them.
    """
    vectors = token_vectors(encoder, tokenizer, batch_size=batch_size, progress=progress)  # (V, D)
    reduced, components, mean = pca(vectors, dim)
    vocab_size, width = vectors.shape
    special = sorted({int(i) for i in tokenizer.all_special_ids if i is not None and 0 <= i < vocab_size})
    if corpus is not None:
        weights = sif_weights(count_tokens(tokenizer, corpus, vocab_size), sif_a)
    else:
        weights = zipf_weights(vocab_size)
    student = StaticEmbedding((max_length,), None, vocab_size=vocab_size, dim=dim, out_dim=width if project else None,
                              ignore_ids=special, normalize=True)
    with torch.no_grad():
        student.embed.weight.copy_(torch.from_numpy(reduced))
        token_weights = torch.from_numpy(weights.astype(np.float32))
        token_weights[special] = 0.0
        student.token_weights.copy_(token_weights)
        if student.project is not None:
            student.project.weight.copy_(torch.from_numpy(components.T.copy()))  # (D, dim)
            student.project.bias.copy_(torch.from_numpy(mean))
    return student.eval()


def _fast_tokenizer(tokenizer, max_length: int):
    """A copy of ``tokenizer``'s Rust backend without padding, truncating to ``max_length - 2`` tokens
    (room for the specials the padded path counts); made once per (tokenizer, max_length)."""
    from tokenizers import Tokenizer

    cache = tokenizer.__dict__.setdefault("_distill_fast_tokenizers", {})
    if max_length not in cache:
        fast = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy: the caller's is not changed
        fast.no_padding()
        fast.enable_truncation(max(1, max_length - 2))
        cache[max_length] = fast
    return cache[max_length]


@torch.inference_mode()
def embed_texts(student: StaticEmbedding, tokenizer, texts: Sequence[str], *, batch_size: int = 64,
                max_length: int | None = None) -> np.ndarray:
    """Texts -> (N, D) float32 with the deployed fast path: the tokenizer's Rust backend without padding,
    tensors or special tokens, then one ``embedding_bag`` (weighted sum) per batch. Equal to
    ``student(**tokenizer(texts, padding=True, truncation=True, max_length=max_length))`` (tested);
    ``max_length`` (default: the student's ``input_shape``) counts [CLS] and [SEP], as that call does."""
    max_length = max_length or int(student.config["input_shape"][0])
    fast = _fast_tokenizer(tokenizer, max_length)
    encode = getattr(fast, "encode_batch_fast", fast.encode_batch)
    weight_table, table = student.token_weights, student.embed.weight
    out = np.empty((len(texts), student.config["out_dim"] or student.config["dim"]), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        encodings = encode(list(texts[start:start + batch_size]), add_special_tokens=False)
        lengths = torch.tensor([len(e.ids) for e in encodings])
        flat = torch.tensor([i for e in encodings for i in e.ids], dtype=torch.int64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)[:-1]])
        weights = weight_table[flat]
        sums = nn.functional.embedding_bag(flat, table, offsets, mode="sum", per_sample_weights=weights)
        totals = torch.zeros(len(encodings)).index_add_(0, torch.repeat_interleave(torch.arange(len(encodings)), lengths),
                                                        weights)
        pooled = sums / totals.clamp(min=1e-9).unsqueeze(1)
        if student.project is not None:
            pooled = student.project(pooled)
        if student.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        out[start:start + len(encodings)] = pooled.numpy()
    return out


def save_static(student: StaticEmbedding, tokenizer, folder) -> "Path":
    """``folder/model.safetensors`` (a distill model file naming the registered ``static_embedding``) and the
    tokenizer's files beside it: what ``distill embed FOLDER`` and :func:`load_static` read."""
    from pathlib import Path

    from distill.api import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(student, folder / "model.safetensors")
    tokenizer.save_pretrained(str(folder))
    return folder


def load_static(folder) -> tuple[StaticEmbedding, object]:
    """``(student, tokenizer)`` from a :func:`save_static` folder; the tokenizer's vocabulary must match the table."""
    from pathlib import Path

    from distill.api import load_model
    from distill.models.hf import _import_transformers

    folder = Path(folder)
    student = load_model(folder / "model.safetensors")
    if not isinstance(student, StaticEmbedding):
        raise ValueError(f"{folder / 'model.safetensors'} holds a {type(student).__name__}, not a static_embedding student")
    tokenizer = _import_transformers().AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                                     trust_remote_code=False)
    if len(tokenizer) != student.config["vocab_size"]:
        raise ValueError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but the table {student.config['vocab_size']} "
                         "rows; save the student with the tokenizer it was distilled with")
    student.max_length = int(student.config["input_shape"][0])
    return student.eval(), tokenizer


__all__ = ["StaticEmbedding", "embed_texts", "load_static", "save_static", "count_tokens", "distill_static", "pca", "sif_weights", "token_vectors", "zipf_weights"]
