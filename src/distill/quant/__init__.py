"""Quantization: LSQ fake quantizers, prepare/convert, MatMulNBits bit packing, post-training rounding.

See :mod:`distill.quant.api` for layer selection, :mod:`distill.quant.fake` for the
quantizers and their gradients, :mod:`distill.quant.pack` for the packed layout.
"""
from __future__ import annotations

from distill.quant.api import (
    LayerOverride,
    QuantConfig,
    convert,
    load_packed,
    pack_layer,
    packed_layers,
    packed_nbytes,
    prepare,
    quantizable_layers,
    quantization_plan,
    read_packed,
    reset_quantizers,
    save_packed,
    size_report,
)
from distill.quant.fake import (
    ActivationQuantizer,
    LSQFakeQuantize,
    WeightQuantizer,
    fake_quantize,
    integer_range,
    lsq_grad_scale,
)
from distill.quant.fold import conv_bn_pairs, fold_batchnorm
from distill.quant.modules import PackedConv2d, PackedLinear, QuantConv2d, QuantLinear, quant_parameters
from distill.quant.pack import PackedLayer, pack, unpack
from distill.quant.ptq import calibrate, quantize_rtn

__all__ = [
    "QuantConfig", "LayerOverride", "prepare", "convert", "pack_layer", "packed_layers", "packed_nbytes",
    "size_report", "save_packed", "load_packed", "read_packed", "quantizable_layers", "quantization_plan",
    "reset_quantizers", "WeightQuantizer", "ActivationQuantizer", "LSQFakeQuantize", "fake_quantize",
    "integer_range", "lsq_grad_scale", "QuantLinear", "QuantConv2d", "PackedLinear", "PackedConv2d",
    "quant_parameters", "PackedLayer", "pack", "unpack", "calibrate", "quantize_rtn", "conv_bn_pairs", "fold_batchnorm",
]
