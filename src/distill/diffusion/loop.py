"""The one small training loop every diffusion trainer here uses, plus EMA and batch drawing.

``fit(loss_fn, parameters, num_steps, lr)`` runs Adam on ``loss_fn(step) -> scalar`` for
``num_steps`` steps, calling ``after_step(step)`` after each update (EMA), and returns the loss
history and the seconds it took. Kept explicit on purpose: the methods differ only in their
loss, so each passes a closure.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, mu: float) -> None:
    """``theta_target <- mu theta_target + (1 - mu) theta_online`` for every parameter
    (buffers copied). ``mu = 0`` makes the target a plain copy of the online weights (the
    choice Song & Dhariwal 2023 recommend for consistency models)."""
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"EMA decay mu must be in [0, 1], got {mu}")
    online_params = dict(online.named_parameters())
    for name, param in target.named_parameters():
        param.mul_(mu).add_(online_params[name].detach(), alpha=1.0 - mu)
    online_buffers = dict(online.named_buffers())
    for name, buffer in target.named_buffers():
        buffer.copy_(online_buffers[name])


def draw_batch(data: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """``batch_size`` rows of ``data`` drawn uniformly with replacement."""
    return data[torch.randint(len(data), (batch_size,), generator=generator)]


def frozen(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with no parameter requiring grad (a teacher or an EMA target):
    the one freeze helper, :func:`distill.core.teacher.freeze`."""
    from distill.core.teacher import freeze

    return freeze(module, f"the {type(module).__name__}")


def fit(loss_fn: Callable[[int], Tensor], parameters: Iterable[nn.Parameter], num_steps: int, lr: float,
        after_step: Callable[[int], None] | None = None, progress: bool | None = None, desc: str = "train",
        grad_clip: float | None = 1.0) -> tuple[list[float], float]:
    """Adam on ``loss_fn`` for ``num_steps`` steps; returns (per-step losses, seconds)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise ValueError(f"{desc}: no trainable parameters")
    optimizer = torch.optim.Adam(parameters, lr=lr)
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm.auto import tqdm

    bar = tqdm(range(num_steps), desc=desc, disable=not show, leave=False)
    losses: list[float] = []
    start = time.perf_counter()
    for step in bar:
        loss = loss_fn(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses, time.perf_counter() - start
