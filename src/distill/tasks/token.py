"""Token-level distillation (causal LMs): (B, L, V) logits, losses per valid token, in chunks.

Position ``i`` predicts token ``i + 1`` (the logits are shifted against the labels, as Hugging
Face's causal-LM loss does). Labels are the batch's ``target`` (B, L) with ``-100`` for ignored
positions (prompt, padding), else the input ids with padding (``attention_mask == 0``) and prompts
(an input ``loss_mask == 0``: the data layer carries class ids, not (B, L) labels, as targets) ignored.
Every loss term is summed over the valid tokens of a micro-batch and divided by the loop's
``token_normaliser`` = (valid tokens in the whole optimiser step, over every micro-batch and
process) / (micro-batches x processes): after Accelerate's division by the accumulation steps
and DDP's mean over processes, the gradient is exactly that of the mean over all valid tokens of
the step, as one large batch would give.

**Chunks.** At a 32k vocabulary, batch 8 and 2,048 tokens the logits are 2 GiB in fp32, and a loss
computed on them at once holds several more such tensors (fp32 copies, log-probabilities, their
product) for the backward pass. :func:`chunked_token_loss` computes the loss ``chunk_size``
positions at a time under activation checkpointing (``torch.utils.checkpoint``, non-reentrant): a
chunk's fp32 logits and probabilities are rebuilt in the backward pass instead of being kept, so
the largest loss tensor alive is ``chunk_size x V``. Given the student's *final hidden states*
and its output head instead of logits (:class:`TokenHidden`, e.g. from
:class:`distill.llm.ChunkedLM`), only valid positions are computed and the student's
(B, L, V) logits never exist at all (TRL's ``DistillationTrainer`` chunks its loss in 256 tokens
too). :class:`TokenTask` computes every per-position loss this way (``chunk_size=256``; ``None``:
all positions at once); DIST, a batch statistic, is computed on all positions at once.

**Cached teachers.** The teacher's outputs may come from a token cache
(:mod:`distill.data.token_cache`): a :class:`~distill.data.token_cache.TokenTeacher` holding, per
valid token of the batch, the top-k logits, their ids and the tail mass. Every distribution loss of
the core family then compares the k kept ids plus one tail bucket (mode ``"tail"``; the student's
tail mass is 1 - the sum of its probabilities on those ids) or the k ids renormalised, in the same
chunks; with k = V it equals the dense loss.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from distill.core.io import logits_of
from distill.data.token_cache import TokenTeacher
from distill.losses.sparse import SparseTeacher
from distill.tasks.base import Task

IGNORE_INDEX = -100
LOSS_MASK = "loss_mask"  # an input (B, L): 0 on tokens that are not predicted (a prompt); models ignore it
BATCH_STATISTIC_LOSSES = frozenset({"dist"})  # couple positions: not computable chunk by chunk
_HEAD = "_distill_output_head"  # the attribute TokenTask.read puts a TokenHidden's head under

Head = Callable[[Tensor], Tensor]  # hidden (N, H) -> logits (N, V)


@dataclass
class TokenHidden:
    """A causal LM's output given as its final hidden states (B, L, H) and its output head
    (hidden -> logits, e.g. ``lm_head``), so that the token task builds logits chunk by chunk."""

    hidden: Tensor
    head: Head
    vocab_size: int | None = None  # logits the head gives (default: its out_features / weight rows)

    def size(self) -> int | None:
        return self.vocab_size if self.vocab_size is not None else head_size(self.head)


def token_labels(batch: dict[str, Any]) -> Tensor:
    """(B, L) int64 labels with -100 where no loss is taken: the ``target`` when it is (B, L), else the
    input ids, ignored where ``attention_mask`` (padding) or ``loss_mask`` (a prompt) is 0."""
    target = batch.get("target")
    inputs = batch["input"]
    if isinstance(target, Tensor) and target.ndim == 2:
        return target
    ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else inputs
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        raise ValueError("token task: batches need 'input_ids' (B, L) (or (B, L) labels as the target); "
                         f"got {type(ids).__name__}")
    labels = ids.clone()
    for key in ("attention_mask", LOSS_MASK):
        mask = inputs.get(key) if isinstance(inputs, Mapping) else None
        if isinstance(mask, Tensor):
            labels[mask == 0] = IGNORE_INDEX
    return labels


def shifted(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(logits[:, :-1] (B, L-1, V), labels[:, 1:] with ignored ids set to 0 (B, L-1), valid mask (B, L-1) bool)."""
    next_labels = labels[:, 1:]
    valid = next_labels != IGNORE_INDEX
    return logits[:, :-1], torch.where(valid, next_labels, 0), valid


