"""A transformer text student built by name from a teacher's folder: fewer blocks, narrower feed-forward layers.

``transformer_student`` (registered) makes the layer-dropped students of :mod:`distill.models.layer_drop`
something a recipe (and so ``distill fit``) can name and size:

    student: {model: transformer_student,
              params: {folder: teacher-folder, vocab_size: 30522, layers: 2, ffn_width: 512}}

- ``layers``: the blocks kept (an int ``n``: ``n`` blocks spread evenly over the teacher's, first and last
  included, e.g. 2 of 6 -> [0, 5]; or a list of block indices), copied from the folder's weights
  (:func:`~distill.models.layer_drop.drop_layers`);
- ``ffn_width``: hidden units kept in every feed-forward layer (:func:`~distill.models.layer_drop.narrow_ffn`,
  scored by weight norms: no data needed, so the same params always build the same model);
- ``hidden_size``: a narrower residual width. No teacher weights fit it, so the model is then built from the
  folder's ``config.json`` with fresh (seeded) weights: width without the teacher's start.

The model reads the folder at every build (a run's model file rebuilds from the same folder, so keep it).
The data must be tokenised by the folder's tokenizer (``text_classification``'s ``tokenizer`` param).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from distill.models import MODELS
from distill.models.utils import check_size


def spread_layers(count: int, total: int) -> list[int]:
    """``count`` block indices spread evenly over ``total`` blocks, first and last included (1 -> [0])."""
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def folder_config(folder: str | os.PathLike) -> dict:
    """The transformer's ``config.json`` of a sentence-transformers or Hugging Face ``folder`` (parsed)."""
    import json

    from distill.models.hf import _read_layout

    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"folder {str(path)!r}: no such model folder (a sentence-transformers or Hugging Face "
                                "encoder folder with config.json and model.safetensors)")
    config = _read_layout(path)["model_folder"] / "config.json"
    if not config.is_file():
        raise ValueError(f"folder {str(path)!r} has no config.json (at {config})")
    return json.loads(config.read_text(encoding="utf-8"))


