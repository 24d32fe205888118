"""Quantization-aware layers: a float Linear / Conv2d whose weight (and optionally input) is fake-quantized.

``QuantLinear.from_float(linear, weight_quantizer, activation_quantizer)`` keeps the *same*
``weight`` and ``bias`` Parameter objects (state-dict keys ``weight`` / ``bias`` unchanged)
and adds ``weight_quantizer`` (and ``input_quantizer``) submodules; the forward is
``F.linear(input_quantizer(x), weight_quantizer(weight), bias)``. They subclass the float
layer, so ``isinstance(layer, nn.Linear)`` and attributes such as ``in_features`` still hold.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from distill.quant.fake import ActivationQuantizer, WeightQuantizer
from distill.quant.pack import PackedLayer


class _QuantMixin:
    weight_quantizer: WeightQuantizer
    input_quantizer: ActivationQuantizer | None

    def _adopt(self, source: nn.Module, weight_quantizer: WeightQuantizer,
               input_quantizer: ActivationQuantizer | None) -> "_QuantMixin":
        """Take ``source``'s own weight and bias Parameters and train/eval mode, attach the quantizers."""
        self.weight, self.bias = source.weight, source.bias
        self.train(source.training)
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        weight_quantizer.initialize(self.weight)
        return self

    def reset_quantizers(self) -> None:
        """Re-initialise the weight quantizer from the current weight (e.g. after loading float weights)."""
        self.weight_quantizer.initialize(self.weight)

    def quantized_weight(self) -> Tensor:
        return self.weight_quantizer(self.weight)

    def _quantize_input(self, x: Tensor) -> Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)


class QuantLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` with a fake-quantized weight (and optionally input)."""

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_quantizer: WeightQuantizer,
                   input_quantizer: ActivationQuantizer | None = None) -> "QuantLinear":
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        return layer._adopt(linear, weight_quantizer, input_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self._quantize_input(x), self.quantized_weight(), self.bias)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with a fake-quantized weight (groups along in_channels/groups * kh * kw)."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_quantizer: WeightQuantizer,
                   input_quantizer: ActivationQuantizer | None = None) -> "QuantConv2d":
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode, device="meta")
        return layer._adopt(conv, weight_quantizer, input_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self._quantize_input(x), self.quantized_weight(), self.bias)


QUANT_MODULES: dict[type, type] = {nn.Linear: QuantLinear, nn.Conv2d: QuantConv2d}


def quant_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The quantizers' learned parameters (steps, zero points): keep them out of weight decay."""
    params: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, (WeightQuantizer, ActivationQuantizer)):
            params.extend(p for p in module.parameters(recurse=False))
    return params


class _PackedBase(nn.Module):
    """A converted layer: packed integer codes, scales and zero points as buffers; dequantizes in the forward.

    Buffers ``qweight`` (uint8, MatMulNBits layout), ``scales``, ``zero_points`` (packed uint8,
    or absent when symmetric) and ``bias``; ``input_quantizer`` (frozen) when the input was
    quantized. :meth:`packed_layer` returns the :class:`PackedLayer` view for exporters.
    """

    def __init__(self, layer: PackedLayer, input_quantizer: ActivationQuantizer | None = None):
        super().__init__()
        self.kind, self.bits, self.block_size = layer.kind, layer.bits, layer.block_size
        self.in_features, self.out_features, self.symmetric = layer.in_features, layer.out_features, layer.symmetric
        self.weight_shape, self.granularity, self.group_size = tuple(layer.weight_shape), layer.granularity, layer.group_size
        self.conv, self.activation = layer.conv, layer.activation
        self.register_buffer("qweight", layer.qweight)
        self.register_buffer("scales", layer.scales)
        self.register_buffer("zero_points", layer.zero_points)
        self.register_buffer("bias", layer.bias)
        self.input_quantizer = input_quantizer
        if input_quantizer is not None:
            input_quantizer.requires_grad_(False)

    def packed_layer(self) -> PackedLayer:
        return PackedLayer(kind=self.kind, bits=self.bits, block_size=self.block_size, in_features=self.in_features,
                           out_features=self.out_features, symmetric=self.symmetric, qweight=self.qweight,
                           scales=self.scales, zero_points=self.zero_points, weight_shape=self.weight_shape,
                           granularity=self.granularity, group_size=self.group_size, bias=self.bias,
                           conv=self.conv, activation=self.activation)

    def dequantized_weight(self) -> Tensor:
        return self.packed_layer().dequantize(torch.float32)

    def _quantize_input(self, x: Tensor) -> Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def extra_repr(self) -> str:
        return (f"N={self.out_features}, K={self.in_features}, bits={self.bits}, block_size={self.block_size}, "
                f"symmetric={self.symmetric}")


class PackedLinear(_PackedBase):
    """Eager stand-in for ``MatMulNBits``: ``F.linear(x, dequantize(codes), bias)``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self._quantize_input(x), self.dequantized_weight().to(x.dtype), self.bias)


class PackedConv2d(_PackedBase):
    """A Conv2d whose weight is packed; dequantizes and runs ``F.conv2d``."""

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        weight = self.dequantized_weight().to(x.dtype)
        x = self._quantize_input(x)
        if conv["padding_mode"] != "zeros":  # as nn.Conv2d._conv_forward does
            x = F.pad(x, conv["reversed_padding"], mode=conv["padding_mode"])
            return F.conv2d(x, weight, self.bias, conv["stride"], 0, conv["dilation"], conv["groups"])
        return F.conv2d(x, weight, self.bias, conv["stride"], conv["padding"], conv["dilation"], conv["groups"])


PACKED_MODULES: dict[str, type] = {"linear": PackedLinear, "conv2d": PackedConv2d}
