"""Hugging Face diffusers ``UNet2DModel`` as a plug-in denoiser (optional extra ``diffusion``).

    from diffusers import UNet2DModel
    denoiser = from_diffusers(UNet2DModel(...), prediction_type="epsilon")   # DDPM linear schedule
    x = sample(DDIM(denoiser.schedule, 50), denoiser, noise)

The UNet takes integer-scale timesteps ``n`` in [0, N - 1]: the adapter feeds ``t (N - 1)``
(``time_input="timestep"``) and reads ``.sample`` from its output. ``prediction_type`` uses
diffusers' names (``epsilon``, ``v_prediction``, ``sample``). The schedule defaults to the
linear DDPM betas of ``DDPMScheduler``/``DDIMScheduler`` (``beta_start=1e-4, beta_end=0.02``);
:func:`schedule_from_scheduler_config` reads them from a scheduler's config.
"""
from __future__ import annotations

from torch import Tensor, nn

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import LinearSchedule, Schedule

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


class DiffusersUNet(nn.Module):
    """``net(x, timestep) -> unet(x, timestep).sample``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        return self.unet(x, time).sample


def schedule_from_scheduler_config(config) -> LinearSchedule:
    """The :class:`LinearSchedule` of a diffusers DDPM/DDIM scheduler config (linear betas only)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    if get("beta_schedule", "linear") != "linear" or get("trained_betas") is not None:
        raise ValueError(f"only beta_schedule='linear' maps to LinearSchedule, got {get('beta_schedule')!r}; "
                         f"pass schedule= yourself for other schedules")
    return LinearSchedule(get("beta_start", 1e-4), get("beta_end", 0.02), get("num_train_timesteps", 1000))


def from_diffusers(unet: nn.Module, prediction_type: str = "epsilon", schedule: Schedule | None = None) -> Denoiser:
    """A :class:`Denoiser` around a diffusers ``UNet2DModel``."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown diffusers prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
    schedule = schedule or LinearSchedule(num_train_timesteps=getattr(unet.config, "num_train_timesteps", None) or 1000)
    steps = getattr(schedule, "num_train_timesteps", 1000)
    return Denoiser(DiffusersUNet(unet), schedule, prediction=PREDICTION_TYPES[prediction_type],
                    time_input="timestep", num_train_timesteps=steps)
