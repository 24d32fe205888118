"""A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words")."""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from distill.models import MODELS
from distill.models.utils import check_io, check_size


class Attention(nn.Module):
    """Multi-head self-attention via ``F.scaled_dot_product_attention``: (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, h, T, D/h)
        dropout = self.dropout if self.training else 0.0
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU autocast: PyTorch's fused CPU attention is about 2x slower in bf16 than in fp32, while the
            # same attention written out runs its two matmuls in bf16 at about 2x fp32's speed (measured on
            # AVX-512 BF16, benchmarks/precision.py); the softmax stays fp32, as autocast keeps reductions
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, h, T, T)
            weights = F.dropout(scores.float().softmax(-1), dropout, self.training).to(v.dtype)
            y = weights @ v  # (B, h, T, D/h)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj_dropout(self.proj(y))


class MLPBlock(nn.Module):
    """Linear -> GELU -> Linear with dropout: (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@MODELS.register("vit")
class ViT(nn.Module):
    """Patchify -> CLS token + learned positions -> ``depth`` pre-norm blocks -> LayerNorm -> head on CLS.

    (B, C, H, W) -> patch_embed (B, D, H/p, W/p) -> tokens (B, 1 + N, D) with N = HW/p^2
    -> blocks (B, 1 + N, D) -> norm -> CLS (B, D) -> head (B, num_classes).
    Module paths: ``patch_embed``, ``blocks.{i}``, ``blocks.{i}.attn``, ``blocks.{i}.mlp``,
    ``norm``, ``head``. H and W must be divisible by ``patch_size``, ``dim`` by ``heads``; every
    size (``patch_size``, ``dim``, ``depth``, ``heads``, the MLP width ``int(dim * mlp_ratio)``) >= 1.
    """

    def __init__(self, input_shape, num_classes, *, patch_size=4, dim=128, depth=4, heads=4,
                 mlp_ratio=2.0, dropout=0.0):
        super().__init__()
        self.config = dict(input_shape=input_shape, num_classes=num_classes, patch_size=patch_size, dim=dim,
                           depth=depth, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)
        check_io(input_shape, num_classes)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
        check_size("patch_size", patch_size, "the patch side must be an integer >= 1 that divides the image size")
        check_size("dim", dim, "the token width must be an integer >= 1 (a multiple of heads)")
        check_size("depth", depth, "a ViT needs at least 1 transformer block (an integer >= 1)")
        check_size("heads", heads, "the number of attention heads must be an integer >= 1 that divides dim")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, numbers.Real) or not 0 < mlp_ratio < math.inf \
                or int(dim * mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio is {mlp_ratio!r}; the MLP width int(dim * mlp_ratio) must be >= 1 "
                             f"(dim={dim}), e.g. mlp_ratio 2.0 or 4.0")
        channels, height, width = input_shape
        if height % patch_size or width % patch_size:
            raise ValueError(f"image size {height}x{width} is not divisible by patch_size={patch_size}")
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        num_patches = (height // patch_size) * (width // patch_size)
        self.patch_embed = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, dim))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # (B, 1 + N, D)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)  # (B, 1 + N, D)
        return self.head(self.norm(x)[:, 0])  # (B, num_classes)
