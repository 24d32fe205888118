"""Logit losses: pure functions comparing student logits with teacher logits (and/or labels).

Uniform signature (student first, teacher second, target third)::

    fn(student_logits, teacher_logits=None, target=None, *, mask=None, reduction="mean",
       temperature=1.0, **its_own_params) -> Tensor

Shapes: ``student_logits`` and ``teacher_logits`` are ``(..., C)`` (``(B, C)`` for images,
``(B, L, C)`` for tokens); ``target`` is ``(...)`` int64 class ids; ``mask`` is an optional bool
``(...)`` tensor, True where a position counts. Masked positions contribute exactly 0 and are
not counted; their logits and targets are replaced before any arithmetic, so NaN/inf/-100 there
never leak into the value or the gradient.

``reduction``: ``"mean"`` sums over classes and averages over valid positions (PyTorch's
``"batchmean"`` for 2-D input; 0 when no position is valid), ``"sum"`` sums over valid positions
(divide by a global count yourself for gradient accumulation / DDP), ``"none"`` returns the
per-position values ``(...)`` with zeros where masked.

Precision: half/bfloat16 inputs are upcast and the loss is computed and returned in float32
(float64 inputs stay float64, e.g. for ``gradcheck``). ``teacher_logits`` are always detached.

Temperature convention (stated once, here): distributions are ``softmax(z / T)`` and every
distribution-matching loss (kl, reverse_kl, jsd, skew_kl, skew_reverse_kl, tvd, dkd, dist) is
multiplied by ``T**2`` so that gradient magnitudes stay comparable across temperatures
(Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531,
sec. 2). ``mse`` compares raw logits, where ``T`` cancels exactly; ``cross_entropy`` requires
``T == 1``.

Log-space throughout: ``KL(P || Q) = sum_c p_c (log p_c - log q_c)`` from ``log_softmax`` with
``0 log 0 = 0``, so classes whose probability is 0 (``-inf`` logits in both models, or
underflow) give no NaN.

Sparse top-k teacher. Every distribution-matching loss (``SPARSE_TEACHER_LOSSES``: kl,
reverse_kl, jsd, skew_kl, skew_reverse_kl, tvd) also accepts ``teacher_logits`` as a
:class:`~distill.losses.sparse.SparseTeacher`: per position the teacher's k largest logits
``v`` ``(..., k)``, their class ids ``I`` and, optionally, ``log_tail = log sum_{c not in I}
softmax(z_t / T_c)_c`` computed at the cache's temperature ``T_c``. The same divergence is then
taken between two distributions over buckets instead of classes, in one of two modes:

- ``mode="renormalized"`` (k buckets): ``P = softmax(v / T)`` and ``Q = softmax(z_s[I] / T)``,
  both models restricted to the teacher's top-k classes and renormalised there. The loss is the
  divergence between the two conditional distributions given "the class is among the teacher's
  top k"; it ignores how much mass the student puts outside the top k (a cross-entropy term or
  the tail mode supplies that). Works at any temperature, needs no ``log_tail``. This is the
  usual "top-k logits" practice of offline LLM distillation.
- ``mode="tail"`` (k + 1 buckets): the k classes plus one bucket for all other classes.
  ``P_I = (1 - tail) * softmax(v / T)``, ``P_tail = tail = exp(log_tail)`` (the top-k share the
  mass outside the tail in the teacher's own proportions), and ``Q_I = softmax(z_s / T)[I]``,
  ``Q_tail = 1 - sum(Q_I)`` (computed as a logsumexp of the student's log-probabilities over the
  other classes: exact for extreme logits). This is the teacher's true distribution with its
  tail classes merged into one (exact up to the stored precision of ``v``), so the student is
  also taught how much mass to leave outside the top k. It needs ``tail_temperature == T``
  (the tail mass depends on T), else ValueError.

With ``k == C`` both modes equal the dense loss (the tail is empty: ``log_tail = -inf``).
``dkd``, ``dist`` and ``mse`` need every teacher logit and raise on a SparseTeacher;
``cross_entropy`` ignores the teacher.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .sparse import SparseTeacher, mask_sparse, sparse_log_distributions

REDUCTIONS = ("mean", "sum", "none")
# the losses that accept a SparseTeacher (they compare two distributions); dkd, dist and mse
# need every class of the teacher and raise; cross_entropy ignores the teacher
SPARSE_TEACHER_LOSSES = ("kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd")


# ----------------------------------------------------------------------------- shared helpers
def _prepare(name: str, student_logits: Tensor, teacher_logits: Tensor | SparseTeacher | None,
             target: Tensor | None, mask: Tensor | None, reduction: str, temperature: float,
             needs: tuple[str, ...], sparse_ok: bool = False):
    """Validate arguments; return fp32 (or fp64) student, detached teacher, target, mask.

    Masked positions are overwritten with 0 (logits) / class 0 (target) so that whatever was
    there cannot reach the value or the gradient; a masked ``SparseTeacher`` position becomes the
    uniform distribution (``mask_sparse``). A ``SparseTeacher`` is accepted only with
    ``sparse_ok`` (the distribution losses); the others raise, naming the alternatives.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction={reduction!r} is not one of {REDUCTIONS}")
    if not temperature > 0:
        raise ValueError(f"{name}: temperature must be > 0, got {temperature!r}")
    if student_logits.dim() < 1 or not student_logits.is_floating_point():
        raise ValueError(f"{name}: student_logits must be a floating tensor of shape (..., C), "
                         f"got dtype {student_logits.dtype} shape {tuple(student_logits.shape)}")
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    positions = student_logits.shape[:-1]
    student = student_logits.to(dtype)
    teacher = None
    sparse = isinstance(teacher_logits, SparseTeacher) and "teacher" in needs
    if sparse and not sparse_ok:
        raise ValueError(f"{name} needs dense teacher_logits of shape {tuple(student_logits.shape)}, got a "
                         f"SparseTeacher (top-{teacher_logits.k}); use a dense teacher cache (k=None), the "
                         f"live teacher, or a distribution loss ({', '.join(SPARSE_TEACHER_LOSSES)})")
    if sparse:
        if teacher_logits.shape != positions:
            raise ValueError(f"{name}: SparseTeacher positions {tuple(teacher_logits.shape)} != student "
                             f"positions {tuple(positions)} (student_logits {tuple(student_logits.shape)})")
        if teacher_logits.k > student_logits.shape[-1]:
            raise ValueError(f"{name}: SparseTeacher has k={teacher_logits.k} > C={student_logits.shape[-1]} classes")
        log_tail = teacher_logits.log_tail
        teacher = SparseTeacher(teacher_logits.values.detach().to(dtype), teacher_logits.indices,
                                None if log_tail is None else log_tail.detach().to(dtype),
                                teacher_logits.tail_temperature, teacher_logits.mode)
    elif "teacher" in needs:
        if teacher_logits is None:
            raise ValueError(f"{name} needs teacher_logits, got None")
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(f"{name}: student_logits shape {tuple(student_logits.shape)} != "
                             f"teacher_logits shape {tuple(teacher_logits.shape)}")
        teacher = teacher_logits.detach().to(dtype)
    if "target" in needs:
        if target is None:
            raise ValueError(f"{name} needs target (int64 class ids of shape {tuple(positions)}), got None")
        if target.shape != positions or target.is_floating_point():
            raise ValueError(f"{name}: target must be integer class ids of shape {tuple(positions)}, "
                             f"got dtype {target.dtype} shape {tuple(target.shape)}")
        target = target.long()
    else:
        target = None
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape != positions:
            raise ValueError(f"{name}: mask must be a bool tensor of shape {tuple(positions)}, "
                             f"got dtype {mask.dtype} shape {tuple(mask.shape)}")
        student = torch.where(mask.unsqueeze(-1), student, 0.0)
        if sparse:
            teacher = mask_sparse(teacher, mask, student.shape[-1])
        elif teacher is not None:
            teacher = torch.where(mask.unsqueeze(-1), teacher, 0.0)
        target = None if target is None else torch.where(mask, target, 0)
    if sparse:
        invalid = ((teacher.indices < 0) | (teacher.indices >= student.shape[-1])).any(-1)
        if invalid.any():  # masked positions were given indices 0..k-1 above
            raise ValueError(f"{name}: SparseTeacher has class ids outside [0, {student.shape[-1]}) at valid positions")
    if target is not None:
        invalid = (target < 0) | (target >= student.shape[-1])
        if (invalid if mask is None else invalid & mask).any():
            raise ValueError(f"{name}: target has class ids outside [0, {student.shape[-1]}) at valid "
                             "positions; mask out ignored positions (e.g. -100) with `mask`")
    return student, teacher, target, mask


