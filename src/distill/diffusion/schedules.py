"""Noise schedules: continuous time ``t`` in [0, 1] -> (alpha_t, sigma_t), apart from any model.

A noisy sample is ``x_t = alpha_t * x_0 + sigma_t * eps`` with ``eps ~ N(0, I)``; ``t = 0`` is
(nearly) clean data, ``t = 1`` (nearly) pure noise. Every schedule gives

- ``alpha_sigma(t)``: the pair (alpha_t, sigma_t), float tensors shaped like ``t``;
- ``logsnr(t) = log(alpha_t^2 / sigma_t^2)`` and its inverse ``t_from_logsnr``;

and the conversions below connect the three views of one noise level: (alpha, sigma), logSNR
and the Karras/EDM noise level ``sigma_karras = sigma / alpha`` (the noise std of
``x_t / alpha_t``, Karras et al. 2022), so that a model trained with one schedule can be
driven on another's grid.

Schedules (all store their arguments verbatim):

- :class:`CosineSchedule` -- variance preserving, ``logSNR(t) = -2 log tan(a t + b)``, truncated
  to [logsnr_min, logsnr_max] (Nichol & Dhariwal 2021; the logSNR form of Kingma et al. 2021
  and Salimans & Ho 2022). ``alpha^2 = sigmoid(logSNR)``, ``sigma^2 = sigmoid(-logSNR)``.
- :class:`LinearSchedule` -- the discrete DDPM schedule (Ho et al. 2020): betas linear in
  [beta_start, beta_end] over ``num_train_timesteps``, ``alpha_bar_n = prod_{i<=n} (1 - beta_i)``,
  ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 - alpha_bar)``. Continuous ``t`` maps to
  ``n = t (N - 1)`` with logSNR interpolated linearly between integer steps (exact at them).
- :class:`EDMSchedule` -- variance exploding, ``alpha = 1``, ``sigma(t) = (sigma_min^(1/rho) +
  t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho`` (Karras et al. 2022): uniform ``t`` *is* the
  Karras grid.
- :class:`FlowSchedule` -- rectified flow / flow matching, ``alpha = 1 - t``, ``sigma = t``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _as_tensor(t) -> Tensor:
    t = torch.as_tensor(t)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def logsnr_from_alpha_sigma(alpha: Tensor, sigma: Tensor) -> Tensor:
    """``log(alpha^2 / sigma^2)``."""
    return 2.0 * (torch.log(alpha) - torch.log(sigma))


def vp_alpha_sigma_from_logsnr(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    """Variance-preserving pair for a logSNR: ``alpha^2 = sigmoid(l)``, ``sigma^2 = sigmoid(-l)``."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def karras_sigma_from_logsnr(logsnr: Tensor) -> Tensor:
    """Karras/EDM noise level ``sigma / alpha = exp(-logSNR / 2)``."""
    return torch.exp(-0.5 * logsnr)


def logsnr_from_karras_sigma(sigma_karras: Tensor) -> Tensor:
    """Inverse of :func:`karras_sigma_from_logsnr`: ``-2 log sigma``."""
    return -2.0 * torch.log(sigma_karras)


