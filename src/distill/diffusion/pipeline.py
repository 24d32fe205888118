"""The pieces the CLI and the benchmark share: data, default networks, sampling any model.

Data sets: ``toy`` (the 2-D eight-Gaussian mixture, 8192 points), ``digits`` (scikit-learn 8x8,
train split, standardised as :func:`distill.data.datasets.digits`), ``mnist`` (IDX files under
``root``, normalised as :func:`distill.data.datasets.mnist`). Default networks: a TimeMLP for toy
and digits, a TinyUNet for MNIST (or a TimeMLP with ``arch="time_mlp"``); teachers are v-parameterised on the cosine schedule with
EDM's c_noise as time input.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from distill.diffusion.consistency import ConsistencyModel, consistency_sample
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.samplers import build_sampler, sample
from distill.diffusion.schedules import CosineSchedule
from distill.models.unet import TimeMLP, TinyUNet

DATASETS = ("toy", "digits", "mnist")


def load_images(name: str, split: str = "train", root: str | Path | None = None) -> tuple[Tensor, Tensor | None]:
    """(images (N, ...) float32, labels (N,) or None for toy)."""
    if name == "toy":
        from distill.diffusion.toy import sample_mixture

        return sample_mixture(8192, torch.Generator().manual_seed(0 if split == "train" else 1)), None
    if name not in DATASETS:
        raise ValueError(f"unknown diffusion data set {name!r}; valid: {', '.join(DATASETS)}")
    from distill.data.datasets import build_dataset

    dataset = build_dataset(name, split, root=root)
    return dataset.inputs, dataset.targets


def default_net(name: str, shape: tuple[int, ...], size: str = "default", arch: str | None = None) -> nn.Module:
    """The denoising network for a data set: ``arch`` time_mlp | tiny_unet (default: tiny_unet for
    MNIST, time_mlp otherwise); ``size="small"`` for smoke tests."""
    small = size == "small"
    arch = arch or ("tiny_unet" if name == "mnist" else "time_mlp")
    if arch == "tiny_unet":
        return TinyUNet(shape, channels=(8, 16) if small else (16, 32), time_dim=32 if small else 64)
    if arch != "time_mlp":
        raise ValueError(f"unknown denoiser architecture {arch!r}; valid: time_mlp, tiny_unet")
    if name == "toy":
        return TimeMLP(shape, hidden=32 if small else 128, depth=1 if small else 3, time_dim=16 if small else 32)
    hidden = 32 if small else (512 if name == "mnist" else 256)
    return TimeMLP(shape, hidden=hidden, depth=1 if small else 3, time_dim=16 if small else 64)


def teacher_denoiser(name: str, shape: tuple[int, ...], size: str = "default", arch: str | None = None) -> Denoiser:
    return Denoiser(default_net(name, shape, size, arch), CosineSchedule(), prediction="v", time_input="c_noise")


@torch.no_grad()
def generate(model: Denoiser | ConsistencyModel, noise: Tensor, num_steps: int, sampler: str = "ddim",
             generator: torch.Generator | None = None) -> Tensor:
    """Samples from standard-normal ``noise``: a consistency model by Alg. 1 of Song et al. (2023),
    anything else with ``sampler`` (ddim | euler | heun) over ``num_steps`` steps."""
    if isinstance(model, ConsistencyModel):
        return consistency_sample(model, noise, num_steps, generator=generator)
    return sample(build_sampler(sampler, model.schedule, num_steps), model, noise)
