"""Distillation losses: pure functions, fp32 inside, student first, teacher second, target third.

``LOGIT_LOSSES`` maps a recipe name to its function; ``LOSS_NEEDS`` says which of
``{"teacher", "target"}`` each one needs. See :mod:`distill.losses.logits` for the uniform
signature and the temperature convention. The losses in ``SPARSE_TEACHER_LOSSES`` also take a
top-k :class:`SparseTeacher` (from a teacher-output cache) in place of dense teacher logits.
"""
from __future__ import annotations

from typing import Callable

from distill.losses.logits import (
    REDUCTIONS,
    SPARSE_TEACHER_LOSSES,
    cross_entropy,
    dist,
    dkd,
    jsd,
    kl,
    mse,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    tvd,
)
from distill.losses.sparse import SPARSE_MODES, SparseTeacher

LOGIT_LOSSES: dict[str, Callable] = {
    "kl": kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "skew_kl": skew_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tvd": tvd,
    "dkd": dkd,
    "dist": dist,
    "mse": mse,
    "cross_entropy": cross_entropy,
}

_TEACHER = frozenset({"teacher"})
LOSS_NEEDS: dict[str, frozenset[str]] = {
    **{name: _TEACHER for name in LOGIT_LOSSES},
    "dkd": frozenset({"teacher", "target"}),
    "cross_entropy": frozenset({"target"}),
}

__all__ = [
    "LOGIT_LOSSES",
    "LOSS_NEEDS",
    "REDUCTIONS",
    "SPARSE_MODES",
    "SPARSE_TEACHER_LOSSES",
    "SparseTeacher",
    "cross_entropy",
    "dist",
    "dkd",
    "jsd",
    "kl",
    "mse",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "tvd",
]