class Schedule:
    """Base class: subclasses define ``alpha_sigma`` and ``t_from_logsnr``."""

    variance_preserving = False

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def logsnr(self, t) -> Tensor:
        alpha, sigma = self.alpha_sigma(t)
        return logsnr_from_alpha_sigma(alpha, sigma)

    def karras_sigma(self, t) -> Tensor:
        """``sigma_t / alpha_t``."""
        alpha, sigma = self.alpha_sigma(t)
        return sigma / alpha

    def t_from_logsnr(self, logsnr) -> Tensor:
        raise NotImplementedError

    def t_from_karras_sigma(self, sigma_karras) -> Tensor:
        return self.t_from_logsnr(logsnr_from_karras_sigma(_as_tensor(sigma_karras)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def config(self) -> dict:
        return dict(self.__dict__)

    def spec(self) -> dict:
        """``{"name": ..., **arguments}``: what :func:`build_schedule` rebuilds it from."""
        return {"name": SCHEDULE_NAMES[type(self)], **self.config()}


class CosineSchedule(Schedule):
    variance_preserving = True

    def __init__(self, logsnr_min: float = -20.0, logsnr_max: float = 20.0):
        if not logsnr_min < logsnr_max:
            raise ValueError(f"need logsnr_min < logsnr_max, got {logsnr_min} and {logsnr_max}")
        self.logsnr_min = logsnr_min
        self.logsnr_max = logsnr_max

    def _ab(self) -> tuple[float, float]:
        b = math.atan(math.exp(-0.5 * self.logsnr_max))
        a = math.atan(math.exp(-0.5 * self.logsnr_min)) - b
        return a, b

    def logsnr(self, t) -> Tensor:
        a, b = self._ab()
        return -2.0 * torch.log(torch.tan(a * _as_tensor(t) + b))

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        return vp_alpha_sigma_from_logsnr(self.logsnr(t))

    def t_from_logsnr(self, logsnr) -> Tensor:
        a, b = self._ab()
        return (torch.atan(torch.exp(-0.5 * _as_tensor(logsnr))) - b) / a


class LinearSchedule(Schedule):
    variance_preserving = True

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000):
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.num_train_timesteps = num_train_timesteps

    def alphas_cumprod(self) -> Tensor:
        """``alpha_bar_n`` for n = 0..N-1 in float64 (as diffusers' DDPMScheduler, beta_schedule='linear')."""
        betas = torch.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=torch.float64)
        return torch.cumprod(1.0 - betas, dim=0)

    def _table(self) -> Tensor:
        alpha_bar = self.alphas_cumprod()
        return torch.log(alpha_bar) - torch.log1p(-alpha_bar)  # logSNR at the integer steps

    def logsnr(self, t) -> Tensor:
        t = _as_tensor(t)
        table = self._table()
        position = (t.to(torch.float64) * (len(table) - 1)).clamp(0, len(table) - 1)
        low = position.floor().long().clamp(max=len(table) - 2)
        frac = position - low
        return (table[low] * (1 - frac) + table[low + 1] * frac).to(t.dtype)

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        return vp_alpha_sigma_from_logsnr(self.logsnr(t))

    def t_from_logsnr(self, logsnr) -> Tensor:
        logsnr = _as_tensor(logsnr)
        table = -self._table()  # increasing in n
        value = (-logsnr.to(torch.float64)).clamp(table[0], table[-1])
        high = torch.searchsorted(table, value.contiguous()).clamp(1, len(table) - 1)
        low = high - 1
        frac = (value - table[low]) / (table[high] - table[low])
        return ((low + frac) / (len(table) - 1)).to(logsnr.dtype)


class EDMSchedule(Schedule):
    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.rho = rho

    def karras_sigma(self, t) -> Tensor:
        t = _as_tensor(t)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (lo + t * (hi - lo)) ** self.rho

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        sigma = self.karras_sigma(t)
        return torch.ones_like(sigma), sigma

    def t_from_logsnr(self, logsnr) -> Tensor:
        return self.t_from_karras_sigma(karras_sigma_from_logsnr(_as_tensor(logsnr)))

    def t_from_karras_sigma(self, sigma_karras) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (_as_tensor(sigma_karras) ** (1 / self.rho) - lo) / (hi - lo)


class FlowSchedule(Schedule):
    def __init__(self):
        pass

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        t = _as_tensor(t)
        return 1.0 - t, t

    def t_from_logsnr(self, logsnr) -> Tensor:
        return self.t_from_karras_sigma(karras_sigma_from_logsnr(_as_tensor(logsnr)))

    def t_from_karras_sigma(self, sigma_karras) -> Tensor:
        sigma_karras = _as_tensor(sigma_karras)
        return sigma_karras / (1.0 + sigma_karras)


def karras_grid(num_points: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5, ascending: ``sigma_i = (sigma_min^(1/rho) + i/(N-1) (sigma_max^(1/rho)
    - sigma_min^(1/rho)))^rho`` for i = 0..N-1 (the consistency-model grid, Song et al. 2023)."""
    if num_points < 2:
        raise ValueError(f"a Karras grid needs at least 2 points, got {num_points}")
    return EDMSchedule(sigma_min, sigma_max, rho).karras_sigma(torch.linspace(0, 1, num_points, dtype=torch.float64)).float()


SCHEDULE_NAMES = {CosineSchedule: "cosine", LinearSchedule: "linear", EDMSchedule: "edm", FlowSchedule: "flow"}
SCHEDULES = {name: cls for cls, name in SCHEDULE_NAMES.items()}


def build_schedule(spec: dict | str) -> Schedule:
    """A schedule from ``"cosine"`` or ``{"name": "cosine", "logsnr_min": -20, ...}``."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; valid names are {', '.join(SCHEDULES)}")
    return SCHEDULES[name](**spec)
