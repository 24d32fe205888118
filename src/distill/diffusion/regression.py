"""Direct ODE-pair regression (Luhman & Luhman 2021, "Knowledge Distillation in Iterative
Generative Models for Improved Sampling Speed"): the baseline the step-distillation methods beat.

The teacher's deterministic sampler maps noise ``z`` to its ODE endpoint ``x_0(z)``; the student
(a copy of the teacher) regresses it: ``L = || x_hat_student(z_t, t) - x_0(z) ||^2`` where
``z_t`` is the teacher's trajectory at the times ``1 - k / K`` of a K-step grid (K =
``max_student_steps``; K = 1 is the original one-step method), so the student may also be run
with DDIM on any divisor of K steps.
"""
from __future__ import annotations

import copy
import time

import torch
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.loop import fit, frozen
from distill.diffusion.samplers import DDIM


@torch.no_grad()
def ode_pairs(teacher, noise: Tensor, teacher_steps: int = 64, max_student_steps: int = 1,
              batch_size: int = 512) -> tuple[Tensor, Tensor, Tensor]:
    """(states (M, K, ...), times (K,), endpoints (M, ...)) of the teacher's DDIM ODE from ``noise``."""
    if teacher_steps % max_student_steps:
        raise ValueError(f"teacher_steps ({teacher_steps}) must be a multiple of max_student_steps ({max_student_steps})")
    sampler = DDIM(teacher.schedule, teacher_steps)
    keep = list(range(0, teacher_steps, teacher_steps // max_student_steps))
    states, endpoints = [], []
    for chunk in noise.split(batch_size):
        x, kept = sampler.init_noise(chunk), []
        for index in range(teacher_steps):
            if index in keep:
                kept.append(x)
            x = sampler.step(teacher, x, index)
        states.append(torch.stack(kept, 1))
        endpoints.append(x)
    return torch.cat(states), sampler.timesteps[keep], torch.cat(endpoints)


def regression_distillation(teacher: Denoiser, noise: Tensor, *, teacher_steps: int = 64, max_student_steps: int = 1,
                            num_steps: int = 2000, batch_size: int = 128, lr: float = 1e-4, seed: int = 0,
                            progress: bool | None = None) -> tuple[Denoiser, dict]:
    """Fit a copy of ``teacher`` to its ODE pairs from ``noise`` (M, ...); returns (frozen student, history)."""
    start = time.perf_counter()
    states, times, endpoints = ode_pairs(teacher, noise, teacher_steps, max_student_steps)
    pairs_seconds = time.perf_counter() - start
    generator = torch.Generator().manual_seed(seed)
    student = copy.deepcopy(teacher)
    student.train()
    student.requires_grad_(True)

    def loss_fn(step: int) -> Tensor:
        rows = torch.randint(len(noise), (batch_size,), generator=generator)
        cols = torch.randint(len(times), (batch_size,), generator=generator)
        prediction = student.predict(states[rows, cols], times[cols])
        return (prediction.x0 - endpoints[rows]).pow(2).mean()

    losses, seconds = fit(loss_fn, student.parameters(), num_steps, lr, progress=progress, desc="regression")
    return frozen(student), {"losses": losses, "seconds": seconds + pairs_seconds, "num_pairs": len(noise),
                             "pairs_seconds": pairs_seconds}
