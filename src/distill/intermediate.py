"""Intermediate-layer distillation: feature pairs, automatic layer mapping, trainable heads.

A *feature term* is a loss from :data:`distill.losses.FEATURE_LOSSES` applied to pairs of
(student module path, teacher module path). Both models are read through forward hooks
(:class:`distill.taps.Taps`); nothing in either model is rewritten. What each loss needs is
built from shapes probed with one forward pass on a sample batch:

- ``projector`` (hint, cosine): the student feature mapped to the teacher's shape
  (:func:`distill.projectors.build_projector`: linear, 1x1 conv, tokens <-> maps);
- ``embedding`` (crd): a head on each side to a shared ``embedding_dim``;
- ``logit_head`` (ofa): a head from the student feature to class logits, compared with the
  teacher's logits;
- nothing (attention transfer, similarity-preserving, RKD): the raw features.

All heads live in :class:`StudentWithHeads` next to the student, so they train with it, are
synchronised by DDP and saved in its checkpoints (under ``projectors.``); the exported student
is ``StudentWithHeads.student`` alone. The same module holds the self-distillation exits when a
run has both (:func:`join_heads`): one wrapper, one set of taps on the student.

``pairs: auto`` spreads the student's stages uniformly over the teacher's: with S student and T
teacher stages (:func:`stage_paths`), student stage i (0-based) is paired with teacher stage
``ceil((i + 1) * T / S) - 1``, so the last stages always meet.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from distill.core.io import Inputs, call_model
from distill.distiller import check_term
from distill.losses import FEATURE_LOSS_NEEDS, FEATURE_LOSSES, check_feature_loss_params
from distill.projectors import build_embedding_head, build_logit_head, build_projector
from distill.taps import Taps, probe, resolve_path


def stage_paths(model: nn.Module) -> list[str]:
    """The model's stages in forward order, by module path.

    One top-level ``ModuleList``/``Sequential`` (an MLP's ``layers``, a CNN's ``stages``, a ViT's
    ``blocks``) gives its children (``blocks.0``, ``blocks.1``, ...); several (a ResNet's
    ``layer1``, ``layer2``, ``layer3``) give themselves. Otherwise ``ValueError``: name the pairs.
    """
    containers = [name for name, child in model.named_children()
                  if isinstance(child, (nn.ModuleList, nn.Sequential)) and len(child) > 0]
    if len(containers) == 1:
        name = containers[0]
        return [f"{name}.{index}" for index in range(len(getattr(model, name)))]
    if len(containers) > 1:
        return containers
    raise ValueError(
        f"cannot find the stages of {type(model).__name__} (no top-level ModuleList/Sequential): give the "
        f"feature pairs explicitly, e.g. pairs: [[student.path, teacher.path]] (see `distill inspect`)"
    )


def auto_pairs(student: nn.Module, teacher: nn.Module) -> list[tuple[str, str]]:
    """(student path, teacher path) for every student stage, spread over the teacher's stages."""
    student_stages, teacher_stages = stage_paths(student), stage_paths(teacher)
    count_s, count_t = len(student_stages), len(teacher_stages)
    return [(path, teacher_stages[math.ceil((i + 1) * count_t / count_s) - 1]) for i, path in enumerate(student_stages)]


@dataclass
class FeatureTerm:
    """``weight * mean over pairs of loss(student feature, teacher feature, target, **params)``.

    ``params`` must be keywords the loss takes (:func:`distill.losses.check_feature_loss_params`),
    checked when the term is made: a typo is a ``ValueError`` naming the closest valid one.
    """

    loss: str
    weight: float = 1.0
    pairs: list[tuple[str, str]] | str = "auto"
    projector: str = "auto"
    hidden: int | None = None
    embedding_dim: int = 128
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in FEATURE_LOSSES:
            raise ValueError(f"unknown feature loss {self.loss!r}; valid: {', '.join(sorted(FEATURE_LOSSES))}")
        self.fn = FEATURE_LOSSES[self.loss]
        self.needs = FEATURE_LOSS_NEEDS[self.loss]
        check_feature_loss_params(self.loss, self.params, fn=self.fn)
        check_term(f"feature loss {self.loss!r}", self.weight, self.params)


