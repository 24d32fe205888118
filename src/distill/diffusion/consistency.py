"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", Alg. 2).

Everything here lives in the Karras/EDM variables: ``x = x_t / alpha_t`` at noise level
``sigma = sigma_t / alpha_t`` (so data + sigma * noise), which any schedule maps to
(:meth:`Schedule.t_from_karras_sigma`).

The consistency function has the boundary parameterisation of the paper (Sec. 3, App. C):

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(x, sigma)
    c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)
    c_out  = sigma_data (sigma - sigma_min) / sqrt(sigma_data^2 + sigma^2)

so ``f(x, sigma_min) = x`` exactly (c_skip = 1, c_out = 0). ``F`` is the teacher's network in
EDM's preconditioning (Karras et al. 2022, Table 1): it sees ``c_in x`` with
``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` and the time ``c_noise = ln(sigma) / 4`` through the
wrapped :class:`Denoiser` (whose default ``time_input="c_noise"`` is exactly that; a VP model's
input ``alpha x`` is c_in x with sigma_data = 1), and its output is read as EDM's F:
``F = (D(x, sigma) - c_skip_edm x) / c_out_edm`` with ``c_skip_edm = sigma_data^2 / (sigma^2 +
sigma_data^2)``, ``c_out_edm = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``. A
v-parameterised VP network with sigma_data = 1 has F = -v. Copying the teacher therefore gives
f ~= D, the teacher's denoiser, away from sigma_min: the student starts from the teacher.

Training (CD): ``sigma_n`` on the Karras grid (N points, rho = 7), ``x_{n+1} = x_0 + sigma_{n+1} z``,
one teacher ODE step (Heun, as the paper, or DDIM) to ``x_hat_n``, and
``L = d(f_theta(x_{n+1}, sigma_{n+1}), f_theta-(x_hat_n, sigma_n))`` with the target network
``theta- <- stopgrad(mu theta- + (1 - mu) theta)``. Distances: ``"l2"`` (mean squared error),
``"l1"``, ``"pseudo_huber"`` ``sqrt(|a - b|^2 + c^2) - c`` with ``c = 0.00054 sqrt(d)`` (Song &
Dhariwal 2023, "Improved Techniques for Training Consistency Models").

Sampling: one step ``f(sigma_max z, sigma_max)``; multistep (Alg. 1) re-noises
``x + sqrt(tau^2 - sigma_min^2) z'`` and applies f at each tau.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from distill.diffusion.denoiser import Denoiser, broadcast_to
from distill.diffusion.schedules import karras_grid
from distill.diffusion.training import Objective, Trainee, train_objective

DISTANCES = ("l2", "l1", "pseudo_huber")
SOLVERS = ("heun", "ddim")


def boundary_scalings(sigma: Tensor, sigma_data: float = 0.5, sigma_min: float = 0.002) -> tuple[Tensor, Tensor]:
    """(c_skip, c_out) of Song et al. (2023), App. C: f(x, sigma_min) = x exactly."""
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = sigma_data * (sigma - sigma_min) / (sigma_data ** 2 + sigma ** 2).sqrt()
    return c_skip, c_out


def edm_scalings(sigma: Tensor, sigma_data: float = 0.5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of EDM (Karras et al. 2022, Table 1)."""
    c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
    c_out = sigma * sigma_data / (sigma ** 2 + sigma_data ** 2).sqrt()
    c_in = 1.0 / (sigma ** 2 + sigma_data ** 2).sqrt()
    return c_skip, c_out, c_in, 0.25 * torch.log(sigma)


def karras_denoise(denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """D(x, sigma): the denoiser's x_0 for Karras-space ``x`` at per-sample (B,) noise ``sigma``."""
    t = denoiser.schedule.t_from_karras_sigma(sigma).to(x.dtype)
    alpha, _ = denoiser.schedule.alpha_sigma(t)
    return denoiser.predict(broadcast_to(alpha.to(x.dtype), x) * x, t).x0


def teacher_step(teacher, x: Tensor, sigma: Tensor, sigma_next: Tensor, solver: str = "heun") -> Tensor:
    """One probability-flow ODE step in Karras space from ``sigma`` to ``sigma_next`` (both (B,))."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown teacher solver {solver!r}; valid: {', '.join(SOLVERS)}")
    s, s_next = broadcast_to(sigma, x), broadcast_to(sigma_next, x)
    denoised = karras_denoise(teacher, x, sigma)
    if solver == "ddim":  # = Euler in (x, sigma)
        return denoised + (s_next / s) * (x - denoised)
    slope = (x - denoised) / s
    x_euler = x + (s_next - s) * slope
    slope_next = (x_euler - karras_denoise(teacher, x_euler, sigma_next)) / s_next
    return x + (s_next - s) * 0.5 * (slope + slope_next)


def distance(a: Tensor, b: Tensor, kind: str = "l2", huber_c: float | None = None) -> Tensor:
    """Per-sample (B,) distance between a and b."""
    if kind not in DISTANCES:
        raise ValueError(f"unknown distance {kind!r}; valid: {', '.join(DISTANCES)}")
    diff = (a - b).flatten(1)
    if kind == "l2":
        return diff.pow(2).mean(1)
    if kind == "l1":
        return diff.abs().mean(1)
    c = 0.00054 * math.sqrt(diff.shape[1]) if huber_c is None else huber_c
    return (diff.pow(2).sum(1) + c ** 2).sqrt() - c


class ConsistencyModel(nn.Module):
    """f(x, sigma) = c_skip x + c_out F(x, sigma) around a (copied) denoiser; see the module docstring."""

    def __init__(self, denoiser: Denoiser, sigma_data: float = 0.5, sigma_min: float = 0.002,
                 sigma_max: float = 80.0):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.denoiser = denoiser
        self.sigma_data = sigma_data
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    @property
    def schedule(self):
        return self.denoiser.schedule

    def edm_output(self, x: Tensor, sigma: Tensor) -> Tensor:
        """F(x, sigma): the wrapped network's answer in EDM's preconditioning."""
        c_skip, c_out, _, _ = edm_scalings(sigma, self.sigma_data)
        denoised = karras_denoise(self.denoiser, x, sigma)
        return (denoised - broadcast_to(c_skip, x) * x) / broadcast_to(c_out, x)

    def forward(self, x: Tensor, sigma) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        c_skip, c_out = boundary_scalings(sigma, self.sigma_data, self.sigma_min)
        return broadcast_to(c_skip, x) * x + broadcast_to(c_out, x) * self.edm_output(x, sigma)


def multistep_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> list[float]:
    """tau_1 = sigma_max > ... > tau_num_steps: the Karras grid with num_steps + 1 points, sigma_min dropped."""
    return karras_grid(num_steps + 1, sigma_min, sigma_max, rho).flip(0)[:-1].tolist()


def consistency_sample(model: ConsistencyModel, noise: Tensor, num_steps: int = 1,
                       sigmas: list[float] | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Song et al. (2023), Alg. 1: one step from ``sigma_max * noise``, then re-noise and re-apply."""
    sigmas = multistep_sigmas(num_steps, model.sigma_min, model.sigma_max) if sigmas is None else list(sigmas)
    if len(sigmas) != num_steps or abs(sigmas[0] - model.sigma_max) > 1e-6 * model.sigma_max:
        raise ValueError(f"need {num_steps} sigmas starting at sigma_max={model.sigma_max}, got {sigmas}")
    x = model(sigmas[0] * noise, sigmas[0])
    for tau in sigmas[1:]:
        fresh = torch.randn(noise.shape, generator=generator, dtype=noise.dtype)
        x = model(x + math.sqrt(tau ** 2 - model.sigma_min ** 2) * fresh, tau)
    return x


def consistency_loss(student: ConsistencyModel, target: ConsistencyModel, teacher, x0: Tensor, noise: Tensor,
                     index: Tensor, grid: Tensor, solver: str = "heun", kind: str = "l2", network=None) -> Tensor:
    """Mean CD loss for per-sample grid indices ``index`` in 0..N-2 (pair sigma_index, sigma_index+1);
    ``network(x, sigma)`` (default ``student``) computes the online f."""
    sigma, sigma_next = grid[index].to(x0.dtype), grid[index + 1].to(x0.dtype)
    x_next = x0 + broadcast_to(sigma_next, x0) * noise
    with torch.no_grad():
        x_hat = teacher_step(teacher, x_next, sigma_next, sigma, solver)
        goal = target(x_hat, sigma)
    return distance((student if network is None else network)(x_next, sigma_next), goal, kind).mean()


class ConsistencyObjective(Objective):
    """:func:`consistency_loss` at grid indices ``n ~ U{0..N-2}``; the trainee (call ``"consistency"``)
    holds the online model and, as its EMA copy, the target network theta-."""

    def __init__(self, teacher, grid: Tensor, solver: str = "heun", kind: str = "l2") -> None:
        super().__init__(teacher)
        if solver not in SOLVERS:
            raise ValueError(f"unknown teacher solver {solver!r}; valid: {', '.join(SOLVERS)}")
        if kind not in DISTANCES:
            raise ValueError(f"unknown distance {kind!r}; valid: {', '.join(DISTANCES)}")
        self.grid = grid
        self.solver = solver
        self.kind = kind

    def loss(self, batch):
        x0, draws = self.samples(batch)
        index = draws.randint(0, len(self.grid) - 1, len(x0))
        trainee = getattr(self.student, "module", self.student)  # the target network, past DDP's wrapper
        return consistency_loss(trainee.online, trainee.ema, self.teacher, x0, draws.randn(x0.shape), index,
                                self.grid.to(x0.device), self.solver, self.kind, network=self.student)


def consistency_distillation(teacher: Denoiser, data: Tensor, *, num_steps: int = 2000, batch_size: int = 128,
                             lr: float = 1e-4, num_grid_points: int = 18, mu: float = 0.95, solver: str = "heun",
                             kind: str = "l2", sigma_data: float = 0.5, sigma_min: float = 0.002,
                             sigma_max: float = 80.0, seed: int = 0, progress: bool | None = None,
                             run_dir=None, resume: bool = False, checkpoint_every: int = 0
                             ) -> tuple[ConsistencyModel, dict]:
    """Distil ``teacher`` into a consistency model started from it, on the shared loop; returns
    (frozen target model, history).

    The returned network is the EMA target theta- (the paper samples with it); with ``mu = 0``
    it equals the online network. ``run_dir`` / ``resume`` / ``checkpoint_every``: see
    :func:`distill.diffusion.training.train_objective` (checkpoints hold both networks)."""
    student = ConsistencyModel(copy.deepcopy(teacher), sigma_data, sigma_min, sigma_max)
    student.train()
    student.requires_grad_(True)
    trainee = Trainee(student, call="consistency", ema_decay=mu)
    grid = karras_grid(num_grid_points, sigma_min, sigma_max)
    history = train_objective(ConsistencyObjective(teacher, grid, solver, kind), trainee, data, num_steps=num_steps,
                              batch_size=batch_size, lr=lr, seed=seed, progress=progress, run_dir=run_dir,
                              resume=resume, checkpoint_every=checkpoint_every,
                              fingerprint=f"consistency|{num_grid_points}|{mu}|{solver}|{kind}|{sigma_data}|"
                                          f"{sigma_min}|{sigma_max}|{lr}|{batch_size}|{seed}")
    return trainee.ema, history
