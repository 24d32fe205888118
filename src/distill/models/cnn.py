"""A small plain CNN: conv stages with max-pooling, global average pool, linear head."""
from __future__ import annotations

import torch
from torch import nn

from distill.models import MODELS
from distill.models.utils import check_io, check_size, check_sizes


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@MODELS.register("cnn")
class CNN(nn.Module):
    """Stages of conv3x3-BN-ReLU (x ``convs_per_stage``) then maxpool2, GAP, [FC], head.

    (B, C, H, W) -> stage i: (B, channels[i], H/2^(i+1), W/2^(i+1)) -> GAP (B, channels[-1])
    -> optional ``hidden`` FC + ReLU (B, hidden) -> (B, num_classes).
    A stage pools only while its spatial size is >= 2, so 8x8 digits never drop below 1x1.
    ``dropout`` is applied before the hidden FC and before the head. Every width in ``channels``
    and ``hidden`` (when given) must be >= 1.
    Module paths: ``stages.{i}``, ``fc`` (when ``hidden``), ``head``.
    """

    def __init__(self, input_shape, num_classes, *, channels=(32, 64), convs_per_stage=1,
                 hidden=None, dropout=0.0):
        super().__init__()
        self.config = dict(input_shape=input_shape, num_classes=num_classes, channels=channels,
                           convs_per_stage=convs_per_stage, hidden=hidden, dropout=dropout)
        check_io(input_shape, num_classes)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
        channels = check_sizes("channels", channels, "every stage's channel count must be an integer >= 1")
        if hidden is not None:
            check_size("hidden", hidden, "give the hidden FC width as an integer >= 1, or null for no hidden FC")
        if convs_per_stage not in (1, 2):
            raise ValueError(f"convs_per_stage must be 1 or 2, got {convs_per_stage}")
        c_in, size = input_shape[0], min(input_shape[1:])
        stages = []
        for c_out in channels:
            layers = conv_bn_relu(c_in, c_out) + (conv_bn_relu(c_out, c_out) if convs_per_stage == 2 else [])
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Dropout(dropout)) if hidden is not None else None
        self.head = nn.Linear(c_in if hidden is None else hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)  # (B, channels[i], H', W')
        x = self.dropout(x.mean(dim=(2, 3)))  # (B, channels[-1])
        if self.fc is not None:
            x = self.fc(x)  # (B, hidden)
        return self.head(x)  # (B, num_classes)