def _reduce(per_position: Tensor, mask: Tensor | None, reduction: str) -> Tensor:
    """Reduce per-position values ``(...)``: masked ones are exact zeros and not counted."""
    if mask is not None:
        per_position = torch.where(mask, per_position, 0.0)
    if reduction == "none":
        return per_position
    if reduction == "sum":
        return per_position.sum()
    count = per_position.numel() if mask is None else mask.sum().clamp(min=1)
    return per_position.sum() / count


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(P || Q)`` over the last dim from log-probabilities, with ``0 log 0 = 0``."""
    difference = torch.where(log_p > -math.inf, log_p - log_q, 0.0)
    return (log_p.exp() * difference).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, weight: float) -> Tensor:
    """``log(weight * A + (1 - weight) * B)`` from log-probabilities, NaN-free at the ends."""
    if weight == 0.0:  # log 0 = -inf would meet -inf log-probs: the mixture is simply B (or A)
        return log_b
    if weight == 1.0:
        return log_a
    both_zero = (log_a == -math.inf) & (log_b == -math.inf)  # keep logaddexp's gradient finite
    mixed = torch.logaddexp(torch.where(both_zero, 0.0, log_a) + math.log(weight),
                            torch.where(both_zero, 0.0, log_b) + math.log1p(-weight))
    return torch.where(both_zero, -math.inf, mixed)


def _check_unit(name: str, param: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: {param} must be in [0, 1], got {value!r}")


def _distribution_loss(name: str, divergence: Callable[[Tensor, Tensor], Tensor], student_logits: Tensor,
                       teacher_logits: Tensor | SparseTeacher | None, mask: Tensor | None, reduction: str,
                       temperature: float) -> Tensor:
    """``T**2 * divergence(log p_teacher, log q_student)`` per position, then reduced.

    The one place where a dense teacher becomes ``softmax(z / T)`` over C classes and a
    ``SparseTeacher`` becomes a pair of distributions over k or k + 1 buckets.
    """
    student, teacher, _, mask = _prepare(name, student_logits, teacher_logits, None, mask, reduction,
                                         temperature, needs=("teacher",), sparse_ok=True)
    if isinstance(teacher, SparseTeacher):
        log_p, log_q = sparse_log_distributions(name, student, teacher, temperature)
    else:
        log_q = F.log_softmax(student / temperature, dim=-1)
        log_p = F.log_softmax(teacher / temperature, dim=-1)
    return _reduce(divergence(log_p, log_q) * temperature**2, mask, reduction)


# ----------------------------------------------------------------------------- the losses
def kl(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
       mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0) -> Tensor:
    """Forward KL, ``T**2 * KL(P || Q) = T**2 * sum_c p_c (log p_c - log q_c)``.

    ``P = softmax(teacher_logits / T)``, ``Q = softmax(student_logits / T)``; mass-covering.
    Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531.
    Shapes: logits ``(..., C)``; result scalar, or ``(...)`` for ``reduction="none"``.
    ``target`` is ignored.
    """
    return _distribution_loss("kl", _kl, student_logits, teacher_logits, mask, reduction, temperature)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
               mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0) -> Tensor:
    """Reverse KL, ``T**2 * KL(Q || P) = T**2 * sum_c q_c (log q_c - log p_c)``; mode-seeking.

    Gu, Dong, Wei & Huang, 2024, "MiniLLM: Knowledge Distillation of Large Language Models",
    arXiv 2306.08543; Agarwal et al., 2024, arXiv 2306.13649.
    Shapes: logits ``(..., C)``; result scalar, or ``(...)`` for ``reduction="none"``.
    """
    return _distribution_loss("reverse_kl", lambda log_p, log_q: _kl(log_q, log_p), student_logits,
                              teacher_logits, mask, reduction, temperature)


def jsd(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
        mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0,
        beta: float = 0.5) -> Tensor:
    """Generalised Jensen-Shannon divergence, ``T**2 * JSD_beta(P || Q)``.

    ``M = beta * P + (1 - beta) * Q`` (P teacher, Q student),
    ``JSD_beta = beta * KL(P || M) + (1 - beta) * KL(Q || M)``.
    Agarwal, Vieillard, Zhou, Stanczyk, Ramos, Geist & Bachem, 2024, "On-Policy Distillation of
    Language Models: Learning from Self-Generated Mistakes", arXiv 2306.13649.

    Convention: no special case at the ends. JSD_beta is continuous in beta, ``0 <= JSD_beta <=
    h(beta) = -beta log beta - (1 - beta) log(1 - beta)`` nats (before ``T**2``), and it is exactly 0
    at ``beta = 0`` and ``beta = 1``. Near the ends it is a scaled KL:
    ``JSD_beta / beta -> KL(P || Q)`` (forward) as ``beta -> 0`` and
    ``JSD_beta / (1 - beta) -> KL(Q || P)`` (reverse) as ``beta -> 1``
    (the other term is O(beta^2), resp. O((1 - beta)^2)). For a forward or reverse KL objective
    use ``kl`` / ``reverse_kl``. ``beta = 0.5`` is the symmetric JSD.
    Shapes: logits ``(..., C)``; result scalar, or ``(...)`` for ``reduction="none"``.
    """
    _check_unit("jsd", "beta", beta)

    def divergence(log_p: Tensor, log_q: Tensor) -> Tensor:
        log_m = _log_mix(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)

    return _distribution_loss("jsd", divergence, student_logits, teacher_logits, mask, reduction, temperature)


def skew_kl(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
            mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0,
            alpha: float = 0.1) -> Tensor:
    """Skew forward KL, ``T**2 * KL(P || alpha * P + (1 - alpha) * Q)``.

    Ko, Kim, Chen & Yun, 2024, "DistiLLM: Towards Streamlined Distillation for Large Language
    Models", arXiv 2402.03898 (alpha-SKL, default alpha = 0.1). ``alpha = 0`` is ``kl``;
    ``alpha = 1`` is identically 0. Bounded by ``log(1 / alpha)``.
    Shapes: logits ``(..., C)``; result scalar, or ``(...)`` for ``reduction="none"``.
    """
    _check_unit("skew_kl", "alpha", alpha)
    return _distribution_loss("skew_kl", lambda log_p, log_q: _kl(log_p, _log_mix(log_p, log_q, alpha)),
                              student_logits, teacher_logits, mask, reduction, temperature)


def skew_reverse_kl(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None,
                    *, mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0,
                    alpha: float = 0.1) -> Tensor:
    """Skew reverse KL, ``T**2 * KL(Q || alpha * Q + (1 - alpha) * P)``.

    Ko, Kim, Chen & Yun, 2024, "DistiLLM", arXiv 2402.03898 (alpha-SRKL, default alpha = 0.1).
    ``alpha = 0`` is ``reverse_kl``; ``alpha = 1`` is identically 0.
    Shapes: logits ``(..., C)``; result scalar, or ``(...)`` for ``reduction="none"``.
    """
    _check_unit("skew_reverse_kl", "alpha", alpha)
    return _distribution_loss("skew_reverse_kl",
                              lambda log_p, log_q: _kl(log_q, _log_mix(log_q, log_p, alpha)),
                              student_logits, teacher_logits, mask, reduction, temperature)


def tvd(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
        mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0) -> Tensor:
    """Total variation distance, ``T**2 * 0.5 * sum_c |p_c - q_c|`` (in [0, 1] before ``T**2``).

    Wen, Li, Du & Mou, 2023, "f-Divergence Minimization for Sequence-Level Knowledge
    Distillation", arXiv 2307.15190.
    Shapes: logits ``(..., C)``; result scalar, or ``(...)`` for ``reduction="none"``.
    """
    return _distribution_loss("tvd", lambda log_p, log_q: 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1),
                              student_logits, teacher_logits, mask, reduction, temperature)


def dkd(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
        mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0,
        alpha: float = 1.0, beta: float = 8.0) -> Tensor:
    """Decoupled KD, ``T**2 * (alpha * TCKD + beta * NCKD)``; needs ``target``.

    With ``p = softmax(teacher / T)``, ``q = softmax(student / T)`` and target class ``y``:
    ``TCKD = KL([p_y, 1 - p_y] || [q_y, 1 - q_y])`` (binary target / non-target) and
    ``NCKD = KL(p_hat || q_hat)`` over the non-target classes renormalised,
    ``p_hat_i = p_i / (1 - p_y)`` for ``i != y``.
    Zhao, Cui, Song, Qiu & Liang, 2022, "Decoupled Knowledge Distillation", arXiv 2203.08679.
    The paper's code subtracts 1000 from the target logit before the softmax; here the target
    logit is set to ``-inf`` (exact, no overflow) and ``1 - p_y`` is a logsumexp of the
    non-target log-probabilities. The temperature is the uniform argument (the paper uses 4);
    the paper's linear warm-up of the weight belongs to the caller. Needs ``C >= 2``.
    Shapes: logits ``(..., C)``, target ``(...)``; result scalar, or ``(...)`` for ``"none"``.
    """
    student, teacher, target, mask = _prepare("dkd", student_logits, teacher_logits, target, mask, reduction,
                                              temperature, needs=("teacher", "target"))
    if student.shape[-1] < 2:
        raise ValueError(f"dkd needs at least 2 classes, got C={student.shape[-1]}")
    is_target = F.one_hot(target, student.shape[-1]).bool()
    student, teacher = student / temperature, teacher / temperature

    def binary(logits: Tensor) -> Tensor:  # log [p_y, 1 - p_y]
        log_probs = F.log_softmax(logits, dim=-1)
        return torch.stack([log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1),
                            log_probs.masked_fill(is_target, -math.inf).logsumexp(-1)], dim=-1)

    def non_target(logits: Tensor) -> Tensor:  # log p_hat
        return F.log_softmax(logits.masked_fill(is_target, -math.inf), dim=-1)

    tckd = _kl(binary(teacher), binary(student))
    nckd = _kl(non_target(teacher), non_target(student))
    return _reduce((alpha * tckd + beta * nckd) * temperature**2, mask, reduction)


def _pearson(a: Tensor, b: Tensor, dim: int, weight: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Pearson correlation along ``dim``; ``weight`` (0/1, broadcastable) selects the entries."""
    if weight is None:
        a, b = a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True)
    else:
        count = weight.sum(dim, keepdim=True).clamp(min=1)
        a = (a - (a * weight).sum(dim, keepdim=True) / count) * weight
        b = (b - (b * weight).sum(dim, keepdim=True) / count) * weight
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim)).clamp(min=eps)


