"""A CNN over token ids: the small, fast student for text classification (Kim 2014).

``TokenCNN(input_shape=(L,), num_classes=K, vocab_size=V)``: embedding (V, E) -> parallel 1-D
convolutions of several widths -> max over time (masked) -> linear head. It takes what a
tokenizer gives, as keyword arguments: ``input_ids`` (B, L) int64 and optional
``attention_mask`` (B, L) (0 = padding), so a Hugging Face teacher and this student read the same
batches. Kim (2014), "Convolutional Neural Networks for Sentence Classification", arXiv 1408.5882.
"""
from __future__ import annotations

import torch
from torch import nn

from distill.models import MODELS
from distill.models.utils import check_io, check_size, check_sizes


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
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and (int(input_ids.max()) >= self.vocab_size or int(input_ids.min()) < 0):
            raise ValueError(f"token ids lie in [{int(input_ids.min())}, {int(input_ids.max())}] but the embedding "
                             f"has vocab_size {self.vocab_size}: build the student with the tokenizer's vocabulary size")
        x = self.embed(input_ids).transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(x))[..., : input_ids.shape[1]]  # (B, C, L)
            if attention_mask is not None:  # padding never wins the max
                h = h.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
            pooled.append(h.amax(-1).clamp_min(0))  # (B, C); an all-padding row gives 0
        return self.head(self.dropout(torch.cat(pooled, 1)))  # (B, num_classes)
