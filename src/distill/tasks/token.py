"""Token-level distillation (causal LMs): (B, L, V) logits, losses per valid token.

Position ``i`` predicts token ``i + 1`` (the logits are shifted against the labels, as Hugging
Face's causal-LM loss does). Labels are the batch's ``target`` (B, L) with ``-100`` for ignored
positions (prompt, padding), else the input ids with padding (``attention_mask == 0``) ignored.
Every loss term is summed over the valid tokens of a micro-batch and divided by the loop's
``token_normaliser`` = (valid tokens in the whole optimiser step, over every micro-batch and
process) / (micro-batches x processes): after Accelerate's division by the accumulation steps
and DDP's mean over processes, the gradient is exactly that of the mean over all valid tokens of
the step, as one large batch would give.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from distill.core.io import logits_of
from distill.tasks.base import Task

IGNORE_INDEX = -100


def token_labels(batch: dict[str, Any]) -> Tensor:
    """(B, L) int64 labels with -100 where no loss is taken (from ``target``, else the input ids)."""
    target = batch.get("target")
    inputs = batch["input"]
    if isinstance(target, Tensor) and target.ndim == 2:
        return target
    ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else inputs
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        raise ValueError("token task: batches need 'input_ids' (B, L) (or (B, L) labels as the target); "
                         f"got {type(ids).__name__}")
    labels = ids.clone()
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    if isinstance(mask, Tensor):
        labels[mask == 0] = IGNORE_INDEX
    return labels


def shifted(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(logits[:, :-1] (B, L-1, V), labels[:, 1:] with ignored ids set to 0 (B, L-1), valid mask (B, L-1) bool)."""
    next_labels = labels[:, 1:]
    valid = next_labels != IGNORE_INDEX
    return logits[:, :-1], torch.where(valid, next_labels, 0), valid


class TokenTask(Task):
    """Outputs: logits (B, L, V). Metrics per valid token: agreement with the teacher's top-1,
    KL(teacher || student), and the student's perplexity on the labels."""

    name = "token"
    token_level = True

    def read(self, output: Any, batch: dict[str, Any], *, who: str) -> Tensor:
        logits = logits_of(output, who=who)
        if logits.ndim != 3:
            raise ValueError(f"token task: {who} gave logits of shape {tuple(logits.shape)}; a causal LM gives (B, L, V)")
        return logits

    def count(self, batch: dict[str, Any]) -> int:
        return int((token_labels(batch)[:, 1:] != IGNORE_INDEX).sum())

    def term_value(self, term, student: Tensor, teacher: Tensor | None, batch: dict[str, Any]) -> Tensor:
        labels = token_labels(batch)
        student_logits, next_labels, valid = shifted(student, labels)
        teacher_logits = None if teacher is None else teacher[:, :-1]
        total = term.fn(student_logits, teacher_logits, next_labels, temperature=term.temperature, mask=valid,
                        reduction="sum", **term.params)
        normaliser = batch.get("token_normaliser")
        if normaliser is None:  # one micro-batch on its own: its own valid tokens
            normaliser = valid.sum().clamp(min=1)
        return total / normaliser

    def check_pair(self, student: Tensor, teacher: Tensor) -> None:
        if student.shape[:2] != teacher.shape[:2]:
            raise ValueError(f"token task: teacher logits {tuple(teacher.shape)} and student logits "
                             f"{tuple(student.shape)} cover different tokens")
        if student.shape[-1] != teacher.shape[-1]:
            raise ValueError(f"token task: the teacher's vocabulary has {teacher.shape[-1]} entries and the "
                             f"student's {student.shape[-1]}; distil between models that share a tokenizer")

    def metrics(self, student: Tensor, teacher: Tensor | None, targets: Tensor | None, inputs=None) -> dict[str, float]:
        batch = {"input": inputs, "target": targets}
        labels = token_labels(batch)
        student_logits, next_labels, valid = shifted(student, labels)
        log_q = torch.log_softmax(student_logits.float(), -1)
        nll = -log_q.gather(-1, next_labels.unsqueeze(-1)).squeeze(-1)
        tokens = valid.sum().clamp(min=1)
        record = {"perplexity": float(torch.exp((nll * valid).sum() / tokens)), "tokens": int(valid.sum())}
        if teacher is not None:
            log_p = torch.log_softmax(teacher[:, :-1].float(), -1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            record["kl_to_teacher"] = float((kl * valid).sum() / tokens)
            same = student_logits.argmax(-1) == teacher[:, :-1].argmax(-1)
            record["agreement"] = float((same & valid).sum() / tokens)
        return record