def dist(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
         mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0,
         beta: float = 1.0, gamma: float = 1.0) -> Tensor:
    """DIST, ``T**2 * (beta * inter + gamma * intra)`` on ``p = softmax(teacher / T)``, ``q = ...``.

    ``inter = mean_rows (1 - pearson(q_row, p_row))`` (correlation across classes, per row);
    ``intra = mean_classes (1 - pearson(q[:, c], p[:, c]))`` (correlation across the batch).
    Huang, You, Wang, Qian & Xu, 2022, "Knowledge Distillation from A Stronger Teacher",
    arXiv 2205.10536 (beta = gamma = 1). Pearson uses ``eps = 1e-8`` on the norm product.
    Leading dims of ``(..., C)`` are flattened to rows; only valid rows (``mask``) enter either
    term, so ``intra`` needs at least 2 valid rows to be meaningful. The loss is a batch
    statistic: ``reduction="none"`` raises; ``"sum"`` returns the mean times the number of
    valid rows.
    """
    if reduction == "none":
        raise ValueError("dist: reduction='none' is not meaningful, the intra-class term correlates "
                         "across the batch; use 'mean' or 'sum'")
    student, teacher, _, mask = _prepare("dist", student_logits, teacher_logits, None, mask, reduction,
                                         temperature, needs=("teacher",))
    classes = student.shape[-1]
    q = F.softmax(student / temperature, dim=-1).reshape(-1, classes)
    p = F.softmax(teacher / temperature, dim=-1).reshape(-1, classes)
    rows = None if mask is None else mask.reshape(-1)
    inter = _reduce(1.0 - _pearson(q, p, dim=-1), rows, "mean")
    intra = (1.0 - _pearson(q, p, dim=0, weight=None if rows is None else rows.unsqueeze(-1).to(q.dtype))).mean()
    loss = (beta * inter + gamma * intra) * temperature**2
    if reduction == "sum":
        return loss * (q.shape[0] if rows is None else rows.sum())
    return loss


