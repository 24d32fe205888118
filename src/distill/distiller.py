"""The Distiller: a student, a managed teacher, and weighted loss terms.

``Distiller(student, teacher, terms)(batch)`` returns ``{"loss": total, "<term>": value, ...}``.

The teacher is managed: put in ``eval()`` mode, its parameters frozen, its forward run
under ``torch.inference_mode()``, and it is *not* a submodule of anything the optimiser or
DDP sees (the Distiller is a plain object, not an ``nn.Module``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from distill.core.io import Inputs, forward_logits
from distill.losses import LOGIT_LOSSES, LOSS_NEEDS, check_loss_params
from distill.registry import Registry

LOSSES: Registry = Registry("loss")
for _name, _fn in LOGIT_LOSSES.items():
    LOSSES.register(_name, _fn)


@dataclass
class LossTerm:
    """``weight * loss(student_logits, teacher_logits, target, temperature=..., **params)``.

    Checked when made, not at the first step: ``params`` must be keywords the loss takes
    (:func:`distill.losses.check_loss_params`; ``temperature`` is the term's own field), the
    weight finite, the temperature finite and > 0, and ``reduction`` (if given) ``"mean"`` or
    ``"sum"``: the Distiller adds scalar terms. Each failure is a ``ValueError`` naming the term.
    """

    name: str
    weight: float = 1.0
    temperature: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # the term's name in metrics (default: ``name``): the same loss twice needs two

    def __post_init__(self) -> None:
        self.fn: Callable = LOSSES.get(self.name)
        self.needs = LOSS_NEEDS.get(self.name, frozenset({"teacher"}))
        check_loss_params(self.name, self.params, fn=self.fn)
        check_term(f"loss {self.name!r}", self.weight, self.params)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, numbers.Real) \
                or not 0 < self.temperature < math.inf:
            raise ValueError(f"loss {self.name!r}: temperature is {self.temperature!r}; it must be a finite number > 0")

    @property
    def key(self) -> str:
        return self.label or self.name


def check_term(what: str, weight: Any, params: dict[str, Any]) -> None:
    """Refuse a non-finite or non-numeric ``weight``, and ``params["reduction"] == "none"``: the Distiller
    adds scalar terms. ``what`` names the term in the message (``loss 'kl'``)."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"{what}: weight is {weight!r}; it must be a finite number")
    if params.get("reduction") == "none":
        raise ValueError(f"{what}: reduction 'none' returns one value per sample, but the Distiller adds scalar terms; "
                         "use 'mean' (the default) or 'sum'")


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients, in place; returns the teacher (TorchScript and torch.export modules
    too: :func:`distill.core.teacher.freeze`)."""
    from distill.core.teacher import freeze

    return freeze(teacher)


class Distiller:
    """Computes the weighted distillation objective for one batch.

    Args:
        student: the model being trained; maps ``batch["input"]`` (B, ...) to logits (B, K).
        teacher: a frozen model with the same output shape, or None (student-only training).
        terms: the weighted loss terms; terms that need a teacher require one.
        teacher_outputs: (N, K) teacher logits for every training sample, precomputed; used
            instead of the teacher's forward, looked up by ``batch["index"]`` (sample ids).
        features: intermediate-layer terms (:class:`distill.intermediate.FeatureDistillation`);
            then ``student`` is its ``StudentWithHeads`` (possibly wrapped by DDP), called with
            the teacher's features, and each term's value is reported as ``feature/<loss>``.
        self_distill: exits on the student's shallower layers taught by its final logits
            (:class:`distill.self_distill.SelfDistillation`); then ``student`` is its
            ``StudentWithExits``, and the terms are reported as ``self/kl`` and ``self/ce``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        terms: list[LossTerm],
        *,
        teacher_outputs: torch.Tensor | None = None,
        features=None,
        self_distill=None,
    ) -> None:
        if features is not None and self_distill is not None:
            raise ValueError("feature terms and self-distillation each wrap the student: use one of them")
        self.student = student
        self.self_distill = self_distill
        self.teacher_outputs = teacher_outputs
        self.features = features  # a distill.intermediate.FeatureDistillation, or None
        self.teacher = freeze_teacher(teacher) if teacher is not None else None
        self.terms = terms
        if not terms:
            raise ValueError("Distiller needs at least one loss term")
        needy = [term.name for term in terms if "teacher" in term.needs]
        if needy and teacher is None and teacher_outputs is None:
            raise ValueError(f"loss terms {needy} need a teacher, but none was given")
        keys = [term.key for term in terms]
        if len(set(keys)) != len(keys):
            twice = sorted({key for key in keys if keys.count(key) > 1})
            raise ValueError(f"losses {twice} appear more than once under the same name; give each its own "
                             f"'label' (e.g. {{name: {twice[0]}, label: {twice[0]}_t1, ...}}) so their metrics differ")
        self.needs_teacher = bool(needy) or features is not None

    def teacher_logits(self, inputs: Inputs) -> torch.Tensor:
        """Teacher forward in inference mode: (B, ...) or a mapping of tensors -> (B, K), no autograd history."""
        assert self.teacher is not None
        if self.teacher.training:  # someone called .train() on it: refuse to train with dropout on
            freeze_teacher(self.teacher)
        with torch.inference_mode():
            logits = forward_logits(self.teacher, inputs, who=f"the teacher ({type(self.teacher).__name__})")
        return logits.clone()  # a normal tensor, usable next to autograd tensors

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs, target = batch["input"], batch.get("target")
        teacher_logits = None
        if self.needs_teacher:
            if self.teacher_outputs is not None:
                if "index" not in batch:
                    raise ValueError("precomputed teacher outputs are looked up by sample id: the batch needs an 'index' entry")
                teacher_logits = self.teacher_outputs[batch["index"]]
            else:
                teacher_logits = self.teacher_logits(inputs)
        if self.features is not None:  # the teacher's taps fired during its forward above
            student_logits = self.student(inputs, self.features.teacher_features())
        else:
            student_logits = forward_logits(self.student, inputs, who="the student")
        if isinstance(teacher_logits, torch.Tensor) and teacher_logits.shape[-1] != student_logits.shape[-1]:
            raise ValueError(
                f"the teacher and the student disagree on the number of classes: the teacher gives "
                f"{teacher_logits.shape[-1]} logits per sample ({tuple(teacher_logits.shape)}), the student "
                f"{student_logits.shape[-1]} ({tuple(student_logits.shape)}); build the student with the teacher's "
                "class count")
        out: dict[str, torch.Tensor] = {}
        total = student_logits.new_zeros((), dtype=torch.float32)
        for term in self.terms:
            value = term.fn(student_logits, teacher_logits, target, temperature=term.temperature, **term.params)
            out[term.key] = value.detach()
            total = total + term.weight * value
        extra_terms = []  # (metric name, weight, value) of the feature or self-distillation terms
        if self.features is not None:
            extra_terms = self.features.losses(self.features.module.outputs, teacher_logits, target)
        elif self.self_distill is not None:
            extra_terms = self.self_distill.losses(student_logits, target)
        for key, weight, value in extra_terms:
            out[key] = value.detach()
            total = total + weight * value
        out["loss"] = total
        return out
