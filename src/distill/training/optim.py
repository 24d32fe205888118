"""Optimisers and learning-rate schedules named by the recipe."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:  # any object with these fields works (the recipe's sections, a dataclass): no import of recipe
    from distill.recipe import OptimizerSpec, ScheduleSpec


def build_optimizer(spec: OptimizerSpec, params: Iterable[torch.nn.Parameter], *,
                    no_weight_decay: Iterable[torch.nn.Parameter] = (), no_weight_decay_lr_scale: float = 1.0,
                    ) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov), Adam or AdamW from ``spec``.

    ``no_weight_decay``: parameters among ``params`` put in a second parameter group with
    ``weight_decay=0`` and ``lr * no_weight_decay_lr_scale`` (the quantizers' step sizes and zero
    points: decay would pull a step size to 0, and Adam moves each of them by about ``lr`` per
    step whatever its size).
    """
    params = [p for p in params if p.requires_grad]
    exempt = {id(p) for p in no_weight_decay}
    if exempt & {id(p) for p in params}:
        groups = [{"params": [p for p in params if id(p) not in exempt]},
                  {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0,
                   "lr": spec.lr * no_weight_decay_lr_scale}]
        params = [group for group in groups if group["params"]]
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


def schedule_factor(spec: ScheduleSpec, total_steps: int):
    """The lr multiplier as a function of the optimiser step: linear warm-up, then the named
    decay (constant, step, linear or cosine down to ``final_lr_fraction``).

    A closure, not a callable object, so LambdaLR's state dict stays tensors and numbers
    (loadable with ``torch.load(weights_only=True)``).
    """
    total_steps = max(int(total_steps), 1)

    def factor(step: int) -> float:
        if spec.warmup_steps and step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        if spec.name == "constant":
            return 1.0
        if spec.name == "step":
            return spec.gamma ** ((step - spec.warmup_steps) // spec.step_size)
        span = max(total_steps - spec.warmup_steps, 1)
        progress = min(max(step - spec.warmup_steps, 0) / span, 1.0)
        floor = spec.final_lr_fraction
        if spec.name == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(spec: ScheduleSpec, optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
    """A LambdaLR stepped once per optimiser step, over ``total_steps`` steps."""
    return LambdaLR(optimizer, schedule_factor(spec, total_steps))
