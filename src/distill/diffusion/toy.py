"""The 2-D mixture of eight Gaussians and its exact denoiser (an oracle teacher for tests).

Data: ``x_0 ~ (1/K) sum_k N(mu_k, s^2 I)`` with the K = 8 means evenly spaced on a circle of
``radius``. For ``x_t = alpha x_0 + sigma eps`` the posterior mean is closed form:
``x_t | k ~ N(alpha mu_k, (alpha^2 s^2 + sigma^2) I)``, responsibilities
``w_k(x_t) = softmax_k(-|x_t - alpha mu_k|^2 / (2 (alpha^2 s^2 + sigma^2)))`` and

    E[x_0 | x_t] = sum_k w_k (mu_k + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu_k)),

the minimiser of the denoising loss, so the probability-flow ODE driven by it carries noise
exactly onto the mixture. ``OracleDenoiser`` computes it in float64.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.diffusion.denoiser import Prediction, broadcast_to
from distill.diffusion.schedules import Schedule


def mixture_means(num_modes: int = 8, radius: float = 2.0) -> Tensor:
    angles = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)  # (K, 2)


def sample_mixture(num_samples: int, generator: torch.Generator | None = None, num_modes: int = 8,
                   radius: float = 2.0, std: float = 0.1) -> Tensor:
    """``num_samples`` points (N, 2) float32 from the mixture."""
    means = mixture_means(num_modes, radius).float()
    modes = torch.randint(num_modes, (num_samples,), generator=generator)
    return means[modes] + std * torch.randn(num_samples, 2, generator=generator)


def nearest_mode(points: Tensor, num_modes: int = 8, radius: float = 2.0) -> Tensor:
    """Index (N,) of the closest mixture mean for each point."""
    return torch.cdist(points.double(), mixture_means(num_modes, radius)).argmin(dim=1)


class OracleDenoiser:
    """The exact posterior-mean denoiser of the mixture under ``schedule`` (no parameters)."""

    def __init__(self, schedule: Schedule, num_modes: int = 8, radius: float = 2.0, std: float = 0.1):
        self.schedule = schedule
        self.num_modes = num_modes
        self.radius = radius
        self.std = std

    def predict(self, x_t: Tensor, t) -> Prediction:
        x = x_t.double()
        t = torch.as_tensor(t, dtype=torch.float64)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t.double()
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = broadcast_to(alpha, x), broadcast_to(sigma, x)
        means = mixture_means(self.num_modes, self.radius)  # (K, 2)
        variance = alpha ** 2 * self.std ** 2 + sigma ** 2  # (B, 1)
        diff = x[:, None, :] - alpha[:, :, None] * means[None]  # (B, K, 2)
        weights = torch.softmax(-(diff ** 2).sum(-1) / (2 * variance), dim=1)  # (B, K)
        gain = (alpha * self.std ** 2 / variance)[:, :, None]  # (B, 1, 1)
        x0 = (weights[:, :, None] * (means[None] + gain * diff)).sum(1)
        eps = (x - alpha * x0) / sigma
        return Prediction(x0.to(x_t.dtype), eps.to(x_t.dtype))
