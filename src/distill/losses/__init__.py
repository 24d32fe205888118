"""Distillation losses: pure functions, fp32 inside, student first, teacher second, target third.

``LOGIT_LOSSES`` maps a recipe name to its function; ``LOSS_NEEDS`` says which of
``{"teacher", "target"}`` each one needs. See :mod:`distill.losses.logits` for the uniform
signature and the temperature convention. The losses in ``SPARSE_TEACHER_LOSSES`` also take a
top-k :class:`SparseTeacher` (from a teacher-output cache) in place of dense teacher logits.

``FEATURE_LOSSES`` maps a recipe name to a feature loss (:mod:`distill.losses.features`, same
argument order: student features, teacher features, target); ``FEATURE_LOSS_NEEDS`` says what
each one needs besides the two features: ``"projector"`` (the student feature projected to the
teacher's shape: elementwise losses), ``"embedding"`` (an embedding head on each side to a
shared dim), ``"logit_head"`` (a head from the student feature to class logits, compared with
the teacher's final logits), ``"map"`` (both features are (B, C, H, W) maps), ``"target"``
(class ids). An empty set: any two shapes with the same batch size.
"""
from __future__ import annotations

from typing import Callable

from distill.losses.features import (
    attention_transfer,
    cosine,
    crd,
    hint,
    ofa,
    rkd_angle,
    rkd_distance,
    similarity_preserving,
)
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

FEATURE_LOSSES: dict[str, Callable] = {
    "hint": hint,
    "cosine": cosine,
    "attention_transfer": attention_transfer,
    "similarity_preserving": similarity_preserving,
    "rkd_distance": rkd_distance,
    "rkd_angle": rkd_angle,
    "crd": crd,
    "ofa": ofa,
}

FEATURE_LOSS_NEEDS: dict[str, frozenset[str]] = {
    "hint": frozenset({"projector"}),
    "cosine": frozenset({"projector"}),
    "attention_transfer": frozenset({"map"}),
    "similarity_preserving": frozenset(),
    "rkd_distance": frozenset(),
    "rkd_angle": frozenset(),
    "crd": frozenset({"embedding"}),
    "ofa": frozenset({"logit_head", "target"}),
}

__all__ = [
    "FEATURE_LOSSES",
    "FEATURE_LOSS_NEEDS",
    "LOGIT_LOSSES",
    "LOSS_NEEDS",
    "REDUCTIONS",
    "SPARSE_MODES",
    "SPARSE_TEACHER_LOSSES",
    "SparseTeacher",
    "attention_transfer",
    "cosine",
    "crd",
    "cross_entropy",
    "dist",
    "dkd",
    "hint",
    "jsd",
    "kl",
    "mse",
    "ofa",
    "reverse_kl",
    "rkd_angle",
    "rkd_distance",
    "similarity_preserving",
    "skew_kl",
    "skew_reverse_kl",
    "tvd",
]
