"""CIFAR-style ResNet (He, Zhang, Ren & Sun 2016, "Deep Residual Learning", sec. 4.2)."""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from distill.models import MODELS
from distill.models.utils import check_io

VALID_DEPTHS = (8, 14, 20, 32, 44, 56)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU; 1x1 conv + BN shortcut when shapes change."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, c_out, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@MODELS.register("resnet")
class ResNet(nn.Module):
    """ResNet-(6n+2) for small images: 3 stages of n BasicBlocks at (16, 32, 64) x ``width`` channels.

    (B, C, H, W) -> conv1/bn1 (B, 16w, H, W) -> layer1 (B, 16w, H, W) -> layer2 (B, 32w, H/2, W/2)
    -> layer3 (B, 64w, H/4, W/4) -> global average pool (B, 64w) -> head (B, num_classes).
    Shortcuts that change shape use a 1x1 conv + BN projection (the paper's CIFAR nets use
    zero-padding, option A; ResNet-20 is then 269,722 parameters, here 272,474 for 10 classes).
    ``width`` is a multiplier > 0; each stage keeps at least 1 channel (``max(1, round(c * width))``).
    Kaiming-normal (fan_out) init for convs. Module paths: ``layer{1,2,3}.{j}``, ``head``.
    """

    def __init__(self, input_shape, num_classes, *, depth=20, width=1.0):
        super().__init__()
        self.config = dict(input_shape=input_shape, num_classes=num_classes, depth=depth, width=width)
        check_io(input_shape, num_classes)
        if isinstance(width, bool) or not isinstance(width, numbers.Real) or not 0 < width < math.inf:
            raise ValueError(f"width is {width!r}; it multiplies the (16, 32, 64) channels and must be a finite "
                             "number > 0, e.g. 0.5 or 1.0")
        if depth not in VALID_DEPTHS:
            raise ValueError(f"depth must be 6n+2, one of {', '.join(map(str, VALID_DEPTHS))}; got {depth}")
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
        n = (depth - 2) // 6
        c1, c2, c3 = (max(1, round(c * width)) for c in (16, 32, 64))
        self.conv1 = nn.Conv2d(input_shape[0], c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.layer1 = nn.Sequential(*(BasicBlock(c1, c1, 1) for _ in range(n)))
        self.layer2 = nn.Sequential(BasicBlock(c1, c2, 2), *(BasicBlock(c2, c2, 1) for _ in range(n - 1)))
        self.layer3 = nn.Sequential(BasicBlock(c2, c3, 2), *(BasicBlock(c3, c3, 1) for _ in range(n - 1)))
        self.head = nn.Linear(c3, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16w, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64w, H/4, W/4)
        return self.head(x.mean(dim=(2, 3)))  # (B, num_classes)
