"""The gpu target: the fp32 ONNX graph in float16, inputs and outputs kept float32.

Ready for onnxruntime-gpu (CUDA provider) or TensorRT; on this machine the numerics are
verified with onnxruntime's CPU provider, which runs fp16 graphs (slowly: the latency in the
card is not the GPU's). Conversion: onnxconverter-common's ``convert_float_to_float16`` with
``keep_io_types=True`` (a Cast at the input and the output).
"""
from __future__ import annotations

from distill.export.errors import ExportError, require


def to_fp16(proto):
    """float16 copy of an fp32 ModelProto with float32 inputs and outputs."""
    float16 = require("onnxconverter_common.float16", "export", "the gpu target's fp16 conversion")
    onnx = require("onnx", "export", "ONNX export")
    try:
        converted = float16.convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:
        raise ExportError(f"fp16 conversion failed: {exc}") from exc
    onnx.checker.check_model(converted)
    return converted
