"""Deployment variants: one student exported per target, each verified in its own runtime.

``distill export CHECKPOINT --target cpu|gpu|mobile|web [--precision ...]`` (see
``docs/export.md``). Each target is a small registered module in :mod:`.targets` (a
:class:`~.targets.Target` in :data:`TARGETS`) calling the per-runtime modules: :mod:`.onnx_cpu`
(ONNX fp32 / int8 / MatMulNBits 4-2 bit), :mod:`.gpu` (fp16 ONNX), :mod:`.mobile` (ExecuTorch +
XNNPACK), :mod:`.web` (onnxruntime-web page); :mod:`.api` runs what every target shares,
:mod:`.parity` checks each against eager PyTorch, :mod:`.runtime` runs and times them,
:mod:`.card` writes the model card, :mod:`.bench` times everything side by side.

Importing this package is light (no torch, numpy or runtime): the exporter loads on first use.
"""
from __future__ import annotations

import importlib

from distill.export.errors import ExportError, MissingRuntimeError
from distill.export.parity import DEFAULT_TOLERANCES, Tolerance, parity
from distill.export.targets import TARGETS, Target, get_target, register

__all__ = ["TARGETS", "Target", "register", "get_target", "Exporter", "ExportOptions", "check_request",
           "default_precisions", "DEFAULT_TOLERANCES", "Tolerance", "parity", "ExportError", "MissingRuntimeError",
           "Student", "load_student"]
_LAZY = {"Exporter": "api", "ExportOptions": "api", "check_request": "api", "default_precisions": "api",
         "Student": "source", "load_student": "source"}


def __getattr__(name: str):  # the exporter imports torch: only when it is asked for
    if name in _LAZY:
        return getattr(importlib.import_module(f"distill.export.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'distill.export' has no attribute {name!r}")
