"""Time-conditioned denoising networks: ``net(x (B, ...), time (B,)) -> (B, ...)`` same shape as x.

- :class:`TimeMLP`: flattens x, residual MLP blocks, each adding a projection of the time
  embedding (2-D toy data, 8x8 digits).
- :class:`TinyUNet`: a small conv U-Net (two resolutions, GroupNorm + SiLU residual blocks with a
  time-embedding shift, skip connections by concatenation) for 28x28 images.

``time`` is whatever the wrapping :class:`~distill.diffusion.denoiser.Denoiser` feeds (EDM's
c_noise by default, roughly in [-2.5, 2.5]); it enters through sinusoidal features. Both store
their constructor arguments verbatim in ``config`` and refuse a zero or negative size (and an
odd ``time_dim``: the embedding is a cos half and a sin half) with a ``ValueError`` naming it.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from distill.models.utils import check_size, check_sizes

GROUPS = 8  # GroupNorm groups in a ResBlock (fewer for narrower layers)


def check_time_dim(time_dim) -> None:
    """Refuse a time embedding width that is not an even integer >= 2 (cos and sin halves)."""
    check_size("time_dim", time_dim, "the time embedding width must be an even integer >= 2 (cos and sin halves)",
               minimum=2)
    if time_dim % 2:
        raise ValueError(f"time_dim is {time_dim}; the time embedding width must be even (cos and sin halves), "
                         f"e.g. {time_dim + 1}")


def sinusoidal_embedding(time: Tensor, dim: int, max_period: float = 100.0) -> Tensor:
    """(B,) -> (B, dim): ``[cos(time * f_i), sin(time * f_i)]`` with f_i log-spaced in [1, max_period]."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0, math.log(max_period), half, device=time.device, dtype=torch.float32))
    angles = time.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1).to(time.dtype if time.is_floating_point() else torch.float32)


class TimeEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, time: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(time, self.dim))


class TimeMLP(nn.Module):
    """(B, *input_shape) -> flatten (B, D) -> ``depth`` residual blocks of width ``hidden`` -> (B, *input_shape)."""

    def __init__(self, input_shape=(2,), hidden: int = 256, depth: int = 3, time_dim: int = 64):
        super().__init__()
        check_sizes("input_shape", input_shape, "every input dimension must be an integer >= 1")
        self.config = dict(input_shape=tuple(input_shape), hidden=hidden, depth=depth, time_dim=time_dim)
        check_size("hidden", hidden, "the block width must be an integer >= 1")
        check_size("depth", depth, "the network needs at least 1 residual block (an integer >= 1)")
        check_time_dim(time_dim)
        features = math.prod(input_shape)
        self.time = TimeEmbedding(time_dim)
        self.inp = nn.Linear(features, hidden)
        self.blocks = nn.ModuleList(nn.ModuleDict({"fc1": nn.Linear(hidden, hidden), "time": nn.Linear(time_dim, hidden),
                                                   "fc2": nn.Linear(hidden, hidden)}) for _ in range(depth))
        self.out = nn.Linear(hidden, features)

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        emb = self.time(time)  # (B, time_dim)
        h = self.inp(x.flatten(1))  # (B, hidden)
        for block in self.blocks:
            h = h + block["fc2"](F.silu(block["fc1"](F.silu(h)) + block["time"](emb)))
        return self.out(F.silu(h)).view_as(x)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int = GROUPS):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class TinyUNet(nn.Module):
    """(B, C, H, W) with H, W divisible by 2 -> same shape.

    stem conv -> res(c0) @H [skip] -> down -> res(c0->c1) @H/2 [skip] -> down -> res(c1) @H/4
    -> up -> res(2 c1 -> c1) @H/2 -> up -> res(c1 + c0 -> c0) @H -> GN, SiLU, conv -> C.
    Each GroupNorm splits its c0, c1, 2 c1 or c1 + c0 channels into min(8, width) groups, so
    every one of those widths must be at most 8 or a multiple of 8 (e.g. (8, 16), (16, 32)).
    """

    def __init__(self, input_shape=(1, 28, 28), channels=(16, 32), time_dim: int = 64):
        super().__init__()
        check_sizes("input_shape", input_shape, "every input dimension must be an integer >= 1")
        check_sizes("channels", channels, "every channel width must be an integer >= 1")
        self.config = dict(input_shape=tuple(input_shape), channels=tuple(channels), time_dim=time_dim)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
        if len(channels) != 2:
            raise ValueError(f"TinyUNet takes two channel widths (c0, c1), got {channels}")
        check_time_dim(time_dim)
        c_img, c0, c1 = input_shape[0], channels[0], channels[1]
        for label, norm_width in (("c0", c0), ("c1", c1), ("2 * c1", 2 * c1), ("c1 + c0", c1 + c0)):
            if norm_width > GROUPS and norm_width % GROUPS:
                raise ValueError(f"channels is {tuple(channels)}: a GroupNorm over {label} = {norm_width} channels "
                                 f"cannot split them into {GROUPS} groups; every one of c0, c1, 2 * c1 and c1 + c0 "
                                 f"must be at most {GROUPS} or a multiple of {GROUPS}, e.g. channels (8, 16) or (16, 32)")
        self.time = TimeEmbedding(time_dim)
        self.stem = nn.Conv2d(c_img, c0, 3, padding=1)
        self.enc0 = ResBlock(c0, c0, time_dim)
        self.down0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.enc1 = ResBlock(c0, c1, time_dim)
        self.down1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.mid = ResBlock(c1, c1, time_dim)
        self.dec1 = ResBlock(2 * c1, c1, time_dim)
        self.dec0 = ResBlock(c1 + c0, c0, time_dim)
        self.norm = nn.GroupNorm(min(8, c0), c0)
        self.out = nn.Conv2d(c0, c_img, 3, padding=1)

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        emb = self.time(time)
        s0 = self.enc0(self.stem(x), emb)  # (B, c0, H, W)
        s1 = self.enc1(self.down0(s0), emb)  # (B, c1, H/2, W/2)
        h = self.mid(self.down1(s1), emb)  # (B, c1, H/4, W/4)
        h = self.dec1(torch.cat([F.interpolate(h, size=s1.shape[-2:], mode="nearest"), s1], 1), emb)
        h = self.dec0(torch.cat([F.interpolate(h, size=s0.shape[-2:], mode="nearest"), s0], 1), emb)
        return self.out(F.silu(self.norm(h)))


DENOISER_NETS = {"time_mlp": TimeMLP, "tiny_unet": TinyUNet}


def build_denoiser_net(name: str, **params) -> nn.Module:
    """``DENOISER_NETS[name](**params)``; an unknown name or parameter raises ``ValueError`` naming the valid ones."""
    if name not in DENOISER_NETS:
        raise ValueError(f"unknown denoiser network {name!r}; valid: {', '.join(DENOISER_NETS)}")
    valid = list(inspect.signature(DENOISER_NETS[name]).parameters)
    unknown = [key for key in params if key not in valid]
    if unknown:
        raise ValueError(f"denoiser network {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                         f"valid parameters: {', '.join(valid)}")
    return DENOISER_NETS[name](**params)
