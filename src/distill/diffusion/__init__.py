"""Diffusion step distillation: schedules and samplers apart from models, plug-in denoisers,
progressive and consistency distillation, the ODE-pair regression baseline, sample metrics.

See docs/diffusion.md. The CLI lives in :mod:`distill.diffusion.cli` (``distill diffusion ...``).
"""
from distill.diffusion.consistency import ConsistencyModel, consistency_distillation, consistency_sample
from distill.diffusion.denoiser import Denoiser, Prediction, from_x0_eps, to_x0_eps
from distill.diffusion.progressive import progressive_distillation
from distill.diffusion.regression import regression_distillation
from distill.diffusion.samplers import DDIM, Euler, Heun, build_sampler, sample
from distill.diffusion.schedules import (CosineSchedule, EDMSchedule, FlowSchedule, LinearSchedule, build_schedule,
                                         karras_grid)
from distill.diffusion.teacher import train_teacher

__all__ = ["ConsistencyModel", "consistency_distillation", "consistency_sample", "Denoiser", "Prediction",
           "from_x0_eps", "to_x0_eps", "progressive_distillation", "regression_distillation", "DDIM", "Euler", "Heun",
           "build_sampler", "sample", "CosineSchedule", "EDMSchedule", "FlowSchedule", "LinearSchedule",
           "build_schedule", "karras_grid", "train_teacher"]
