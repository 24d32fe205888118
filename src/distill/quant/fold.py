"""Fold each BatchNorm into the convolution before it, so the quantized convolution carries it.

A ``Conv2d`` (weight ``W`` (C_out, C_in/g, kh, kw), bias ``b`` or none) followed by an eval-mode
``BatchNorm2d`` (running mean ``mu``, variance ``var``, ``eps``, affine ``gamma``, ``beta``) is the
single convolution

    W' = W * s[:, None, None, None],   b' = (b - mu) * s + beta,   s = gamma / sqrt(var + eps)

(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR, §3.2: fold before quantizing, so the integer weights are
the ones inference uses, with no float BatchNorm left between integer layers). Here the fold is
done once, with the running statistics, before ``prepare``; the student then trains without
BatchNorm (the paper's variant that keeps batch statistics during training is not implemented).

Pairs are found with ``torch.fx``: a ``BatchNorm2d`` called on the output of a ``Conv2d`` that
feeds nothing else, each module called once. The model keeps its structure and module paths: the
BatchNorm becomes ``nn.Identity`` and the convolution gains a bias.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from distill.models.utils import set_module


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv path, batchnorm path)`` for every foldable pair, in forward order.

    Raises ``ValueError`` when ``model`` cannot be traced by ``torch.fx`` (data-dependent control flow).
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
        raise ValueError(f"cannot trace {type(model).__name__} with torch.fx to find Conv2d -> BatchNorm2d pairs "
                         f"({type(exc).__name__}: {exc}); leave fold_batchnorm off for this model") from None
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if (isinstance(source, fx.Node) and source.op == "call_module"
                and type(modules.get(source.target)) is nn.Conv2d and len(source.users) == 1
                and calls[source.target] == 1 and calls[node.target] == 1):
            pairs.append((source.target, node.target))
    return pairs


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn``'s eval-mode transform into ``conv``'s weight and bias, in place (fp64 arithmetic)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm2d without running statistics (track_running_stats=False) cannot be folded")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm2d has {bn.num_features} features but the convolution {conv.out_channels} outputs")
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = -bn.running_mean.double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.double() * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    conv.weight.copy_((conv.weight.double() * scale[:, None, None, None]).to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
    else:
        conv.bias.copy_(bias.to(conv.bias.dtype))


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every :func:`conv_bn_pairs` pair of ``model`` in place; returns the pairs folded.

    Each BatchNorm is replaced by ``nn.Identity`` at its path. Equal outputs in eval mode (to
    rounding); in train mode the folded model no longer normalises by batch statistics.
    """
    pairs = conv_bn_pairs(model)
    for conv_path, bn_path in pairs:
        fold_conv_bn(model.get_submodule(conv_path), model.get_submodule(bn_path))
        set_module(model, bn_path, nn.Identity())
    return pairs