def next_token_labels(labels: Tensor) -> Tensor:
    """(B, L): the label position ``i`` predicts (``labels[:, i + 1]``), -100 at the last position."""
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)


def head_size(head: Head) -> int | None:
    """The number of logits ``head`` gives (``out_features`` or its weight's rows), None if unknown."""
    size = getattr(head, "out_features", None)
    if isinstance(size, int):
        return size
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.ndim == 2 else None


def check_cached_tokens(cached: TokenTeacher, labels: Tensor) -> None:
    """Refuse stored teacher rows that do not line up with the batch's valid positions (B, L labels)."""
    valid = (next_token_labels(labels) != IGNORE_INDEX).sum(1)
    counts = cached.counts.to(valid.device)
    if counts.shape != valid.shape or not bool((counts == valid).all()):
        wrong = [] if counts.shape != valid.shape else (counts != valid).nonzero().flatten().tolist()[:5]
        detail = (f"{len(counts)} sequences for a batch of {len(valid)}" if counts.shape != valid.shape else
                  ", ".join(f"sequence {row}: {int(counts[row])} stored tokens, {int(valid[row])} valid positions"
                            for row in wrong))
        raise ValueError(f"token task: the cached teacher tokens do not line up with the batch ({detail}); the "
                         "cache was built for other sequences or other masks: rebuild it for this data "
                         "(distill.data.token_cache.build_token_cache(..., overwrite=True))")


def _placed(cached: TokenTeacher, targets: Tensor, start: int, stop: int) -> SparseTeacher:
    """Token rows ``start:stop`` placed at the valid positions (``targets != -100``) of a chunk (n,): a
    SparseTeacher over n positions whose other positions hold the uniform distribution (masked anyway)."""
    rows = cached.rows(start, stop)
    valid = targets != IGNORE_INDEX
    if bool(valid.all()):
        return rows
    count, k = len(targets), rows.k
    values = rows.values.new_zeros((count, k))
    values[valid] = rows.values
    indices = torch.arange(k, device=rows.indices.device).expand(count, k).clone()
    indices[valid] = rows.indices
    log_tail = None
    if rows.log_tail is not None:
        uniform = math.log1p(-k / cached.vocab_size) if k < cached.vocab_size else -math.inf
        log_tail = rows.log_tail.new_full((count,), uniform)
        log_tail[valid] = rows.log_tail
    return SparseTeacher(values, indices, log_tail, rows.tail_temperature, rows.mode)


