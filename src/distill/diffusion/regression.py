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
from distill.diffusion.samplers import DDIM
from distill.diffusion.training import (
    Draws,
    Objective,
    Trainee,
    frozen,
    train_objective,
)


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


class RegressionObjective(Objective):
    """Mean of ``(x_hat_student(z_t, t) - x_0(z))^2`` over a batch of ODE pairs, each at a random one
    of the K kept times; batches are ``{"input": {"states": (B, K, ...), "endpoints": (B, ...)}}``."""

    def __init__(self, times: Tensor) -> None:
        super().__init__()
        self.times = times

    def loss(self, batch):
        states, endpoints = batch["input"]["states"], batch["input"]["endpoints"]
        draws = Draws(batch, states.device)
        cols = draws.randint(0, len(self.times), len(states))
        rows = torch.arange(len(states), device=states.device)
        prediction = self.student(states[rows, cols], self.times.to(states.device)[cols])
        return (prediction - endpoints).pow(2).mean()


def regression_distillation(teacher: Denoiser, noise: Tensor, *, teacher_steps: int = 64, max_student_steps: int = 1,
                            num_steps: int = 2000, batch_size: int = 128, lr: float = 1e-4, seed: int = 0,
                            progress: bool | None = None, run_dir=None, resume: bool = False,
                            checkpoint_every: int = 0) -> tuple[Denoiser, dict]:
    """Fit a copy of ``teacher`` to its ODE pairs from ``noise`` (M, ...) on the shared loop; returns
    (frozen student, history). The pairs are generated again on a resume (deterministic in ``noise``)."""
    from distill.data.sources import TensorData

    start = time.perf_counter()
    states, times, endpoints = ode_pairs(teacher, noise, teacher_steps, max_student_steps)
    pairs_seconds = time.perf_counter() - start
    student = copy.deepcopy(teacher)
    student.train()
    student.requires_grad_(True)
    pairs = TensorData({"states": states, "endpoints": endpoints}, name="ode_pairs")
    history = train_objective(RegressionObjective(times), Trainee(student, call="x0"), pairs, num_steps=num_steps,
                              batch_size=batch_size, lr=lr, seed=seed, progress=progress, run_dir=run_dir,
                              resume=resume, checkpoint_every=checkpoint_every,
                              fingerprint=f"regression|{teacher_steps}|{max_student_steps}|{len(noise)}|{lr}|"
                                          f"{batch_size}|{seed}")
    return frozen(student), {**history, "seconds": history["seconds"] + pairs_seconds, "num_pairs": len(noise),
                             "pairs_seconds": pairs_seconds}