def mse(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
        mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0) -> Tensor:
    """Logit regression, ``mean_c (z_s - z_t)**2`` per position.

    Temperature has no effect: ``T**2 * mean_c (z_s / T - z_t / T)**2`` is the same number
    (it is still validated). ``reduction="mean"`` equals ``F.mse_loss`` on unmasked input.
    Ba & Caruana, 2014, "Do Deep Nets Really Need to be Deep?", arXiv 1312.6184; Kim, Oh, Kim,
    Cho & Yun, 2021, "Comparing Kullback-Leibler Divergence and Mean Squared Error Loss in
    Knowledge Distillation", arXiv 2105.08919. ``-inf`` logits give NaN here (compare finite logits).
    Shapes: logits ``(..., C)``; result scalar, or ``(...)`` for ``reduction="none"``.
    """
    student, teacher, _, mask = _prepare("mse", student_logits, teacher_logits, None, mask, reduction,
                                         temperature, needs=("teacher",))
    return _reduce((student - teacher).square().mean(-1), mask, reduction)


def cosine_distance(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None, *,
                    mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0) -> Tensor:
    """Cosine distance of output vectors, ``1 - cos(z_s, z_t)`` per position (in [0, 2]).

    For sentence embeddings (the ``embedding`` task: the student's embedding matches the teacher's
    direction, as in Reimers & Gurevych 2020, "Making Monolingual Sentence Embeddings Multilingual
    using Knowledge Distillation", arXiv 2004.09813, which uses MSE; cosine ignores the norm).
    Temperature has no effect (validated only). Vectors of different widths need a projection first.
    Shapes: ``(..., D)`` each; result scalar, or ``(...)`` for ``reduction="none"``.
    """
    student, teacher, _, mask = _prepare("cosine_distance", student_logits, teacher_logits, None, mask, reduction,
                                         temperature, needs=("teacher",))
    return _reduce(1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8), mask, reduction)


