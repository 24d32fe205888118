"""Several teachers as one: their logits combined per sample.

``EnsembleTeacher([teacher_a, teacher_b], weights=[2, 1], combine="mean")`` is an ``nn.Module``
mapping inputs ``(B, ...)`` to combined logits ``(B, K)``, so everything that takes a teacher
(live forward, ``teacher.precompute``, the teacher-output cache, agreement in evaluations, feature
taps by path ``teachers.<i>.<path>``) takes an ensemble unchanged.

Combination rules, with member logits ``z_m`` (B, K) and weights ``w_m`` normalised to sum 1:

- ``mean`` (probability averaging, Hinton et al. 2015, "Distilling the knowledge in a neural
  network", arXiv 1503.02531, §2): ``log sum_m w_m softmax(z_m)``, the log of the mixture of the
  members' distributions. These are valid logits: their softmax *is* the mixture; a loss's
  temperature T then softens the mixture (``softmax(log p / T)``), it does not average the
  members' softened distributions.
- ``logit_mean``: ``sum_m w_m z_m`` (averaged logits; the softmax is the members' normalised
  weighted geometric mean).
- ``confident``: per sample, the logits of the member whose top-1 probability
  ``max_k softmax(z_m)_k`` is highest (ties: the first member). Weights are not used.

The weights and the rule are buffers, so the teacher-output cache's weights fingerprint changes
when either does, and a cache built for another combination is refused.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

COMBINE_RULES = ("mean", "logit_mean", "confident")


def combine_logits(logits: Tensor, weights: Tensor | None = None, combine: str = "mean") -> Tensor:
    """Combine member logits ``(M, B, K)`` into ``(B, K)`` by ``combine`` (see the module docstring).

    ``weights`` ``(M,)`` are positive and normalised here (default: equal); computed in fp32.
    """
    if combine not in COMBINE_RULES:
        raise ValueError(f"combine={combine!r} is not one of {COMBINE_RULES}")
    if logits.dim() != 3:
        raise ValueError(f"member logits must be (members, batch, classes), got shape {tuple(logits.shape)}")
    logits = logits.float()
    members = logits.shape[0]
    if weights is None:
        weights = logits.new_ones(members)
    weights = weights.to(logits)
    if weights.shape != (members,) or bool((weights <= 0).any()):
        raise ValueError(f"weights must be {members} positive numbers, got {weights.tolist()}")
    weights = weights / weights.sum()
    if combine == "mean":
        return torch.logsumexp(torch.log_softmax(logits, dim=-1) + weights.log()[:, None, None], dim=0)
    if combine == "logit_mean":
        return (weights[:, None, None] * logits).sum(0)
    confidence = torch.softmax(logits, dim=-1).amax(dim=-1)  # (M, B)
    chosen = confidence.argmax(dim=0)  # (B,), the first member on ties
    return logits[chosen, torch.arange(logits.shape[1], device=logits.device)]


class EnsembleTeacher(nn.Module):
    """Teachers ``(B, ...) -> (B, K)`` each, combined into one teacher ``(B, ...) -> (B, K)``.

    Args:
        teachers: two or more models with the same output shape.
        weights: one positive weight per teacher (default equal); used by ``mean`` and ``logit_mean``.
        combine: ``"mean"`` | ``"logit_mean"`` | ``"confident"`` (module docstring).
    """

    def __init__(self, teachers: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 combine: str = "mean") -> None:
        super().__init__()
        if len(teachers) < 2:
            raise ValueError(f"an ensemble needs at least 2 teachers, got {len(teachers)}")
        if combine not in COMBINE_RULES:
            raise ValueError(f"combine={combine!r} is not one of {COMBINE_RULES}")
        if weights is not None and len(weights) != len(teachers):
            raise ValueError(f"{len(weights)} weights for {len(teachers)} teachers")
        if combine == "confident" and weights is not None and len(set(weights)) > 1:
            raise ValueError("combine 'confident' picks one teacher per sample and uses no weights; "
                             "drop the weights or use combine 'mean' / 'logit_mean'")
        self.teachers = nn.ModuleList(teachers)
        self.combine = combine
        self.register_buffer("weights", torch.tensor(list(weights) if weights is not None else [1.0] * len(teachers),
                                                     dtype=torch.float32))
        self.register_buffer("combine_rule", torch.tensor(COMBINE_RULES.index(combine)))

    def member_logits(self, inputs: Tensor) -> Tensor:
        """Every member's logits, stacked: ``(M, B, K)``."""
        outputs = [teacher(inputs) for teacher in self.teachers]
        shapes = {tuple(output.shape) for output in outputs}
        if len(shapes) > 1:
            raise ValueError(f"the ensemble's teachers disagree on their output shape: {[tuple(o.shape) for o in outputs]}")
        return torch.stack(outputs)

    def forward(self, inputs: Tensor) -> Tensor:
        return combine_logits(self.member_logits(inputs), self.weights, self.combine)
