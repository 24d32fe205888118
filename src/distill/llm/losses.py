"""Token-level distillation losses in chunks: the (B, L, V) logits never exist at once.

For a causal LM the logits of a batch are ``B x L x V`` floats: at a 32k vocabulary, batch 8 and
2,048 tokens that is 2 GiB in fp32, the same again for the teacher, and autograd keeps the
student's for the backward pass. :func:`chunked_token_loss` takes the student's *final hidden
states* (B, L, H) and its output head instead, keeps only the valid (labelled) positions, and for
each chunk of ``chunk_size`` positions builds the student's logits (chunk, V), the teacher's (from
its own hidden states and head, or from stored logits), and the loss of the core family summed over
the chunk. Each chunk runs under activation checkpointing (``torch.utils.checkpoint``, non-reentrant):
its logits are rebuilt in the backward pass instead of being kept, so the largest tensor alive is one
chunk's ``chunk_size x V`` (TRL's ``DistillationTrainer`` chunks its loss the same way, in 256 tokens).

Position ``i`` predicts token ``i + 1`` (logits shifted against labels as in
:mod:`distill.tasks.token`); ``-100`` labels are ignored. The result is the **sum** over valid
tokens, so dividing by the step's global count of valid tokens (the token task's normaliser) gives
the exact mean under gradient accumulation and data parallelism.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100

Head = Callable[[Tensor], Tensor]  # hidden (N, H) -> logits (N, V)


def _valid_rows(hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(flat indices (N,) of positions 0..L-2 whose next label is valid, those next labels (N,))."""
    next_labels = labels[:, 1:]
    valid = next_labels != IGNORE_INDEX
    rows = (torch.arange(hidden.shape[0], device=hidden.device).unsqueeze(1) * hidden.shape[1]
            + torch.arange(hidden.shape[1] - 1, device=hidden.device)).masked_select(valid)
    return rows, next_labels.masked_select(valid)


def chunked_token_loss(loss_fn: Callable[..., Tensor], student_hidden: Tensor, student_head: Head, labels: Tensor, *,
                       teacher_logits: Tensor | None = None, teacher_hidden: Tensor | None = None,
                       teacher_head: Head | None = None, temperature: float = 1.0, chunk_size: int = 256,
                       **params: Any) -> Tensor:
    """Sum over valid tokens of ``loss_fn(student_logits, teacher_logits, target)`` per token, in chunks.

    Args:
        loss_fn: a logit loss of the core family (``distill.losses.kl``, ``reverse_kl``, ``jsd``, ``tvd``,
            ``cross_entropy`` ...), called with ``reduction="sum"`` on (chunk, V) logits.
        student_hidden: (B, L, H) the student's last hidden states (``output_hidden_states``' last, or the
            base model's ``last_hidden_state``).
        student_head: hidden -> logits, e.g. the model's ``lm_head`` (an ``nn.Linear(H, V)``).
        labels: (B, L) int64 token ids with -100 where no loss is taken (prompt, padding).
        teacher_logits: (B, L, V) stored teacher logits (any dtype: read one chunk at a time, upcast), or
        teacher_hidden + teacher_head: the teacher's (B, L, H_t) hidden states and its head (run without grad).
        chunk_size: valid positions per chunk; peak memory ~ ``chunk_size x V`` floats per model.
        params: the loss's own parameters (``beta`` for jsd ...).

    Returns a scalar: the sum over valid tokens (0 when none is valid).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if student_hidden.ndim != 3 or labels.shape != student_hidden.shape[:2]:
        raise ValueError(f"student_hidden must be (B, L, H) and labels (B, L); got {tuple(student_hidden.shape)} and "
                         f"{tuple(labels.shape)}")
    if teacher_logits is not None and teacher_hidden is not None:
        raise ValueError("give the teacher as teacher_logits or as teacher_hidden + teacher_head, not both")
    if teacher_hidden is not None and teacher_head is None:
        raise ValueError("teacher_hidden needs teacher_head (its output layer) to make logits")
    rows, targets = _valid_rows(student_hidden, labels)
    flat_student = student_hidden.reshape(-1, student_hidden.shape[-1])
    flat_teacher = None
    if teacher_logits is not None:
        if teacher_logits.shape[:2] != labels.shape:
            raise ValueError(f"teacher_logits {tuple(teacher_logits.shape)} do not cover the labels {tuple(labels.shape)}")
        flat_teacher = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    elif teacher_hidden is not None:
        flat_teacher = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])
    total = student_hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(rows), chunk_size):
        index = rows[start:start + chunk_size]
        target = targets[start:start + chunk_size]
        teacher_chunk = None
        if flat_teacher is not None:
            with torch.no_grad():
                teacher_chunk = flat_teacher.index_select(0, index)
                if teacher_hidden is not None:
                    teacher_chunk = teacher_head(teacher_chunk)
                teacher_chunk = teacher_chunk.float()

        def chunk_loss(hidden_rows: Tensor, teacher_rows=teacher_chunk, target_rows=target) -> Tensor:
            student_logits = student_head(hidden_rows).float()
            if teacher_rows is not None and teacher_rows.shape[-1] != student_logits.shape[-1]:
                student_logits, teacher_rows = shared_vocabulary(student_logits, teacher_rows)
            return loss_fn(student_logits, teacher_rows, target_rows, temperature=temperature, reduction="sum", **params)

        hidden_rows = flat_student.index_select(0, index)
        if torch.is_grad_enabled() and hidden_rows.requires_grad:
            total = total + checkpoint(chunk_loss, hidden_rows, use_reentrant=False)
        else:
            total = total + chunk_loss(hidden_rows)
    return total


def shared_vocabulary(student_logits: Tensor, teacher_logits: Tensor, *, max_padding: int = 1024) -> tuple[Tensor, Tensor]:
    """Both logits cut to the ids they share, for models of one tokenizer whose embedding tables were
    padded to different sizes (e.g. 32,000 vs 32,064 rows): the extra rows are padding no token maps to.

    A difference above ``max_padding`` rows is not padding but another tokenizer: refused, naming both
    sizes (a cross-tokenizer loss such as ULD would be needed)."""
    student_size, teacher_size = student_logits.shape[-1], teacher_logits.shape[-1]
    if abs(student_size - teacher_size) > max_padding:
        raise ValueError(f"the student's vocabulary has {student_size:,} entries and the teacher's {teacher_size:,}: "
                         f"more than {max_padding} apart, so not one tokenizer with padded embeddings; distil between "
                         "models that share a tokenizer")
    size = min(student_size, teacher_size)
    return student_logits[..., :size], teacher_logits[..., :size]


__all__ = ["IGNORE_INDEX", "chunked_token_loss", "shared_vocabulary"]
