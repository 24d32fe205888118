"""A sparse top-k teacher: the teacher's k largest logits, their class ids and its tail mass.

Stored teacher outputs (``distill.data.cache``) keep only the top-k logits of each position;
the distribution-matching losses of :mod:`distill.losses.logits` accept a :class:`SparseTeacher`
wherever they accept dense ``teacher_logits`` and compare the two models over ``k`` (mode
``"renormalized"``) or ``k + 1`` (mode ``"tail"``) buckets. The two modes and their formulas
are documented in :mod:`distill.losses.logits`; the conversion lives here, once.

Shapes: ``values`` ``(..., k)`` float, ``indices`` ``(..., k)`` int (any integer dtype; kept as
int64), ``log_tail`` ``(...)`` float or None. This module imports nothing of ours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SPARSE_MODES = ("renormalized", "tail")


@dataclass
class SparseTeacher:
    """Top-k teacher logits for each position.

    Attributes:
        values: ``(..., k)`` the teacher's k largest logits (raw, not divided by T).
        indices: ``(..., k)`` their class ids in ``[0, C)``; converted to int64.
        log_tail: ``(...)`` ``log`` of the teacher's probability mass outside the top-k, at
            ``tail_temperature``: ``log sum_{c not in top-k} softmax(z / T)_c``; ``-inf`` when
            ``k == C``. Needed by mode ``"tail"`` only.
        tail_temperature: the temperature ``log_tail`` was computed at.
        mode: ``"renormalized"`` or ``"tail"`` (see :mod:`distill.losses.logits`).
    """

    values: Tensor
    indices: Tensor
    log_tail: Tensor | None = None
    tail_temperature: float | None = None
    mode: str = "renormalized"

    def __post_init__(self) -> None:
        if self.mode not in SPARSE_MODES:
            raise ValueError(f"SparseTeacher: mode={self.mode!r} is not one of {SPARSE_MODES}")
        if not isinstance(self.values, Tensor) or self.values.dim() < 1 or not self.values.is_floating_point():
            raise ValueError("SparseTeacher: values must be a floating tensor of shape (..., k)")
        if not isinstance(self.indices, Tensor) or self.indices.is_floating_point() or self.indices.dtype == torch.bool:
            raise ValueError("SparseTeacher: indices must be an integer tensor of shape (..., k)")
        if self.indices.shape != self.values.shape:
            raise ValueError(f"SparseTeacher: indices shape {tuple(self.indices.shape)} != values shape "
                             f"{tuple(self.values.shape)}")
        if self.values.shape[-1] < 1:
            raise ValueError("SparseTeacher: k must be >= 1")
        self.indices = self.indices.long()
        if self.log_tail is not None:
            if self.log_tail.shape != self.values.shape[:-1] or not self.log_tail.is_floating_point():
                raise ValueError(f"SparseTeacher: log_tail must be a floating tensor of shape "
                                 f"{tuple(self.values.shape[:-1])}, got {self.log_tail.dtype} "
                                 f"{tuple(self.log_tail.shape)}")
        if self.mode == "tail" and (self.log_tail is None or self.tail_temperature is None):
            raise ValueError("SparseTeacher: mode='tail' needs log_tail and tail_temperature (the "
                             "temperature the tail mass was computed at)")

    @property
    def k(self) -> int:
        return self.values.shape[-1]

    @property
    def shape(self) -> torch.Size:
        """The positions ``(...)`` (without k)."""
        return self.values.shape[:-1]

    @classmethod
    def from_dense(cls, logits: Tensor, k: int, *, mode: str = "renormalized",
                   temperature: float = 1.0) -> "SparseTeacher":
        """The top-k of dense ``logits`` ``(..., C)``, with the tail mass at ``temperature``.

        ``values, indices = logits.topk(k)`` (sorted, largest first); ``log_tail`` is
        ``logsumexp(z / T over the other classes) - logsumexp(z / T)``, computed in float32 (or
        float64 for float64 input) from the dense logits, ``-inf`` when ``k == C``.
        """
        if not 1 <= k <= logits.shape[-1]:
            raise ValueError(f"SparseTeacher.from_dense: k must be in [1, {logits.shape[-1]}], got {k}")
        if not temperature > 0:
            raise ValueError(f"SparseTeacher.from_dense: temperature must be > 0, got {temperature!r}")
        logits = logits.detach()
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        values, indices = logits.topk(k, dim=-1)
        scaled = logits.to(dtype) / temperature
        log_tail = safe_logsumexp(scaled.scatter(-1, indices, -math.inf)) - scaled.logsumexp(-1)
        return cls(values, indices, log_tail, float(temperature), mode)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "SparseTeacher":
        """Move the tensors to ``device``; ``dtype`` applies to ``values`` and ``log_tail`` only."""
        def move(tensor: Tensor | None, floating: bool) -> Tensor | None:
            if tensor is None:
                return None
            return tensor.to(device=device, dtype=dtype if floating else None)

        return SparseTeacher(move(self.values, True), move(self.indices, False), move(self.log_tail, True),
                             self.tail_temperature, self.mode)

    def detach(self) -> "SparseTeacher":
        return SparseTeacher(self.values.detach(), self.indices, None if self.log_tail is None else
                             self.log_tail.detach(), self.tail_temperature, self.mode)

    def with_mode(self, mode: str) -> "SparseTeacher":
        return SparseTeacher(self.values, self.indices, self.log_tail, self.tail_temperature, mode)


def safe_logsumexp(x: Tensor) -> Tensor:
    """``logsumexp`` over the last dim; ``-inf`` (with zero gradient, not NaN) where all are ``-inf``."""
    empty = (x == -math.inf).all(-1, keepdim=True)
    out = torch.where(empty, 0.0, x).logsumexp(-1)
    return torch.where(empty.squeeze(-1), -math.inf, out)


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, stable at both ends (Maechler, 2012, "Accurately
    Computing log(1 - exp(-|a|))", CRAN Rmpfr vignette): ``log(-expm1(x))`` for ``x > -log 2``,
    else ``log1p(-exp(x))``."""
    near_zero = x > -math.log(2.0)
    return torch.where(near_zero, torch.log(-torch.expm1(torch.where(near_zero, x, -1.0))),
                       torch.log1p(-torch.exp(torch.where(near_zero, -1.0, x))))


