"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", Algorithm 2): a student learns to take in one DDIM step what the teacher
takes in two; the student then becomes the teacher and the steps halve again (256 -> ... -> 1).

With the student's N steps on the uniform grid ``t_i = i / N``, for ``t = i / N``,
``t' = t - 0.5 / N`` and ``t'' = t - 1 / N`` (the teacher's grid has 2N steps):

    z_t'  = alpha_t'  x_hat(z_t, t)    + (sigma_t'  / sigma_t ) (z_t  - alpha_t  x_hat(z_t, t))
    z_t'' = alpha_t'' x_hat(z_t', t')  + (sigma_t'' / sigma_t') (z_t' - alpha_t' x_hat(z_t', t'))
    x_target = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

so one student DDIM step t -> t'' lands exactly on the teacher's z_t'' (tested). The second
teacher call is at **t'**, from z_t' (the trap: diffusers' example once evaluated it at t'').
Loss: ``w(t) || x_target - x_hat_student(z_t, t) ||^2`` with truncated-SNR weighting
``w = max(alpha_t^2 / sigma_t^2, 1)`` (the paper's choice; ``"snr_plus_one"`` is the other one
it studies, ``"none"`` plain x-space MSE). The student is v-parameterised and starts as a copy of
the teacher.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor

from distill.diffusion.denoiser import Denoiser, broadcast_to
from distill.diffusion.samplers import ddim_step
from distill.diffusion.training import (
    Objective,
    Trainee,
    frozen,
    train_objective,
)
from distill.training.checkpoint import latest_checkpoint

WEIGHTINGS = ("truncated_snr", "snr_plus_one", "none")


def progressive_target(teacher, z_t: Tensor, t: Tensor, num_student_steps: int) -> Tensor:
    """The x_0 a student must predict at (z_t, t) so that its one DDIM step equals two teacher steps."""
    schedule = teacher.schedule
    t_mid, t_next = t - 0.5 / num_student_steps, t - 1.0 / num_student_steps
    alpha, sigma = (broadcast_to(c, z_t) for c in schedule.alpha_sigma(t))
    alpha_mid, sigma_mid = schedule.alpha_sigma(t_mid)
    alpha_next, sigma_next = (broadcast_to(c, z_t) for c in schedule.alpha_sigma(t_next))
    z_mid = ddim_step(teacher.predict(z_t, t), z_t, alpha_mid, sigma_mid)
    z_next = ddim_step(teacher.predict(z_mid, t_mid), z_mid, alpha_next, sigma_next)  # at t', not t''
    ratio = sigma_next / sigma
    return (z_next - ratio * z_t) / (alpha_next - ratio * alpha)


def snr_weight(alpha: Tensor, sigma: Tensor, weighting: str) -> Tensor:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    snr = alpha ** 2 / sigma ** 2
    if weighting == "truncated_snr":
        return snr.clamp(min=1.0)
    return snr + 1.0 if weighting == "snr_plus_one" else torch.ones_like(snr)


def progressive_loss(student: Denoiser, teacher, x0: Tensor, noise: Tensor, step_index: Tensor,
                     num_student_steps: int, weighting: str = "truncated_snr", network=None) -> Tensor:
    """Mean over the batch of ``w(t) * mean_dims (x_target - x_hat)^2``; ``step_index`` in 1..N gives t = i / N.
    ``network(z_t, t) -> x_hat`` defaults to ``student.predict(z_t, t).x0``."""
    t = step_index.to(x0.dtype) / num_student_steps
    alpha, sigma = student.schedule.alpha_sigma(t)
    z_t = broadcast_to(alpha, x0) * x0 + broadcast_to(sigma, x0) * noise
    with torch.no_grad():
        target = progressive_target(teacher, z_t, t, num_student_steps)
    prediction = student.predict(z_t, t).x0 if network is None else network(z_t, t)
    error = (prediction - target).pow(2).flatten(1).mean(1)
    return (snr_weight(alpha, sigma, weighting) * error).mean()


def init_student(teacher: Denoiser) -> Denoiser:
    """A trainable copy of the teacher; refused unless it is v-parameterised (as the paper requires
    for stable x-predictions at low SNR)."""
    if getattr(teacher, "prediction", None) != "v":
        raise ValueError(f"progressive distillation starts the student from the teacher's weights and needs a "
                         f"v-parameterised teacher; got prediction={getattr(teacher, 'prediction', None)!r} "
                         f"(train the teacher with prediction='v', or pass your own v-parameterised student)")
    student = copy.deepcopy(teacher)
    student.train()
    student.requires_grad_(True)
    return student


class ProgressiveObjective(Objective):
    """:func:`progressive_loss` at step indices ``i ~ U{1..N}`` for a trainee around the student (call ``"x0"``)."""

    def __init__(self, teacher, student: Denoiser, num_student_steps: int, weighting: str = "truncated_snr") -> None:
        super().__init__(teacher)
        snr_weight(torch.ones(1), torch.ones(1), weighting)  # an unknown weighting fails before training
        self.denoiser = student
        self.num_student_steps = num_student_steps
        self.weighting = weighting

    def loss(self, batch):
        x0, draws = self.samples(batch)
        index = draws.randint(1, self.num_student_steps + 1, len(x0))
        return progressive_loss(self.denoiser, self.teacher, x0, draws.randn(x0.shape), index,
                                self.num_student_steps, self.weighting, network=self.student)


def distill_round(teacher, student: Denoiser, data: Tensor, num_student_steps: int, *, num_steps: int = 500,
                  batch_size: int = 128, lr: float = 1e-4, weighting: str = "truncated_snr", seed: int = 0,
                  progress: bool | None = None, run_dir=None, resume: bool = False,
                  checkpoint_every: int = 0) -> dict:
    """One round on the shared loop: train ``student`` (in place) to do in ``num_student_steps`` DDIM
    steps what ``teacher`` does in twice as many. Returns the history."""
    if num_student_steps < 1:
        raise ValueError(f"num_student_steps must be >= 1, got {num_student_steps}")
    history = train_objective(ProgressiveObjective(teacher, student, num_student_steps, weighting),
                              Trainee(student, call="x0"), data, num_steps=num_steps, batch_size=batch_size, lr=lr,
                              seed=seed, progress=progress, run_dir=run_dir, resume=resume,
                              checkpoint_every=checkpoint_every,
                              fingerprint=f"progressive|{num_student_steps}|{weighting}|{lr}|{batch_size}|{seed}")
    return {**history, "num_student_steps": num_student_steps}


def progressive_distillation(teacher: Denoiser, data: Tensor, *, start_steps: int = 256, end_steps: int = 1,
                             num_steps_per_round: int = 500, batch_size: int = 128, lr: float = 1e-4,
                             weighting: str = "truncated_snr", seed: int = 0, progress: bool | None = None,
                             run_dir=None, resume: bool = False, checkpoint_every: int = 0
                             ) -> tuple[dict[int, Denoiser], list[dict]]:
    """Rounds from ``start_steps`` (the teacher's step count) halving down to ``end_steps``.

    With ``run_dir``, round N (a student of N steps) trains in ``run_dir/round_N``; ``resume=True``
    continues every round that has a checkpoint (a finished one is read back, not retrained) and
    starts the others. Returns ({student step count: frozen student}, per-round histories)."""
    if start_steps < 2 or start_steps & (start_steps - 1) or end_steps < 1 or start_steps % end_steps:
        raise ValueError(f"start_steps must be a power of two >= 2 divisible by end_steps, "
                         f"got start_steps={start_steps}, end_steps={end_steps}")
    students, history = {}, []
    current, steps = teacher, start_steps
    while steps > end_steps:
        steps //= 2
        student = init_student(current)
        folder = None if run_dir is None else Path(run_dir) / f"round_{steps}"
        started = folder is not None and latest_checkpoint(folder / "checkpoints") is not None
        history.append(distill_round(current, student, data, steps, num_steps=num_steps_per_round,
                                     batch_size=batch_size, lr=lr, weighting=weighting, seed=seed + steps,
                                     progress=progress, run_dir=folder, resume=resume and started,
                                     checkpoint_every=checkpoint_every))
        current = students[steps] = frozen(student)
    return students, history