class StudentWithHeads(nn.Module):
    """The student plus every trainable head around it: what the optimiser, DDP and FSDP see.

    One module for all the terms that read the student's layers: the feature terms' heads
    (``projectors.student.<pair>``, ``projectors.teacher.<pair>``, :class:`FeatureDistillation`)
    and the self-distillation exits (``exits.<exit>``, :class:`distill.self_distill.SelfDistillation`).
    The student is read through one :class:`distill.taps.Taps` over every path either needs
    (``taps``); it is never rewritten, and ``student`` alone is the exported model.

    ``forward(inputs, teacher_features=None)`` calls the student (a tensor, or a mapping of
    tensors passed as keyword arguments: :func:`distill.core.io.call_model`; ``forward(**inputs)``
    works too, so the wrapper stands in for the student anywhere) and returns the student's output
    as it is. It leaves, in ``self.outputs``, ``pair -> (student side, teacher side)`` for every
    feature pair when ``teacher_features`` is given, each side passed through its head (identity
    where the loss needs none), and in ``self.exit_logits`` ``exit -> (B, K)`` for every exit. With
    its taps removed (``taps.remove()``, done when training ends) it is the bare student: no head
    runs and both are left empty.

    Args:
        student: the model being trained.
        student_paths: feature pair name -> student module path.
        student_heads, teacher_heads: feature pair name -> head (only the pairs that have one).
        exit_paths: exit name -> student module path; exits: exit name -> exit head.

    :func:`join_heads` puts a :class:`FeatureDistillation`'s heads and a ``SelfDistillation``'s
    exits into one such module.
    """

    def __init__(self, student: nn.Module, student_paths: dict[str, str], student_heads: dict[str, nn.Module],
                 teacher_heads: dict[str, nn.Module], *, exit_paths: dict[str, str] | None = None,
                 exits: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        exit_paths, exits = dict(exit_paths or {}), dict(exits or {})
        if set(exits) != set(exit_paths):
            raise ValueError(f"exits {sorted(exits)} and exit paths {sorted(exit_paths)} name different exits")
        clash = sorted(set(student_paths) & set(exit_paths))
        if clash:
            raise ValueError(f"feature pairs and exits share the names {clash}")
        self.student = student
        self.projectors = nn.ModuleDict({"student": nn.ModuleDict(student_heads), "teacher": nn.ModuleDict(teacher_heads)})
        self.exits = nn.ModuleDict(exits)
        self.feature_paths, self.exit_paths = dict(student_paths), exit_paths
        self.taps = Taps(student, {**self.feature_paths, **exit_paths})
        self.outputs: dict[str, tuple[Tensor, Tensor]] = {}
        self.exit_logits: dict[str, Tensor] = {}

    def forward(self, inputs: Inputs | None = None, teacher_features: dict[str, Tensor] | None = None,
                **named_inputs: Tensor) -> Any:
        if named_inputs:
            if inputs is not None:
                raise TypeError("give the student's inputs once: positionally, or as keyword arguments")
            inputs = named_inputs
        output = call_model(self.student, inputs)
        if not self.taps.attached:  # hooks off (training over): the bare student, no head runs
            self.outputs, self.exit_logits = {}, {}
            return output
        if teacher_features is None and not self.exit_paths:
            return output
        features = self.taps.require_all()
        if teacher_features is not None:
            heads_s, heads_t = self.projectors["student"], self.projectors["teacher"]
            self.outputs = {
                name: (heads_s[name](features[name]) if name in heads_s else features[name],
                       heads_t[name](teacher_features[name]) if name in heads_t else teacher_features[name])
                for name in self.feature_paths
            }
        self.exit_logits = {name: head(features[name]) for name, head in self.exits.items()}
        return output


def join_heads(features: "FeatureDistillation | None" = None, self_distill: Any = None) -> StudentWithHeads | None:
    """The one :class:`StudentWithHeads` that trains for these parts (None when both are None).

    With one part, its own ``module``. With both (built on the same student), a new module
    holding the feature heads and the exits themselves (no head is rebuilt, so no weight changes)
    behind one set of taps: the parts' own student taps are removed and both parts' ``module``
    become the joined one. Calling it again returns that module.
    """
    if features is None or self_distill is None:
        part = features if features is not None else self_distill
        return part.module if part is not None else None
    if features.module is self_distill.module:
        return features.module
    with_heads, with_exits = features.module, self_distill.module
    if with_heads.student is not with_exits.student:
        raise ValueError("the feature terms and the self-distillation exits were built on different students: "
                         "build both on the model being trained")
    if with_heads.exit_paths or with_exits.feature_paths:
        raise ValueError("join_heads takes a FeatureDistillation and a SelfDistillation that were not joined yet")
    joined = StudentWithHeads(with_heads.student, with_heads.feature_paths, dict(with_heads.projectors["student"]),
                              dict(with_heads.projectors["teacher"]), exit_paths=with_exits.exit_paths,
                              exits=dict(with_exits.exits))
    if not (with_heads.taps.attached or with_exits.taps.attached):
        joined.taps.remove()
    with_heads.taps.remove()
    with_exits.taps.remove()
    features.module = self_distill.module = joined
    return joined


class FeatureDistillation:
    """Builds and evaluates the feature terms for one (student, teacher) pair.

    Args:
        student, teacher: the two models (the teacher frozen by the caller).
        terms: the feature terms; ``pairs="auto"`` is resolved by :func:`auto_pairs`.
        sample_input: one batch (B >= 2) for probing shapes; num_classes: for logit heads.

    Attributes:
        module: the :class:`StudentWithHeads` to train (instead of the bare student); joined with a
            self-distillation's exits by :func:`join_heads`, the one module holding both.
        teacher_taps: hooks on the teacher capturing every pair's teacher feature.
        pairs: ``pair name -> (term index, student path, teacher path)``.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, terms: list[FeatureTerm], sample_input: Tensor,
                 num_classes: int) -> None:
        self.terms = terms
        self.pairs: dict[str, tuple[int, str, str]] = {}
        for index, term in enumerate(terms):
            pairs = auto_pairs(student, teacher) if term.pairs == "auto" else [tuple(p) for p in term.pairs]
            if not pairs:
                raise ValueError(f"feature term {index} ({term.loss}) has no pairs")
            for number, (student_path, teacher_path) in enumerate(pairs):
                resolve_path(student, student_path)
                resolve_path(teacher, teacher_path)
                self.pairs[f"f{index}_{term.loss}_{number}"] = (index, student_path, teacher_path)
        student_paths = {name: pair[1] for name, pair in self.pairs.items()}
        teacher_paths = {name: pair[2] for name, pair in self.pairs.items()}
        student_shapes = probe(student, sample_input, student_paths)
        teacher_shapes = probe(teacher, sample_input, teacher_paths)
        student_heads, teacher_heads = {}, {}
        for name, (index, student_path, teacher_path) in self.pairs.items():
            term = terms[index]
            s_shape, t_shape = student_shapes[name], teacher_shapes[name]
            where = f"feature pair {student_path!r} (student, {tuple(s_shape)}) -> {teacher_path!r} (teacher, {tuple(t_shape)})"
            try:
                if "projector" in term.needs:
                    student_heads[name] = build_projector(s_shape, t_shape, kind=term.projector, hidden=term.hidden)
                elif "embedding" in term.needs:
                    student_heads[name] = build_embedding_head(s_shape, term.embedding_dim, hidden=term.hidden)
                    teacher_heads[name] = build_embedding_head(t_shape, term.embedding_dim, hidden=term.hidden)
                elif "logit_head" in term.needs:
                    student_heads[name] = build_logit_head(s_shape, num_classes, hidden=term.hidden)
                if "map" in term.needs and (len(s_shape) != 4 or len(t_shape) != 4):
                    raise ValueError(f"{term.loss} compares feature maps (B, C, H, W) on both sides")
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        self.module = StudentWithHeads(student, student_paths, student_heads, teacher_heads)
        self.teacher_taps = Taps(teacher, teacher_paths)

    def teacher_features(self) -> dict[str, Tensor]:
        """The features the teacher's latest forward produced (cloned out of inference mode)."""
        return {name: value.clone() for name, value in self.teacher_taps.require_all().items()}

    def term_key(self, index: int) -> str:
        """The metric name of term ``index``: ``feature/<loss>`` (``feature/<loss>/<index>`` if repeated)."""
        loss = self.terms[index].loss
        repeated = sum(term.loss == loss for term in self.terms) > 1
        return f"feature/{loss}" + (f"/{index}" if repeated else "")

    def losses(self, outputs: dict[str, tuple[Tensor, Tensor]], teacher_logits: Tensor | None,
               target: Tensor | None, inputs: Inputs | None = None) -> list[tuple[str, float, Tensor]]:
        """``(metric name, weight, value)`` per term, the value averaged over the term's pairs.

        A loss that needs ``"mask"`` (token relations) gets the batch's ``attention_mask`` (B, N) from
        ``inputs`` (a mapping), or ``None`` (every token valid) when the inputs have none."""
        missing = [name for name in self.pairs if name not in outputs]
        if missing:
            raise ValueError(f"feature pairs {missing} have no outputs from the latest forward: call the module with "
                             "the teacher's features, its taps attached (taps.attach())")
        values: dict[int, list[Tensor]] = {}
        for name, (index, _, _) in self.pairs.items():
            term = self.terms[index]
            student_side, teacher_side = outputs[name]
            if "logit_head" in term.needs:
                teacher_side = teacher_logits
            extra = {}
            if "mask" in term.needs:
                extra["mask"] = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
            values.setdefault(index, []).append(term.fn(student_side, teacher_side, target, **extra, **term.params))
        return [(self.term_key(index), self.terms[index].weight, torch.stack(parts).mean())
                for index, parts in values.items()]

    def remove(self) -> None:
        """Take every hook off both models."""
        self.module.taps.remove()
        self.teacher_taps.remove()
