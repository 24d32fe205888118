"""Token-level distillation losses in chunks, and vocabularies padded to different sizes.

:func:`chunked_token_loss` lives with the token task (:mod:`distill.tasks.token`, which computes
every per-position loss with it) and is re-exported here: the student's final hidden states and
its head (or its logits), the teacher's logits (or hidden states and head), labels with -100, and
the loss summed over valid tokens, ``chunk_size`` positions at a time under activation
checkpointing, so that no (B, L, V) fp32 tensor is held. Divide the sum by the step's global count
of valid tokens (the token task's normaliser) for the exact mean under gradient accumulation and
data parallelism.
"""
from __future__ import annotations

from torch import Tensor

from distill.tasks.token import IGNORE_INDEX, chunked_token_loss


def check_vocabularies(student_size: int, teacher_size: int, *, max_padding: int = 1024) -> None:
    """Refuse vocabularies more than ``max_padding`` entries apart (another tokenizer), naming both sizes."""
    if abs(student_size - teacher_size) > max_padding:
        raise ValueError(f"the student's vocabulary has {student_size:,} entries and the teacher's {teacher_size:,}: "
                         f"more than {max_padding} apart, so not one tokenizer with padded embeddings; distil between "
                         "models that share a tokenizer")


def shared_vocabulary(student_logits: Tensor, teacher_logits: Tensor, *, max_padding: int = 1024) -> tuple[Tensor, Tensor]:
    """Both logits cut to the ids they share, for models of one tokenizer whose embedding tables were
    padded to different sizes (e.g. 32,000 vs 32,064 rows): the extra rows are padding no token maps to.

    A difference above ``max_padding`` rows is not padding but another tokenizer: refused, naming both
    sizes (a cross-tokenizer loss such as ULD would be needed). With the tokenizers at hand,
    :func:`distill.llm.models.shared_vocabulary_size` decides exactly instead."""
    student_size, teacher_size = student_logits.shape[-1], teacher_logits.shape[-1]
    check_vocabularies(student_size, teacher_size, max_padding=max_padding)
    size = min(student_size, teacher_size)
    return student_logits[..., :size], teacher_logits[..., :size]


__all__ = ["IGNORE_INDEX", "chunked_token_loss", "check_vocabularies", "shared_vocabulary"]