def mask_sparse(teacher: SparseTeacher, mask: Tensor, num_classes: int) -> SparseTeacher:
    """Replace masked positions by a harmless teacher: the uniform distribution over C classes.

    Indices ``0..k-1``, values 0 and ``log_tail = log(1 - k / C)`` is exactly what a masked
    student (all-zero logits) gives, so masked positions carry no NaN/inf into any gradient.
    """
    keep = mask.unsqueeze(-1)
    k = teacher.k
    arange = torch.arange(k, device=teacher.indices.device).expand_as(teacher.indices)
    log_tail = teacher.log_tail
    if log_tail is not None:
        uniform_tail = math.log1p(-k / num_classes) if k < num_classes else -math.inf
        log_tail = torch.where(mask, log_tail, uniform_tail)
    return SparseTeacher(torch.where(keep, teacher.values, 0.0), torch.where(keep, teacher.indices, arange),
                         log_tail, teacher.tail_temperature, teacher.mode)


def sparse_log_distributions(name: str, student: Tensor, teacher: SparseTeacher,
                             temperature: float) -> tuple[Tensor, Tensor]:
    """``(log p_teacher, log q_student)`` over the teacher's buckets, last dim k or k + 1.

    ``student`` ``(..., C)`` and ``teacher.values`` already share one float dtype and their
    masked positions are neutralised (see ``mask_sparse``).
    """
    indices = teacher.indices
    scaled_values = teacher.values / temperature
    if teacher.mode == "renormalized":
        log_p = F.log_softmax(scaled_values, dim=-1)
        log_q = F.log_softmax(student.gather(-1, indices) / temperature, dim=-1)
        return log_p, log_q
    if teacher.tail_temperature is None or not math.isclose(teacher.tail_temperature, temperature,
                                                            rel_tol=1e-9, abs_tol=0.0):
        raise ValueError(f"{name}: the sparse teacher's tail mass was stored at T={teacher.tail_temperature} "
                         f"but the loss asks for T={temperature}; mode='tail' is exact only at the cache's "
                         f"temperature: build the cache at T={temperature} or use mode='renormalized'")
    log_tail_p = teacher.log_tail.to(student.dtype).clamp(max=0.0)  # rounding may give +1e-7
    # the top-k share the mass 1 - tail in proportion to softmax(values / T)
    log_top_p = F.log_softmax(scaled_values, dim=-1) + log1mexp(log_tail_p).unsqueeze(-1)
    log_q_full = F.log_softmax(student / temperature, dim=-1)
    log_top_q = log_q_full.gather(-1, indices)
    # the student's tail: logsumexp of its log-probs over the other classes (exact -inf at k = C,
    # exact for extreme logits where 1 - sum(top-k) would cancel)
    log_tail_q = safe_logsumexp(log_q_full.scatter(-1, indices, -math.inf))
    log_p = torch.cat([log_top_p, log_tail_p.unsqueeze(-1)], dim=-1)
    log_q = torch.cat([log_top_q, log_tail_q.unsqueeze(-1)], dim=-1)
    return log_p, log_q