def cross_entropy(student_logits: Tensor, teacher_logits: Tensor | None = None, target: Tensor | None = None,
                  *, mask: Tensor | None = None, reduction: str = "mean", temperature: float = 1.0,
                  label_smoothing: float = 0.0) -> Tensor:
    """Hard-label cross-entropy of the student, ``-sum_c y_c log q_c`` with
    ``y = (1 - eps) * onehot(target) + eps / C`` (``eps = label_smoothing``).

    ``teacher_logits`` is ignored (may be None). ``temperature`` must be 1: a softened hard-label
    loss is almost always a mistake, so any other value raises ValueError.
    Szegedy et al., 2016, "Rethinking the Inception Architecture for Computer Vision",
    arXiv 1512.00567 (label smoothing).
    Shapes: logits ``(..., C)``, target ``(...)``; result scalar, or ``(...)`` for ``"none"``.
    """
    if temperature != 1.0:
        raise ValueError(f"cross_entropy: temperature must be 1.0 (hard labels), got {temperature!r}")
    _check_unit("cross_entropy", "label_smoothing", label_smoothing)
    student, _, target, mask = _prepare("cross_entropy", student_logits, None, target, mask, reduction,
                                        temperature, needs=("target",))
    classes = student.shape[-1]
    per_position = F.cross_entropy(student.reshape(-1, classes), target.reshape(-1), reduction="none",
                                   label_smoothing=label_smoothing).reshape(target.shape)
    return _reduce(per_position, mask, reduction)
