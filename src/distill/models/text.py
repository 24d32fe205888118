"""Small, fast students over token ids for text classification.

- ``TokenCNN(input_shape=(L,), num_classes=K, vocab_size=V)`` (``token_cnn``): embedding (V, E) ->
  parallel 1-D convolutions of several widths -> max over time (masked) -> linear head. Kim (2014),
  "Convolutional Neural Networks for Sentence Classification", arXiv 1408.5882.
- ``TokenGRU`` (``token_gru``): embedding -> bidirectional GRU over the valid tokens (packed by
  length, so padding never enters the recurrence) -> mean and max over time -> linear head.
- ``StaticClassifier`` (``static_classifier``): a static (Model2Vec-style) table's weighted mean of
  token vectors -> linear head; :meth:`StaticClassifier.from_static` starts it from a table
  distilled by :func:`distill.models.static.distill_static`.

Each takes what a tokenizer gives, as keyword arguments: ``input_ids`` (B, L) int64 and optional
``attention_mask`` (B, L) (0 = padding), so a Hugging Face teacher and these students read the same
batches. :func:`teacher_token_table` gives their embedding tables a start from a teacher (every
token embedded alone by it, reduced with PCA to the table's width).
"""
from __future__ import annotations

import torch
from torch import nn

from distill.models import MODELS
from distill.models.utils import check_io, check_size, check_sizes


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Refuse ids outside ``[0, vocab_size)`` (a student built for another tokenizer), naming both; skipped
    while tracing or compiling (no data-dependent checks there)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or not input_ids.numel():
        return
    if int(input_ids.max()) >= vocab_size or int(input_ids.min()) < 0:
        raise ValueError(f"token ids lie in [{int(input_ids.min())}, {int(input_ids.max())}] but the embedding "
                         f"has vocab_size {vocab_size}: build the student with the tokenizer's vocabulary size")


@MODELS.register("token_cnn")
class TokenCNN(nn.Module):
    """(B, L) token ids -> (B, num_classes) logits. Module paths: ``embed``, ``convs.{i}``, ``head``.

    ``input_shape`` is ``(max_length,)`` (recorded for export); ``vocab_size`` V must cover every id;
    ``kernel_sizes`` the convolution widths, ``channels`` the filters per width.
    """

    def __init__(self, input_shape, num_classes, *, vocab_size: int, embed_dim: int = 64, channels: int = 64,
                 kernel_sizes=(3, 4, 5), dropout: float = 0.1, pad_id: int = 0):
        super().__init__()
        self.config = dict(input_shape=input_shape, num_classes=num_classes, vocab_size=vocab_size,
                           embed_dim=embed_dim, channels=channels, kernel_sizes=kernel_sizes, dropout=dropout,
                           pad_id=pad_id)
        check_io(input_shape, num_classes)
        check_size("vocab_size", vocab_size, "the tokenizer's vocabulary size (an integer >= 1)")
        check_size("embed_dim", embed_dim, "the embedding width must be an integer >= 1")
        check_size("channels", channels, "the filters per kernel width must be an integer >= 1")
        kernel_sizes = check_sizes("kernel_sizes", kernel_sizes, "every kernel size must be an integer >= 1")
        if not kernel_sizes:
            raise ValueError("kernel_sizes is empty; give one width or more, e.g. [3, 4, 5]")
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k, padding=k // 2) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * len(kernel_sizes), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: torch.Tensor) -> torch.Tensor:
        check_token_ids(input_ids, self.vocab_size)
        x = self.embed(input_ids).transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(x))[..., : input_ids.shape[1]]  # (B, C, L)
            if attention_mask is not None:  # padding never wins the max
                h = h.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
            pooled.append(h.amax(-1).clamp_min(0))  # (B, C); an all-padding row gives 0
        return self.head(self.dropout(torch.cat(pooled, 1)))  # (B, num_classes)


