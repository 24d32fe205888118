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
(class ids), ``"mask"`` (the batch's ``attention_mask``, passed as ``mask=``). An empty set: any two shapes with the same batch size.

:func:`check_loss_params` / :func:`check_feature_loss_params` refuse a ``params`` key the loss
function would not accept, naming the closest valid one, before any training step runs.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from distill.losses.features import (
    attention_relation,
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
    cosine_distance,
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
    "cosine_distance": cosine_distance,
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
    "attention_relation": attention_relation,
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
    "attention_relation": frozenset({"mask"}),
}

# What a params dict may not set, per kind: the distiller passes the three tensors (student,
# teacher, target) positionally, a logit term's ``temperature`` from the term itself
# (LossTerm.temperature, a recipe loss's ``temperature:``), and ``mask`` is a per-batch tensor.
_POSITIONAL_TENSORS = 3
SUPPLIED_BY_TERM: dict[str, tuple[str, ...]] = {"loss": ("temperature",), "feature loss": ()}
NOT_PARAMETERS = ("mask",)
_TABLES: dict[str, dict[str, Callable]] = {"loss": LOGIT_LOSSES, "feature loss": FEATURE_LOSSES}


def _loss_function(name: str, kind: str, fn: Callable | None = None) -> Callable:
    """``fn`` if given, else the ``kind`` loss called ``name`` (``package.module:callable`` imported)."""
    if kind not in _TABLES:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _TABLES))}, got {kind!r}")
    if fn is not None:
        return fn
    table = _TABLES[kind]
    if name in table:
        return table[name]
    from distill.registry import closest, import_callable  # registry imports nothing of ours

    if kind == "loss" and ":" in name:  # a logit loss term may name the user's own function
        return import_callable(name)
    hint = closest(name, list(table))
    raise ValueError(f"unknown {kind} {name!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                     + f"; valid: {', '.join(sorted(table))}")


def loss_parameters(name: str, *, kind: str = "loss", fn: Callable | None = None) -> tuple[list[str], list[str], bool]:
    """What the ``params`` of a ``kind`` term (``"loss"`` or ``"feature loss"``) named ``name`` may hold.

    Returns ``(settable, required, takes_any)``: the keyword parameter names of the loss function
    other than the three positional tensors, ``mask`` and what the term supplies itself
    (``temperature`` for a logit loss); those of them without a default; and whether the
    function takes ``**kwargs``. ``fn``: the function itself, when the caller has it (a loss
    registered elsewhere); else it is looked up by ``name``, and ``package.module:callable``
    (logit losses) is imported. An unknown name raises ``ValueError`` naming the closest valid one.
    """
    fn = _loss_function(name, kind, fn)
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some builtins): accept anything
        return [], [], True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    passed = {p.name for p in positional[:_POSITIONAL_TENSORS]}
    excluded = passed | set(SUPPLIED_BY_TERM[kind]) | set(NOT_PARAMETERS)
    keywords = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in excluded]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return [p.name for p in keywords], [p.name for p in keywords if p.default is p.empty], takes_any


def _closest(key: str, choices: list[str]) -> str | None:
    """The valid name ``key`` was probably meant as: same letters in another case, else the closest spelling."""
    from distill.registry import closest  # registry imports nothing of ours

    same = [choice for choice in choices if choice.lower() == key.lower()]
    return same[0] if len(same) == 1 else closest(key, choices)


def _takes_keyword(fn: Callable, key: str) -> bool:
    try:
        parameter = inspect.signature(fn).parameters.get(key)
    except (TypeError, ValueError):
        return True
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)


def check_loss_params(name: str, params: dict[str, Any], *, kind: str = "loss", fn: Callable | None = None) -> None:
    """Raise ``ValueError`` unless the loss ``name`` accepts every key of ``params`` as a keyword.

    ``kind`` is ``"loss"`` (a logit loss term, called ``fn(student_logits, teacher_logits, target,
    temperature=..., **params)`` by :class:`distill.distiller.LossTerm`) or ``"feature loss"``
    (called ``fn(student_features, teacher_features, target, **params)`` by
    :class:`distill.intermediate.FeatureTerm`). An unknown key names the closest valid parameter
    and lists the valid ones, e.g. ``loss 'kl' has no parameter 'temprature' (did you mean
    'temperature'?); ...``; a key the term supplies itself (``temperature`` of a logit loss),
    ``mask``, a missing required parameter, and a function that does not take what the term
    supplies are refused too. ``fn``: see :func:`loss_parameters`.
    """
    if not isinstance(params, dict):
        raise ValueError(f"{kind} {name!r}: params must be a mapping of parameter name to value, got {params!r}")
    fn = _loss_function(name, kind, fn)
    settable, required, takes_any = loss_parameters(name, kind=kind, fn=fn)
    supplied = list(SUPPLIED_BY_TERM[kind])
    not_taken = [key for key in supplied if not takes_any and not _takes_keyword(fn, key)]
    if not_taken:
        raise ValueError(f"{kind} {name!r} does not take the keyword {', '.join(map(repr, not_taken))}, which the term "
                         f"passes to every {kind}: add it to the function's signature (e.g. {not_taken[0]}=1.0)")
    valid_text = ", ".join(settable) or "(none)"
    if supplied:
        valid_text += f" (and {', '.join(supplied)}, set on the term itself)"
    keys = [str(key) for key in params]
    for key in keys:
        if key in supplied:
            raise ValueError(f"{kind} {name!r}: {key!r} is set on the term itself, not among its params: "
                             f"LossTerm({name!r}, {key}=...) in Python, the loss's own '{key}:' in a recipe")
        if key in NOT_PARAMETERS:
            raise ValueError(f"{kind} {name!r}: {key!r} is a per-batch tensor, not a parameter; valid parameters: "
                             f"{valid_text}")
    unknown = [] if takes_any else [key for key in keys if key not in settable]
    if unknown:
        hints = [f"{key!r} (did you mean {hint!r}?)" if (hint := _closest(key, settable + supplied)) else repr(key)
                 for key in unknown]
        raise ValueError(f"{kind} {name!r} has no parameter {', '.join(hints)}; valid parameters: {valid_text}")
    missing = [key for key in required if key not in params]
    if missing:
        raise ValueError(f"{kind} {name!r} needs parameter {', '.join(map(repr, missing))}; valid parameters: "
                         f"{valid_text}")


def check_feature_loss_params(name: str, params: dict[str, Any], *, fn: Callable | None = None) -> None:
    """:func:`check_loss_params` for a feature loss (:data:`FEATURE_LOSSES`)."""
    check_loss_params(name, params, kind="feature loss", fn=fn)


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
    "check_feature_loss_params",
    "check_loss_params",
    "cosine",
    "crd",
    "cross_entropy",
    "dist",
    "dkd",
    "hint",
    "jsd",
    "kl",
    "loss_parameters",
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
