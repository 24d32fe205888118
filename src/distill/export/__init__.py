"""Deployment variants: one student exported per target, each verified in its own runtime.

``distill export CHECKPOINT --target cpu|gpu|mobile|web [--precision ...]`` (see
``docs/export.md``): :mod:`.onnx_cpu` (ONNX fp32 / int8 / MatMulNBits 4-2 bit), :mod:`.gpu`
(fp16 ONNX), :mod:`.mobile` (ExecuTorch + XNNPACK), :mod:`.web` (onnxruntime-web page);
:mod:`.parity` checks each against eager PyTorch, :mod:`.runtime` runs and times them,
:mod:`.card` writes the model card, :mod:`.bench` times everything side by side.
"""
from __future__ import annotations

from distill.export.api import TARGETS, Exporter, ExportOptions, check_request, default_precisions
from distill.export.parity import DEFAULT_TOLERANCES, Tolerance, parity
from distill.export.source import ExportError, MissingRuntimeError, Student, load_student

__all__ = ["TARGETS", "Exporter", "ExportOptions", "check_request", "default_precisions", "DEFAULT_TOLERANCES",
           "Tolerance", "parity", "ExportError", "MissingRuntimeError", "Student", "load_student"]