@MODELS.register("token_gru")
class TokenGRU(nn.Module):
    """(B, L) token ids -> (B, num_classes) logits. Module paths: ``embed``, ``gru``, ``head``.

    Embedding (V, E) -> a ``layers``-deep bidirectional GRU of width ``hidden`` per direction, run over
    each row's valid tokens only (``pack_padded_sequence`` with the lengths from ``attention_mask``,
    right padding) -> the mean and the max over valid steps, concatenated (B, 4 * hidden) -> linear
    head. Extra padding changes nothing (tested). ``input_shape`` is ``(max_length,)``.
    """

    def __init__(self, input_shape, num_classes, *, vocab_size: int, embed_dim: int = 64, hidden: int = 64,
                 layers: int = 1, dropout: float = 0.1, pad_id: int = 0):
        super().__init__()
        self.config = dict(input_shape=input_shape, num_classes=num_classes, vocab_size=vocab_size,
                           embed_dim=embed_dim, hidden=hidden, layers=layers, dropout=dropout, pad_id=pad_id)
        check_io(input_shape, num_classes)
        check_size("vocab_size", vocab_size, "the tokenizer's vocabulary size (an integer >= 1)")
        check_size("embed_dim", embed_dim, "the embedding width must be an integer >= 1")
        check_size("hidden", hidden, "the GRU width per direction must be an integer >= 1")
        check_size("layers", layers, "the number of GRU layers must be an integer >= 1")
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.gru = nn.GRU(embed_dim, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: torch.Tensor) -> torch.Tensor:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        check_token_ids(input_ids, self.vocab_size)
        batch, length = input_ids.shape
        if attention_mask is None:
            lengths = torch.full((batch,), length, dtype=torch.int64)
        else:
            lengths = attention_mask.sum(1).to(torch.int64).cpu()
        x = self.embed(input_ids)  # (B, L, E)
        packed = pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=length)  # (B, L, 2H)
        valid = (torch.arange(length)[None, :] < lengths[:, None]).to(x.device)  # (B, L)
        count = valid.sum(1, keepdim=True).clamp(min=1)
        mean = (hidden * valid[..., None]).sum(1) / count  # (B, 2H)
        peak = hidden.masked_fill(~valid[..., None], float("-inf")).amax(1)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # an all-padding row gives 0
        return self.head(self.dropout(torch.cat([mean, peak], 1)))  # (B, num_classes)


@MODELS.register("static_classifier")
class StaticClassifier(nn.Module):
    """(B, L) token ids -> (B, num_classes) logits: a static table's weighted mean of token vectors, then a
    linear head. Module paths: ``static`` (a :class:`distill.models.static.StaticEmbedding`, not
    normalised, no projection), ``head``. ``ignore_ids`` are never pooled (the special tokens)."""

    def __init__(self, input_shape, num_classes, *, vocab_size: int, dim: int = 256, ignore_ids=(0,),
                 dropout: float = 0.0):
        super().__init__()
        from distill.models.static import StaticEmbedding

        check_io(input_shape, num_classes)
        self.config = dict(input_shape=list(input_shape), num_classes=num_classes, vocab_size=vocab_size, dim=dim,
                           ignore_ids=[int(i) for i in ignore_ids], dropout=dropout)
        self.vocab_size = vocab_size
        self.static = StaticEmbedding(input_shape, None, vocab_size=vocab_size, dim=dim, ignore_ids=ignore_ids,
                                      normalize=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: torch.Tensor) -> torch.Tensor:
        check_token_ids(input_ids, self.vocab_size)
        return self.head(self.dropout(self.static(input_ids, attention_mask)))

    @classmethod
    def from_static(cls, static, num_classes: int, *, dropout: float = 0.0) -> "StaticClassifier":
        """A classifier on a copy of ``static``'s table and token weights (its projection, if any, is left out:
        the head reads the table's width)."""
        config = static.config
        model = cls(config["input_shape"], num_classes, vocab_size=config["vocab_size"], dim=config["dim"],
                    ignore_ids=config["ignore_ids"], dropout=dropout)
        with torch.no_grad():
            model.static.embed.weight.copy_(static.embed.weight)
            model.static.token_weights.copy_(static.token_weights)
        return model


def teacher_token_table(encoder: nn.Module, tokenizer, dim: int, *, batch_size: int = 1024,
                        progress: bool = False) -> torch.Tensor:
    """(V, dim) float32: every vocabulary token embedded alone by ``encoder`` (``[CLS] t [SEP]``, pooled;
    :func:`distill.models.static.token_vectors`), reduced by PCA to ``dim`` columns and scaled to unit
    mean row norm: a start for a student's embedding table that needs no labels."""
    from distill.models.static import pca, token_vectors

    reduced, _, _ = pca(token_vectors(encoder, tokenizer, batch_size=batch_size, progress=progress), dim)
    table = torch.from_numpy(reduced)
    return table / table.norm(dim=1).mean().clamp(min=1e-12)


def load_token_table(model: nn.Module, table: torch.Tensor) -> nn.Module:
    """Copy ``table`` (V, E) into ``model``'s embedding (``embed`` or ``static.embed``), in place; returns it."""
    embedding = model.static.embed if isinstance(model, StaticClassifier) else getattr(model, "embed", None)
    if not isinstance(embedding, nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no token embedding at 'embed' or 'static.embed'")
    if tuple(embedding.weight.shape) != tuple(table.shape):
        raise ValueError(f"the table is {tuple(table.shape)} but {type(model).__name__}'s embedding is "
                         f"{tuple(embedding.weight.shape)} (vocab_size, width): build the student with that width")
    with torch.no_grad():
        embedding.weight.copy_(table)
    return model


__all__ = ["StaticClassifier", "TokenCNN", "TokenGRU", "check_token_ids", "load_token_table", "teacher_token_table"]
