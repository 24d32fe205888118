"""A text classifier on a sentence encoder: the encoder's pooled sentence vector and a linear head.

``SentenceClassifier(encoder, num_classes)`` -> ``forward(input_ids, attention_mask,
token_type_ids=None) -> (B, K) logits``: the teacher for text classification (fine-tune it with
``distill.distil(None, classifier, train, ...)``), and, built on a layer-dropped copy
(:func:`distill.models.layer_drop.drop_layers`), a student initialised from it. The pooled vector is
taken before the encoder's L2 normalisation (its norm carries information a classifier can use).
"""
from __future__ import annotations

import copy

from torch import Tensor, nn

from distill.models.hf import SentenceEncoder


class SentenceClassifier(nn.Module):
    """(B, L) token ids (+ mask) -> (B, K) logits. Module paths: ``encoder`` (a SentenceEncoder, its
    transformer at ``encoder.model``), ``dropout``, ``head``.

    Args:
        encoder: a :class:`SentenceEncoder` (e.g. ``SentenceEncoder.from_folder(minilm_folder())[0]``);
            copied, so the original stays as it was.
        num_classes: K.
        dropout: on the pooled vector, during training.
    """

    def __init__(self, encoder: SentenceEncoder, num_classes: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        width = encoder.embedding_dim
        if width is None:
            raise ValueError("the encoder does not say its width (config.hidden_size); give a Hugging Face encoder")
        self.encoder = copy.deepcopy(encoder)
        self.encoder.normalize = False
        self.encoder.requires_grad_(True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)
        self.num_classes = num_classes
        self.max_length = encoder.max_length
        self.do_lower_case = encoder.do_lower_case

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        return self.head(self.dropout(self.encoder(input_ids, attention_mask, token_type_ids)))


__all__ = ["SentenceClassifier"]