class _FusedChunks(torch.autograd.Function):
    """Sum of a per-chunk loss over ``chunk_size``-row pieces of (N, H) hidden states, with the gradients
    (of the rows and of the head's parameters) computed piece by piece during the forward pass and kept:
    the (N, V) logits never exist at once and the backward pass only scales the stored gradients by the
    incoming one, so the head's matmul is not recomputed (as checkpointing would) -- the fused
    linear + loss of Liger-Kernel / Apple's cut cross-entropy, for any loss of the family.
    Not twice differentiable."""

    @staticmethod
    def forward(ctx, piece_loss: Callable[[int, Tensor], Tensor], chunk_size: int, hidden: Tensor,
                *params: Tensor) -> Tensor:
        wants_hidden = hidden.requires_grad
        grad_hidden = torch.zeros_like(hidden) if wants_hidden else None
        grad_params: list[Tensor | None] = [None] * len(params)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.enable_grad():
            for number, rows in enumerate(hidden.detach().split(chunk_size)):
                rows = rows.requires_grad_(wants_hidden)
                value = piece_loss(number, rows).float()
                inputs = ([rows] if wants_hidden else []) + list(params)
                got = torch.autograd.grad(value, inputs, allow_unused=True)
                if wants_hidden:
                    start = number * chunk_size
                    if got[0] is not None:
                        grad_hidden[start:start + len(rows)] = got[0]
                    got = got[1:]
                for position, grad in enumerate(got):
                    if grad is not None:
                        grad_params[position] = grad if grad_params[position] is None else grad_params[position] + grad
                total = total + value.detach()
        ctx.wants_hidden = wants_hidden
        ctx.unused = [grad is None for grad in grad_params]
        ctx.save_for_backward(*([grad_hidden] if wants_hidden else []), *[g for g in grad_params if g is not None])
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        saved = list(ctx.saved_tensors)
        grad_hidden = saved.pop(0) * grad_output if ctx.wants_hidden else None  # a 0-dim factor keeps each dtype
        grads = iter(saved)
        return (None, None, grad_hidden, *[None if unused else next(grads) * grad_output for unused in ctx.unused])