@MODELS.register("transformer_student")
class TransformerStudent(nn.Module):
    """(B, L) token ids (+ mask) -> (B, num_classes) logits, or (B, D) sentence embeddings with ``num_classes=None``.

    Args:
        input_shape: ``(max_length,)`` of its token batches (recorded for export).
        num_classes: K of the linear head; None for an embedding model (the encoder's pooled output,
            normalised when the folder normalises).
        folder: the teacher's sentence-transformers / Hugging Face encoder folder.
        vocab_size: the folder's vocabulary size (``config.json``'s ``vocab_size``), recorded so an export knows
            the model takes token ids; a different number is refused.
        layers: blocks kept: an int (spread evenly) or a list of indices; None keeps all.
        ffn_width: feed-forward units kept per block (<= the folder's ``intermediate_size``); None keeps all.
        hidden_size: residual width; None keeps the folder's (and its weights); another value builds fresh weights
            from the config (``num_attention_heads`` must divide it).
        dropout: on the pooled vector before the head, during training.

    Module paths (as :class:`~distill.models.hf_classifier.SentenceClassifier`): ``encoder`` (a SentenceEncoder,
    its transformer at ``encoder.model``), ``dropout``, ``head`` (absent for an embedding model).
    """

    def __init__(self, input_shape=(128,), num_classes: int | None = None, *, folder: str, vocab_size: int,
                 layers: int | list[int] | None = None, ffn_width: int | None = None, hidden_size: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        from distill.models.hf import SentenceEncoder
        from distill.models.layer_drop import drop_layers, narrow_ffn

        check_size("vocab_size", vocab_size, "the tokenizer's vocabulary size (an integer >= 1)")
        if num_classes is not None:
            check_size("num_classes", num_classes, "a classifier needs at least 2 classes (or None: embeddings)",
                       minimum=2)
        self.config = dict(input_shape=list(input_shape), num_classes=num_classes, folder=str(folder),
                           vocab_size=vocab_size, layers=layers, ffn_width=ffn_width, hidden_size=hidden_size,
                           dropout=dropout)
        config = folder_config(folder)
        if config.get("vocab_size") != vocab_size:
            raise ValueError(f"vocab_size is {vocab_size} but {folder}'s config.json says vocab_size "
                             f"{config.get('vocab_size')}: give vocab_size: {config.get('vocab_size')}")
        encoder, _ = SentenceEncoder.from_folder(folder, pooling=None if _has_modules(folder) else "mean")
        total = int(config.get("num_hidden_layers") or len(encoder.model.encoder.layer))
        keep = self._keep(layers, total)
        if hidden_size is not None and hidden_size != config.get("hidden_size"):
            encoder.model = self._fresh(config, hidden_size, len(keep), ffn_width)
        else:
            if keep != list(range(total)):
                encoder = drop_layers(encoder, keep)
            if ffn_width is not None:
                check_size("ffn_width", ffn_width, "the feed-forward units kept per block (an integer >= 1)")
                encoder = narrow_ffn(encoder, ffn_width)
        self.encoder = encoder.train()
        self.encoder.requires_grad_(True)
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.max_length = encoder.max_length
        self.dropout = nn.Dropout(dropout)
        if num_classes is not None:
            self.encoder.normalize = False  # the head reads the pooled vector's norm too
            self.head = nn.Linear(encoder.embedding_dim, num_classes)

    @staticmethod
    def _keep(layers, total: int) -> list[int]:
        if layers is None:
            return list(range(total))
        if isinstance(layers, bool):
            raise ValueError(f"layers is {layers!r}; give a block count (1..{total}) or a list of block indices")
        if isinstance(layers, int):
            if not 1 <= layers <= total:
                raise ValueError(f"layers is {layers}; the folder has {total} blocks: give 1..{total} "
                                 "(or a list of block indices)")
            return spread_layers(layers, total)
        keep = list(layers)
        if not keep or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < total for i in keep) \
                or keep != sorted(set(keep)):
            raise ValueError(f"layers is {layers!r}; give strictly increasing block indices in [0, {total}) "
                             f"or a block count")
        return keep

    @staticmethod
    def _fresh(config: dict, hidden_size: int, layers: int, ffn_width: int | None) -> nn.Module:
        """A transformer of the folder's architecture at ``hidden_size``, freshly initialised (seeded by torch)."""
        import transformers

        check_size("hidden_size", hidden_size, "the residual width (an integer >= 1)")
        heads = int(config.get("num_attention_heads") or 1)
        if hidden_size % heads:
            valid = [w for w in range(heads, 2 * hidden_size + heads, heads)][:3]
            raise ValueError(f"hidden_size is {hidden_size}; it must be a multiple of num_attention_heads={heads} "
                             f"(e.g. {', '.join(map(str, valid))})")
        changes = {"hidden_size": hidden_size, "num_hidden_layers": layers}
        if ffn_width is not None:
            check_size("ffn_width", ffn_width, "the feed-forward units per block (an integer >= 1)")
            changes["intermediate_size"] = ffn_width
        fields = {key: value for key, value in config.items() if key not in ("architectures", "transformers_version")}
        model_config = transformers.AutoConfig.for_model(**{**fields, **changes})
        return transformers.AutoModel.from_config(model_config).float()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """(B, L) int64 ids, (B, L) mask (1 = token; default all ones) -> (B, K) logits or (B, D) embeddings."""
        from distill.models.text import check_token_ids

        check_token_ids(input_ids, self.vocab_size)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pooled = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, D)
        return pooled if self.num_classes is None else self.head(self.dropout(pooled))


def _has_modules(folder) -> bool:
    return (Path(folder) / "modules.json").is_file()


__all__ = ["TransformerStudent", "folder_config", "spread_layers"]
