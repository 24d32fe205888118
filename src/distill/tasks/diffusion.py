"""Diffusion denoising: the student predicts a clean sample (or a consistency function's output)
from a noised one, and a method-specific objective builds its regression target.

A batch is ``{"input": x_0 (B, ...), "index": (B,), "noise_seed": int, "noise_share": (rank,
world_size)}``: real samples in the loop's seeded order, plus a seed that is a pure function of
(run seed, epoch, batch), from which the objective draws its noise levels and noise
(:class:`distill.diffusion.training.NoiseSeeds`, :class:`~distill.diffusion.training.Draws`).
Nothing is drawn from the global RNG, so a resumed run draws exactly what the uninterrupted run
would have, and W data-parallel processes draw together what one process would.

The objectives (teacher training, progressive, consistency, regression) live in
:mod:`distill.diffusion.training`; this task is their common contract with the shared loop:
per-sample averaging and the output reader. It is not a ``distill run`` task (diffusion runs are
``distill diffusion ...``), so it is not in :data:`distill.tasks.TASKS`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from distill.core.io import ModelOutputError
from distill.tasks.base import Task


class DiffusionTask(Task):
    """Outputs: a tensor shaped like the samples (an x_0 prediction, a network's raw output or a
    consistency function's value). Losses: per-sample weighted squared error (or an L1 / pseudo-Huber
    distance), averaged over the batch. Metrics: the mean squared error between two predictions."""

    name = "diffusion"

    def read(self, output: Any, batch: dict[str, Any], *, who: str) -> Tensor:
        if isinstance(output, Tensor):
            return output
        if hasattr(output, "x0") and isinstance(output.x0, Tensor):  # a Denoiser's Prediction
            return output.x0
        raise ModelOutputError(f"{who} returned {type(output).__name__}; the diffusion task reads a tensor shaped "
                               "like the samples (an x_0 prediction) or a Prediction(x0, eps)")

    def check_pair(self, student: Tensor, teacher: Tensor) -> None:
        if student.shape != teacher.shape:
            raise ValueError(f"diffusion task: the target is {tuple(teacher.shape)} and the student's prediction "
                             f"{tuple(student.shape)}; both must be shaped like the samples")

    def metrics(self, student: Tensor, teacher: Tensor | None, targets: Tensor | None, inputs=None) -> dict[str, float]:
        if teacher is None:
            return {}
        return {"mse_to_teacher": float((student.float() - teacher.float()).square().mean())}


def noise_generator(batch: dict[str, Any]) -> torch.Generator:
    """The CPU generator a diffusion objective draws this batch's noise levels and noise from."""
    seed = batch.get("noise_seed")
    if not isinstance(seed, int):
        raise KeyError("a diffusion batch carries an int 'noise_seed' (distill.diffusion.training.NoiseSeeds adds it)")
    return torch.Generator().manual_seed(seed)
