"""Train a diffusion teacher: the denoising loss in the denoiser's own parameterisation.

For ``x_0`` from the data, ``t ~ U(t_eps, 1)``, ``eps ~ N(0, I)``, ``x_t = alpha_t x_0 + sigma_t eps``:

    L = E || net(x_t, t) - target_t ||^2,   target = eps | v | x_0 | eps - x_0   (Ho et al. 2020;
                                              Salimans & Ho 2022 for v; Lipman et al. 2022 for flow)

The v loss equals the x_0 loss weighted by ``SNR + 1``. An EMA of the weights (``ema_decay``)
is what is returned, as usual for diffusion models.
"""
from __future__ import annotations

from torch import Tensor

from distill.diffusion.denoiser import Denoiser, broadcast_to, from_x0_eps
from distill.diffusion.training import Objective, Trainee, train_objective


def denoising_loss(denoiser: Denoiser, x0: Tensor, noise: Tensor, t: Tensor, network=None) -> Tensor:
    """Mean of ``(net(x_t, t) - target_t)^2``; ``network`` (default ``denoiser``) computes the raw output."""
    alpha, sigma = denoiser.schedule.alpha_sigma(t)
    x_t = broadcast_to(alpha, x0) * x0 + broadcast_to(sigma, x0) * noise
    target = from_x0_eps(x0, noise, alpha, sigma, denoiser.prediction)
    return ((denoiser if network is None else network)(x_t, t) - target).pow(2).mean()


class TeacherObjective(Objective):
    """The denoising loss at ``t ~ U(t_eps, 1)`` for a trainee around a :class:`Denoiser` (call ``"raw"``)."""

    def __init__(self, denoiser: Denoiser, t_eps: float = 1e-3) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.t_eps = t_eps

    def loss(self, batch):
        x0, draws = self.samples(batch)
        t = self.t_eps + (1 - self.t_eps) * draws.rand(len(x0))
        return denoising_loss(self.denoiser, x0, draws.randn(x0.shape), t, network=self.student)


def train_teacher(denoiser: Denoiser, data: Tensor, *, num_steps: int = 2000, batch_size: int = 128,
                  lr: float = 2e-3, ema_decay: float = 0.995, seed: int = 0, t_eps: float = 1e-3,
                  progress: bool | None = None, run_dir=None, resume: bool = False,
                  checkpoint_every: int = 0) -> tuple[Denoiser, dict]:
    """Train ``denoiser`` in place on ``data`` (N, ...) on the shared loop; return (frozen EMA copy, history).

    ``run_dir`` / ``resume`` / ``checkpoint_every``: see :func:`distill.diffusion.training.train_objective`."""
    trainee = Trainee(denoiser, call="raw", ema_decay=ema_decay)
    denoiser.train()
    history = train_objective(TeacherObjective(denoiser, t_eps), trainee, data, num_steps=num_steps,
                              batch_size=batch_size, lr=lr, seed=seed, progress=progress, run_dir=run_dir,
                              resume=resume, checkpoint_every=checkpoint_every,
                              fingerprint=f"teacher|{ema_decay}|{t_eps}|{lr}|{batch_size}|{seed}")
    return trainee.ema, history
