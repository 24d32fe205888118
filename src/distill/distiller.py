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

from distill.core.io import Inputs, call_model
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
    warmup_steps: int = 0  # the weight ramps linearly from 0 to ``weight`` over this many optimiser steps

    def __post_init__(self) -> None:
        self.fn: Callable = LOSSES.get(self.name)
        self.needs = LOSS_NEEDS.get(self.name, frozenset({"teacher"}))
        check_loss_params(self.name, self.params, fn=self.fn)
        check_term(f"loss {self.name!r}", self.weight, self.params)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, numbers.Real) \
                or not 0 < self.temperature < math.inf:
            raise ValueError(f"loss {self.name!r}: temperature is {self.temperature!r}; it must be a finite number > 0")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"loss {self.name!r}: warmup_steps is {self.warmup_steps!r}; it must be an int >= 0")

    def weight_at(self, step: int) -> float:
        """The term's weight at optimiser step ``step`` (0-based, the steps already taken):
        ``weight * min(1, (step + 1) / warmup_steps)``, or ``weight`` without a warm-up. DKD's
        paper (Zhao et al. 2022) ramps its loss this way over the first 20 of 240 epochs."""
        if self.warmup_steps <= 0:
            return self.weight
        return self.weight * min(1.0, (step + 1) / self.warmup_steps)

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
        features: intermediate-layer terms (:class:`distill.intermediate.FeatureDistillation`),
            called with the teacher's features and reported as ``feature/<loss>``.
        self_distill: exits on the student's shallower layers taught by its final logits
            (:class:`distill.self_distill.SelfDistillation`), reported as ``self/kl`` and ``self/ce``.

    With ``features`` and/or ``self_distill`` the student trains inside one module holding every
    head, ``heads`` (a :class:`distill.intermediate.StudentWithHeads`, both parts joined by
    :func:`distill.intermediate.join_heads`): give the bare student (or a part's ``module``) and the
    Distiller trains ``heads`` instead, or give ``heads`` itself, possibly wrapped by DDP. The total is
    ``sum(weight * logit term) + sum(weight * feature term) + sum(weight * self term)``, in that order.
    Their hooks are (re)attached at each call; :meth:`remove_hooks` takes every one off.
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
        task=None,
    ) -> None:
        from distill.tasks import build_task

        self.task = build_task(task)  # how outputs are read and terms applied (classification by default)
        self.student = student
        self.self_distill = self_distill
        self.teacher_outputs = teacher_outputs
        self.features = features  # a distill.intermediate.FeatureDistillation, or None
        self.teacher = freeze_teacher(teacher) if teacher is not None else None
        self.terms = terms
        self.step = 0  # optimiser steps taken so far; the training loop sets it (loss warm-ups read it)
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
        self.heads = None  # the one module holding every head, when there are heads
        if features is not None or self_distill is not None:
            from distill.intermediate import join_heads  # (intermediate imports this module)

            parts = [part.module for part in (features, self_distill) if part is not None]
            self.heads = join_heads(features, self_distill)
            if student is self.heads.student or any(student is part for part in parts):
                self.student = self.heads  # the student trains inside it

    def teacher_logits(self, inputs: Inputs) -> torch.Tensor:
        """Teacher forward in inference mode: (B, ...) or a mapping of tensors -> (B, K), no autograd history."""
        assert self.teacher is not None
        if self.teacher.training:  # someone called .train() on it: refuse to train with dropout on
            freeze_teacher(self.teacher)
        with torch.inference_mode():
            output = call_model(self.teacher, inputs)
            logits = self.task.read(output, {"input": inputs}, who=f"the teacher ({type(self.teacher).__name__})")
        return logits.clone()  # a normal tensor, usable next to autograd tensors

    def attach_hooks(self) -> None:
        """Put the taps of the feature terms (student and teacher) and of the exits on (a no-op when on)."""
        if self.heads is not None:
            self.heads.taps.attach()
        if self.features is not None:
            self.features.teacher_taps.attach()

    def remove_hooks(self) -> None:
        """Take every hook this Distiller's terms put on the student and the teacher off (idempotent)."""
        for part in (self.features, self.self_distill):
            if part is not None:
                part.remove()

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs, target = batch["input"], batch.get("target")
        self.attach_hooks()
        teacher_logits = None
        if self.needs_teacher:
            if self.teacher_outputs is not None:
                if "index" not in batch:
                    raise ValueError("precomputed teacher outputs are looked up by sample id: the batch needs an 'index' entry")
                teacher_logits = self.teacher_outputs[batch["index"]]
            else:
                teacher_logits = self.teacher_logits(inputs)
        if self.heads is not None:  # the wrapper: called with the inputs as they are (a tensor or a mapping)
            if self.features is not None:  # the teacher's taps fired during its forward above
                output = self.student(inputs, self.features.teacher_features())
            else:
                output = self.student(inputs)
        else:
            output = call_model(self.student, inputs)
        student_logits = self.task.read(output, batch, who="the student")
        if isinstance(teacher_logits, torch.Tensor):
            self.task.check_pair(student_logits, teacher_logits)
        out: dict[str, torch.Tensor] = {}
        total = student_logits.new_zeros((), dtype=torch.float32)
        for term in self.terms:
            value = self.task.term_value(term, student_logits, teacher_logits, batch)
            out[term.key] = value.detach()
            total = total + term.weight_at(self.step) * value
        extra_terms = []  # (metric name, weight, value) of the feature and self-distillation terms
        if self.features is not None:
            extra_terms += self.features.losses(self.features.module.outputs, teacher_logits, target, inputs)
        if self.self_distill is not None:
            extra_terms += self.self_distill.losses(student_logits, target)
        for key, weight, value in extra_terms:
            out[key] = value.detach()
            total = total + weight * value
        out["loss"] = total
        return out
