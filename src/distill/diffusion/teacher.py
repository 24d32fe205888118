"""Train a diffusion teacher: the denoising loss in the denoiser's own parameterisation.

For ``x_0`` from the data, ``t ~ U(t_eps, 1)``, ``eps ~ N(0, I)``, ``x_t = alpha_t x_0 + sigma_t eps``:

    L = E || net(x_t, t) - target_t ||^2,   target = eps | v | x_0 | eps - x_0   (Ho et al. 2020;
                                              Salimans & Ho 2022 for v; Lipman et al. 2022 for flow)

The v loss equals the x_0 loss weighted by ``SNR + 1``. An EMA of the weights (``ema_decay``)
is what is returned, as usual for diffusion models.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from distill.diffusion.denoiser import Denoiser, broadcast_to, from_x0_eps
from distill.diffusion.loop import draw_batch, ema_update, fit, frozen


def denoising_loss(denoiser: Denoiser, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    alpha, sigma = denoiser.schedule.alpha_sigma(t)
    x_t = broadcast_to(alpha, x0) * x0 + broadcast_to(sigma, x0) * noise
    target = from_x0_eps(x0, noise, alpha, sigma, denoiser.prediction)
    return (denoiser(x_t, t) - target).pow(2).mean()


def train_teacher(denoiser: Denoiser, data: Tensor, *, num_steps: int = 2000, batch_size: int = 128,
                  lr: float = 2e-3, ema_decay: float = 0.995, seed: int = 0, t_eps: float = 1e-3,
                  progress: bool | None = None) -> tuple[Denoiser, dict]:
    """Train ``denoiser`` in place on ``data`` (N, ...); return (frozen EMA copy, history)."""
    generator = torch.Generator().manual_seed(seed)
    ema = frozen(copy.deepcopy(denoiser))
    denoiser.train()

    def loss_fn(step: int) -> Tensor:
        x0 = draw_batch(data, batch_size, generator)
        t = t_eps + (1 - t_eps) * torch.rand(batch_size, generator=generator)
        return denoising_loss(denoiser, x0, torch.randn(x0.shape, generator=generator), t)

    losses, seconds = fit(loss_fn, denoiser.parameters(), num_steps, lr, desc="teacher",
                          after_step=lambda step: ema_update(ema, denoiser, ema_decay), progress=progress)
    return ema, {"losses": losses, "seconds": seconds, "num_steps": num_steps}
