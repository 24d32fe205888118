"""Plug-in denoisers: any ``nn.Module`` mapping (x_t, time input) to eps, v, x0 or a flow velocity.

Parameterisations, for ``x_t = alpha x_0 + sigma eps`` (any schedule, not only variance preserving):

- ``"eps"``: the noise, ``eps``;                 ``x_0 = (x_t - sigma eps) / alpha``
- ``"x0"``: the clean sample, ``x_0``;            ``eps = (x_t - alpha x_0) / sigma``
- ``"v"``: ``v = alpha eps - sigma x_0`` (Salimans & Ho 2022, eq. in Sec. 4);
  ``x_0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)``, ``eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)``
- ``"flow"``: the rectified-flow velocity ``u = eps - x_0`` (Liu et al. 2022; Lipman et al. 2022;
  ``dx_t/dt`` for the flow schedule alpha = 1 - t, sigma = t);
  ``x_0 = (x_t - sigma u) / (alpha + sigma)``, ``eps = (x_t + alpha u) / (alpha + sigma)``

:func:`to_x0_eps` and :func:`from_x0_eps` convert exactly (round trips are tested).
What the network sees as time (``time_input``): ``"t"`` (the schedule's t in [0, 1]),
``"logsnr"``, ``"c_noise"`` (EDM's ``0.25 ln(sigma / alpha)``, Karras et al. 2022, Table 1) or
``"timestep"`` (``t (N - 1)``, the integer-step convention of DDPM and diffusers, N =
``num_train_timesteps``). ``input_scaling="unit_variance"`` feeds ``x_t / sqrt(alpha^2 + sigma^2)``
(a no-op for variance-preserving schedules, EDM's c_in with sigma_data = 1 otherwise).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from distill.diffusion.schedules import Schedule

PREDICTIONS = ("eps", "v", "x0", "flow")
TIME_INPUTS = ("t", "logsnr", "c_noise", "timestep")
INPUT_SCALINGS = ("none", "unit_variance")


class Prediction(NamedTuple):
    """A denoiser's answer at one noise level: the clean sample and the noise, both shaped like x_t."""

    x0: Tensor
    eps: Tensor


def _check(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def broadcast_to(coefficient: Tensor, x: Tensor) -> Tensor:
    """A scalar or per-sample (B,) coefficient shaped to broadcast against x (B, ...)."""
    coefficient = torch.as_tensor(coefficient, dtype=x.dtype, device=x.device)
    if coefficient.ndim == 0:
        return coefficient
    return coefficient.reshape(coefficient.shape[0], *([1] * (x.ndim - 1)))


def to_x0_eps(output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, prediction: str) -> Prediction:
    """Raw network ``output`` in parameterisation ``prediction`` -> (x_0, eps) at (alpha, sigma)."""
    _check("prediction", prediction, PREDICTIONS)
    alpha, sigma = broadcast_to(alpha, x_t), broadcast_to(sigma, x_t)
    if prediction == "eps":
        return Prediction((x_t - sigma * output) / alpha, output)
    if prediction == "x0":
        return Prediction(output, (x_t - alpha * output) / sigma)
    if prediction == "v":
        norm = alpha ** 2 + sigma ** 2
        return Prediction((alpha * x_t - sigma * output) / norm, (sigma * x_t + alpha * output) / norm)
    norm = alpha + sigma  # flow
    return Prediction((x_t - sigma * output) / norm, (x_t + alpha * output) / norm)


def from_x0_eps(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, prediction: str) -> Tensor:
    """(x_0, eps) -> what a network in parameterisation ``prediction`` should output."""
    _check("prediction", prediction, PREDICTIONS)
    alpha, sigma = broadcast_to(alpha, x0), broadcast_to(sigma, x0)
    return {"eps": lambda: eps, "x0": lambda: x0, "v": lambda: alpha * eps - sigma * x0,
            "flow": lambda: eps - x0}[prediction]()


class Denoiser(nn.Module):
    """Wraps ``model(x, time) -> output`` with its schedule and parameterisation.

    ``forward(x_t, t)`` returns the raw output; :meth:`predict` returns a :class:`Prediction`.
    ``t`` is a float or a (B,) tensor of schedule times in [0, 1]. Arguments are stored verbatim.
    """

    def __init__(self, model: nn.Module, schedule: Schedule, prediction: str = "v", time_input: str = "c_noise",
                 input_scaling: str = "none", num_train_timesteps: int = 1000):
        super().__init__()
        _check("prediction", prediction, PREDICTIONS)
        _check("time_input", time_input, TIME_INPUTS)
        _check("input_scaling", input_scaling, INPUT_SCALINGS)
        self.model = model
        self.schedule = schedule
        self.prediction = prediction
        self.time_input = time_input
        self.input_scaling = input_scaling
        self.num_train_timesteps = num_train_timesteps

    def _time(self, t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        if self.time_input == "t":
            return t
        if self.time_input == "logsnr":
            return 2.0 * (torch.log(alpha) - torch.log(sigma))
        if self.time_input == "c_noise":
            return 0.25 * (torch.log(sigma) - torch.log(alpha))
        return t * (self.num_train_timesteps - 1)

    def _call(self, x_t: Tensor, t) -> tuple[Tensor, Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must be a scalar or shaped (batch,) = ({x_t.shape[0]},), got {tuple(t.shape)}")
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = alpha.to(x_t.dtype), sigma.to(x_t.dtype)
        net_in = x_t
        if self.input_scaling == "unit_variance":
            net_in = x_t / broadcast_to((alpha ** 2 + sigma ** 2).sqrt(), x_t)
        return self.model(net_in, self._time(t, alpha, sigma)), alpha, sigma

    def forward(self, x_t: Tensor, t) -> Tensor:
        return self._call(x_t, t)[0]

    def predict(self, x_t: Tensor, t) -> Prediction:
        output, alpha, sigma = self._call(x_t, t)
        return to_x0_eps(output, x_t, alpha, sigma, self.prediction)

    def spec(self) -> dict:
        return {"schedule": self.schedule.spec(), "prediction": self.prediction, "time_input": self.time_input,
                "input_scaling": self.input_scaling, "num_train_timesteps": self.num_train_timesteps}