def chunked_token_loss(loss_fn: Callable[..., Tensor], student: Tensor, student_head: Head | None, labels: Tensor, *,
                       teacher_logits: Tensor | None = None, teacher_hidden: Tensor | None = None,
                       teacher_head: Head | None = None, temperature: float = 1.0, chunk_size: int = 256,
                       **params: Any) -> Tensor:
    """Sum over valid tokens of ``loss_fn(student_logits, teacher_logits, target)`` per token, in chunks.

    Args:
        loss_fn: a per-position logit loss of the core family (``distill.losses.kl``, ``reverse_kl``,
            ``jsd``, ``tvd``, ``cross_entropy`` ...), called with ``reduction="sum"`` on (chunk, V) logits.
        student: (B, L, H) the student's last hidden states with ``student_head`` (hidden -> logits, e.g.
            ``lm_head``): only valid positions are computed, the (B, L, V) logits never exist; or
            (B, L, V) logits with ``student_head=None``: cut into ``chunk_size`` positions (views, no copy).
        labels: (B, L) int64 token ids with -100 where no loss is taken (prompt, padding); position ``i``
            is scored against ``labels[:, i + 1]``.
        teacher_logits: (B, L, V) teacher logits (any dtype: read one chunk at a time, upcast), or a
            :class:`~distill.data.token_cache.TokenTeacher` (stored top-k + tail rows of the valid tokens,
            from a token cache: the loss over k or k + 1 buckets, see :mod:`distill.losses.logits`), or
        teacher_hidden + teacher_head: the teacher's (B, L, H_t) hidden states and its head (run without grad).
        chunk_size: positions per chunk; the loss's peak memory ~ a few ``chunk_size x V`` fp32 tensors.
        params: the loss's own parameters (``beta`` for jsd ...).

    Both vocabularies must have the same size (cut padded tables to the shared ids first:
    :func:`distill.llm.shared_vocabulary`). Returns a scalar fp32: the sum over valid tokens (0 when none is).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if student.ndim != 3 or labels.shape != student.shape[:2]:
        raise ValueError(f"the student's {'hidden states' if student_head is not None else 'logits'} must be (B, L, ...) "
                         f"and labels (B, L); got {tuple(student.shape)} and {tuple(labels.shape)}")
    if teacher_logits is not None and teacher_hidden is not None:
        raise ValueError("give the teacher as teacher_logits or as teacher_hidden + teacher_head, not both")
    if teacher_hidden is not None and teacher_head is None:
        raise ValueError("teacher_hidden needs teacher_head (its output layer) to make logits")
    cached = teacher_logits if isinstance(teacher_logits, TokenTeacher) else None
    teacher = None if cached is not None else teacher_logits if teacher_logits is not None else teacher_hidden
    if teacher is not None and teacher.shape[:2] != labels.shape:
        raise ValueError(f"the teacher's outputs {tuple(teacher.shape)} do not cover the labels {tuple(labels.shape)}")
    next_labels = next_token_labels(labels).reshape(-1)
    if cached is not None:
        check_cached_tokens(cached, labels)
    flat_student = student.reshape(-1, student.shape[-1])
    flat_teacher = None if teacher is None else teacher.reshape(-1, teacher.shape[-1])

    def teacher_rows(rows: Tensor | slice, tokens: tuple[int, int] | None) -> Tensor | SparseTeacher | None:
        if cached is not None:  # stored rows of the valid tokens; inside a chunk of positions, placed at the valid ones
            return cached.rows(*tokens) if student_head is not None else _placed(cached, next_labels[rows], *tokens)
        if flat_teacher is None:
            return None
        with torch.no_grad():
            chunk = flat_teacher[rows]
            return (teacher_head(chunk) if teacher_hidden is not None else chunk).float()

    def loss_of(student_rows: Tensor, teacher_chunk: Tensor | None, target: Tensor, mask: Tensor | None) -> Tensor:
        student_logits = student_rows if student_head is None else student_head(student_rows)
        student_logits = student_logits.float()
        if isinstance(teacher_chunk, Tensor) and teacher_chunk.shape[-1] != student_logits.shape[-1]:
            raise ValueError(f"the teacher's vocabulary has {teacher_chunk.shape[-1]} entries and the student's "
                             f"{student_logits.shape[-1]}; distil between models that share a tokenizer (a table "
                             "padded to another size: cut both to the shared ids, distill.llm.ChunkedLM(vocab_size=...))")
        return loss_fn(student_logits, teacher_chunk, target, temperature=temperature, mask=mask, reduction="sum",
                       **params)

    if student_head is not None:  # hidden states: gather the valid positions once (N, H), then chunk them
        rows = torch.nonzero(next_labels != IGNORE_INDEX).squeeze(1)
        pieces = [(rows[start:start + chunk_size], (start, min(start + chunk_size, len(rows))))
                  for start in range(0, len(rows), chunk_size)]
        student_pieces = flat_student.index_select(0, rows).split(chunk_size) if len(rows) else ()
    else:  # logits: contiguous views (no copy), invalid positions masked inside a chunk
        before = torch.cat([next_labels.new_zeros(1), (next_labels != IGNORE_INDEX).cumsum(0)]).tolist()
        pieces = [(slice(start, start + chunk_size), (before[start], before[min(start + chunk_size, len(next_labels))]))
                  for start in range(0, len(next_labels), chunk_size)]
        student_pieces = flat_student.split(chunk_size)
    if student_head is not None and torch.is_grad_enabled() and len(pieces):
        # a head that is not a module may hold parameters we cannot see: it keeps the checkpointed path
        fused = isinstance(student_head, nn.Module)
        head_params = tuple(p for p in student_head.parameters() if p.requires_grad) if fused else ()
        gathered = flat_student.index_select(0, rows)
        if fused and (gathered.requires_grad or head_params):
            def piece_loss(number: int, student_rows: Tensor) -> Tensor:
                index, tokens = pieces[number]
                target = next_labels[index]
                return loss_of(student_rows, teacher_rows(index, tokens), target, None)

            return _FusedChunks.apply(piece_loss, chunk_size, gathered, *head_params)
    total = student.new_zeros((), dtype=torch.float32)
    for (index, tokens), student_rows in zip(pieces, student_pieces):
        target = next_labels[index]
        valid = target != IGNORE_INDEX
        if student_head is None:
            if not bool(valid.any()):
                continue
            mask = valid
        else:
            mask = None
        target = torch.where(valid, target, 0)
        teacher_chunk = teacher_rows(index, tokens)
        if torch.is_grad_enabled() and student_rows.requires_grad:
            value = checkpoint(loss_of, student_rows, teacher_chunk, target, mask, use_reentrant=False)
        else:
            value = loss_of(student_rows, teacher_chunk, target, mask)
        total = total + value
    return total


class TokenTask(Task):
    """Outputs: logits (B, L, V), or a :class:`TokenHidden` (hidden states + head) for the student.
    Losses per valid token in chunks of ``chunk_size`` positions (None: all at once). Metrics per
    valid token: agreement with the teacher's top-1, KL(teacher || student), and the student's
    perplexity on the labels."""

    name = "token"
    token_level = True

    def __init__(self, chunk_size: int | None = 256) -> None:
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"token task: chunk_size must be an int >= 1 or None, got {chunk_size!r}")
        self.chunk_size = chunk_size

    def read(self, output: Any, batch: dict[str, Any], *, who: str) -> Tensor:
        if isinstance(output, TokenHidden):  # hidden states; the head rides on the tensor to term_value
            hidden = output.hidden
            if hidden.ndim != 3:
                raise ValueError(f"token task: {who} gave hidden states of shape {tuple(hidden.shape)}; expected (B, L, H)")
            setattr(hidden, _HEAD, output)
            return hidden
        logits = logits_of(output, who=who)
        if logits.ndim != 3:
            raise ValueError(f"token task: {who} gave logits of shape {tuple(logits.shape)}; a causal LM gives (B, L, V)")
        return logits

    def count(self, batch: dict[str, Any]) -> int:
        return int((token_labels(batch)[:, 1:] != IGNORE_INDEX).sum())

    def term_value(self, term, student: Tensor, teacher: Tensor | None, batch: dict[str, Any]) -> Tensor:
        labels = token_labels(batch)
        hidden = getattr(student, _HEAD, None)
        head = None if hidden is None else hidden.head
        if isinstance(teacher, TokenTeacher):  # stored top-k + tail rows (a token cache): chunked, always
            if term.name in BATCH_STATISTIC_LOSSES:
                raise ValueError(f"token task: loss {term.name!r} needs every teacher logit; a token cache keeps "
                                 "the top-k only: use kl, reverse_kl, jsd, tvd ... or the live teacher")
            size = student.shape[-1] if hidden is None else hidden.size()
            if size is not None and size != teacher.vocab_size:
                raise ValueError(f"token task: the cached teacher's vocabulary has {teacher.vocab_size} entries and "
                                 f"the student's {size}; distil between models that share a tokenizer")
        if head is None and not isinstance(teacher, TokenTeacher) and (
                self.chunk_size is None or term.name in BATCH_STATISTIC_LOSSES):
            student_logits, next_labels, valid = shifted(student, labels)
            teacher_logits = None if teacher is None else teacher[:, :-1]
            total = term.fn(student_logits, teacher_logits, next_labels, temperature=term.temperature, mask=valid,
                            reduction="sum", **term.params)
        else:
            if head is not None and term.name in BATCH_STATISTIC_LOSSES:
                raise ValueError(f"token task: loss {term.name!r} correlates positions across the batch and needs all "
                                 "logits at once; the student gave hidden states (a ChunkedLM): use the plain model")
            total = chunked_token_loss(term.fn, student, head, labels, teacher_logits=teacher,
                                       temperature=term.temperature, chunk_size=self.chunk_size or 256, **term.params)
        normaliser = batch.get("token_normaliser")
        if normaliser is None:  # one micro-batch on its own: its own valid tokens
            normaliser = (labels[:, 1:] != IGNORE_INDEX).sum().clamp(min=1)
        return total / normaliser

    def check_pair(self, student: Tensor, teacher: Tensor) -> None:
        if student.shape[:2] != teacher.shape[:2]:
            raise ValueError(f"token task: teacher logits {tuple(teacher.shape)} and student outputs "
                             f"{tuple(student.shape)} cover different tokens")
        hidden = getattr(student, _HEAD, None)
        size = student.shape[-1] if hidden is None else hidden.size()
        if size is not None and size != teacher.shape[-1]:
            raise ValueError(f"token task: the teacher's vocabulary has {teacher.shape[-1]} entries and the "
                             f"student's {size}; distil between models that share a tokenizer (one tokenizer with "
                             "tables padded to different sizes: distill.llm.ChunkedLM(model, vocab_size=...) cuts both)")

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

    def __repr__(self) -> str:
        return f"TokenTask(chunk_size={self.chunk_size!r})"
