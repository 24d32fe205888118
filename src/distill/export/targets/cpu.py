"""The cpu target: ONNX models run by onnxruntime on CPU (built by :mod:`distill.export.onnx_cpu`).

``fp32``; ``int8-dynamic`` and ``int8-static`` (onnxruntime's quantizers; static QDQ calibrated on
real training samples); ``int4`` / ``int2``: ``MatMulNBits`` holding a quantized student's own
codes, defaults only for a student holding codes of that width.
"""
from __future__ import annotations

from pathlib import Path

from distill.export.targets.base import Built, Target, register


def build(context, precision: str, folder: Path) -> Built:
    from distill.export import onnx_cpu
    from distill.export.runtime import OrtRunner

    path = folder / "model.onnx"
    runtime = onnx_cpu.write_variant(context, precision, path)
    return Built(path, OrtRunner(path, context.options.threads), runtime)


def load(folder: Path, card: dict, threads: int):
    from distill.export.runtime import OrtRunner

    return OrtRunner(folder / card["artifact"]["file"], threads)


TARGET = register(Target(
    name="cpu",
    precisions=("fp32", "int8-dynamic", "int8-static", "int4", "int2"),
    needs_codes={"int4": 4, "int2": 2},
    target_runtime="onnxruntime (CPU)",
    extra="export", modules=("onnx", "onnxruntime"),
    build=build, load=load,
))
