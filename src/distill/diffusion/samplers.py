"""Deterministic samplers, apart from models: the caller owns the loop (as in diffusers).

    sampler = DDIM(schedule, num_steps=8)
    x = sampler.init_noise(noise)                # x at t = 1: sigma_1 * noise (+ alpha_1 * 0)
    for index in range(sampler.num_steps):
        x = sampler.step(denoiser, x, index)     # t_index -> t_index+1 on the grid
    # or: x = sample(sampler, denoiser, noise)

A ``denoiser`` is anything with ``predict(x_t, t) -> Prediction(x0, eps)``
(:class:`~distill.diffusion.denoiser.Denoiser`, the oracle of :mod:`.toy`, a student).
The grid is uniform in the schedule's own time from ``t_max`` down to ``t_min`` (for the EDM
schedule that is the Karras grid), or given as ``timesteps``.

- :class:`DDIM` (Song et al. 2021, eta = 0): ``x_s = alpha_s x0_hat + sigma_s eps_hat``, exact
  while x0_hat stays constant along the path; it is the Euler method of the probability-flow
  ODE in (x / alpha, sigma / alpha) (Karras et al. 2022); one network call per step.
- :class:`Euler`: the Euler method of the probability-flow ODE in the schedule's time,
  ``dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat``; for the flow schedule it equals DDIM (the
  rectified-flow sampler). One call per step.
- :class:`Heun`: the explicit trapezoidal rule on the same ODE (Karras et al. 2022, Alg. 1,
  in t), two calls per step (one on a last step to sigma = 0, which is Euler). Compare samplers
  at matched numbers of network calls (``calls``), not steps.
"""
from __future__ import annotations

import torch
from torch import Tensor

from distill.diffusion.denoiser import broadcast_to
from distill.diffusion.schedules import Schedule


class Sampler:
    calls_per_step = 1

    def __init__(self, schedule: Schedule, num_steps: int, t_max: float = 1.0, t_min: float = 0.0,
                 timesteps: Tensor | None = None):
        if timesteps is None:
            if num_steps < 1:
                raise ValueError(f"num_steps must be >= 1, got {num_steps}")
            if not 0.0 <= t_min < t_max <= 1.0:
                raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        else:
            timesteps = torch.as_tensor(timesteps, dtype=torch.float32)
            if timesteps.ndim != 1 or len(timesteps) != num_steps + 1 or not bool((timesteps[1:] < timesteps[:-1]).all()):
                raise ValueError(f"timesteps must be {num_steps + 1} strictly decreasing times, got {timesteps.tolist()}")
        self.schedule = schedule
        self.num_steps = num_steps
        self.t_max = t_max
        self.t_min = t_min
        self.timesteps = timesteps if timesteps is not None else torch.linspace(t_max, t_min, num_steps + 1)

    @property
    def calls(self) -> int:
        """Network calls for a whole run of ``num_steps`` steps."""
        return self.num_steps * self.calls_per_step

    def init_noise(self, noise: Tensor) -> Tensor:
        """x at the first time: ``sigma(t_0) * noise`` (the data term alpha(t_0) x_0 is dropped)."""
        _, sigma = self.schedule.alpha_sigma(self.timesteps[0])
        return sigma.to(noise.dtype) * noise

    def step(self, denoiser, x: Tensor, index: int) -> Tensor:
        if not 0 <= index < self.num_steps:
            raise IndexError(f"step index {index} outside 0..{self.num_steps - 1}")
        return self._step(denoiser, x, self.timesteps[index], self.timesteps[index + 1])

    def _step(self, denoiser, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r}, num_steps={self.num_steps}, t_max={self.t_max}, t_min={self.t_min})"


def ddim_step(prediction, x: Tensor, alpha_next: Tensor, sigma_next: Tensor) -> Tensor:
    """``alpha_next x0_hat + sigma_next eps_hat``: deterministic DDIM to the next noise level."""
    return broadcast_to(alpha_next, x) * prediction.x0 + broadcast_to(sigma_next, x) * prediction.eps


class DDIM(Sampler):
    def _step(self, denoiser, x, t, t_next):
        alpha_next, sigma_next = self.schedule.alpha_sigma(t_next)
        return ddim_step(denoiser.predict(x, t), x, alpha_next.to(x.dtype), sigma_next.to(x.dtype))


def schedule_derivatives(schedule: Schedule, t: Tensor) -> tuple[Tensor, Tensor]:
    """(d alpha / dt, d sigma / dt) at ``t`` by autograd through the schedule's formula (float64)."""
    with torch.inference_mode(False), torch.enable_grad():
        time = torch.as_tensor(t, dtype=torch.float64).detach().clone().requires_grad_(True)
        alpha, sigma = schedule.alpha_sigma(time)
        d_alpha, = torch.autograd.grad(alpha.sum(), time, retain_graph=True)
        d_sigma, = torch.autograd.grad(sigma.sum(), time)
    return d_alpha.detach(), d_sigma.detach()


class Euler(Sampler):
    def velocity(self, denoiser, x: Tensor, t: Tensor) -> Tensor:
        """``dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat`` of the probability-flow ODE."""
        prediction = denoiser.predict(x, t)
        d_alpha, d_sigma = schedule_derivatives(self.schedule, t)
        return float(d_alpha) * prediction.x0 + float(d_sigma) * prediction.eps

    def _step(self, denoiser, x, t, t_next):
        return x + float(t_next - t) * self.velocity(denoiser, x, t)


class Heun(Euler):
    calls_per_step = 2

    @property
    def calls(self) -> int:
        _, sigma_last = self.schedule.alpha_sigma(self.timesteps[-1])
        return 2 * self.num_steps - int(float(sigma_last) == 0.0)

    def _step(self, denoiser, x, t, t_next):
        step = float(t_next - t)
        slope = self.velocity(denoiser, x, t)
        x_euler = x + step * slope
        _, sigma_next = self.schedule.alpha_sigma(t_next)
        if float(sigma_next) == 0.0:  # eps is undefined at sigma = 0: the last step is Euler
            return x_euler
        return x + step * 0.5 * (slope + self.velocity(denoiser, x_euler, t_next))


SAMPLERS = {"ddim": DDIM, "euler": Euler, "heun": Heun}


def build_sampler(name: str, schedule: Schedule, num_steps: int, **kwargs) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](schedule, num_steps, **kwargs)


def sample(sampler: Sampler, denoiser, noise: Tensor) -> Tensor:
    """Run the whole loop from ``noise`` (standard normal) and return x at the last time."""
    x = sampler.init_noise(noise)
    for index in range(sampler.num_steps):
        x = sampler.step(denoiser, x, index)
    return x
