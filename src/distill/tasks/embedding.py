"""Sequence-level embeddings: (B, D) vectors compared by direction (cosine) or value (MSE)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from distill.core.io import ModelOutputError
from distill.tasks.base import Task


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Mean of token vectors (B, L, D) over the valid tokens -> (B, D), as sentence-transformers pools
    (``sum(h * mask) / max(sum(mask), 1e-9)``)."""
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class EmbeddingTask(Task):
    """Outputs: a (B, D) tensor; a mapping with ``sentence_embedding`` / ``embeddings``; or a
    ``last_hidden_state`` (B, L, D), mean-pooled over the batch's ``attention_mask``. Losses:
    ``cosine_distance`` or ``mse`` (widths must agree: D_student == D_teacher)."""

    name = "embedding"

    def read(self, output: Any, batch: dict[str, Any], *, who: str) -> Tensor:
        inputs = batch.get("input")
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        if isinstance(output, Tensor):
            return mean_pool(output, mask) if output.ndim == 3 else output
        if isinstance(output, Mapping):
            for key in ("sentence_embedding", "embeddings", "pooled_embedding"):
                if isinstance(output.get(key), Tensor):
                    return output[key]
            if isinstance(output.get("last_hidden_state"), Tensor):
                return mean_pool(output["last_hidden_state"], mask)
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            return mean_pool(output[0], mask) if output[0].ndim == 3 else output[0]
        raise ModelOutputError(f"{who} returned {type(output).__name__}; the embedding task reads a (B, D) tensor, "
                               "'sentence_embedding', or a 'last_hidden_state' to mean-pool")

    def check_pair(self, student: Tensor, teacher: Tensor) -> None:
        if student.shape != teacher.shape:
            raise ValueError(f"embedding task: the teacher's embeddings are {tuple(teacher.shape)} and the student's "
                             f"{tuple(student.shape)}; give the student the teacher's width (or a projection head)")

    def metrics(self, student: Tensor, teacher: Tensor | None, targets: Tensor | None, inputs=None) -> dict[str, float]:
        if teacher is None:
            return {}
        cosine = torch.nn.functional.cosine_similarity(student, teacher, dim=-1)
        return {"cosine_to_teacher": float(cosine.mean()), "mse_to_teacher": float((student - teacher).square().mean())}
