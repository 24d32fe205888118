"""Diffusion step distillation: schedules and samplers apart from models, plug-in denoisers,
progressive and consistency distillation, the ODE-pair regression baseline, sample metrics.

See docs/diffusion.md. The CLI lives in :mod:`distill.diffusion.cli` (``distill diffusion ...``).
Names are imported lazily, so ``distill --help`` does not pay for torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "consistency": ["ConsistencyModel", "consistency_distillation", "consistency_sample"],
    "denoiser": ["Denoiser", "Prediction", "from_x0_eps", "to_x0_eps"],
    "progressive": ["progressive_distillation"],
    "regression": ["regression_distillation"],
    "samplers": ["DDIM", "Euler", "Heun", "build_sampler", "sample"],
    "schedules": ["CosineSchedule", "EDMSchedule", "FlowSchedule", "LinearSchedule", "build_schedule", "karras_grid"],
    "teacher": ["train_teacher"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'distill.diffusion' has no attribute {name!r}")
    return getattr(importlib.import_module(f"distill.diffusion.{_WHERE[name]}"), name)
