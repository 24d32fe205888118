"""Export targets: one small module per target, each registering a :class:`Target` in :data:`TARGETS`.

``cpu`` (onnxruntime), ``gpu`` (fp16 ONNX), ``mobile`` (ExecuTorch + XNNPACK), ``web``
(onnxruntime-web page). The contract is in :mod:`.base`; the runtime work stays in the
per-runtime modules (:mod:`distill.export.onnx_cpu`, ``gpu``, ``mobile``, ``web``) that the
targets call. To add a target, add a module here that calls ``register(Target(...))`` and import
it below (or register one from your own code before exporting). Importing this package loads no
runtime, torch or numpy.
"""
from __future__ import annotations

from distill.export.targets.base import (TARGETS, Built, ExportContext, Runner, Target, UnknownTargetError,
                                         get_target, register)
from distill.export.targets import cpu, gpu, mobile, web  # noqa: E402,F401  (each registers its target)

__all__ = ["TARGETS", "Built", "ExportContext", "Runner", "Target", "UnknownTargetError", "get_target", "register",
           "target_help", "precision_help"]


def target_help() -> str:
    """``cpu | gpu | mobile | web``: the CLI's --target help."""
    return " | ".join(TARGETS.names())


def precision_help() -> str:
    """The CLI's --precision help: each target's precisions (code-bound ones as alternatives)."""
    listed = "; ".join(f"{name}: {TARGETS.get(name).precision_summary()}" for name in TARGETS.names())
    return f"repeatable; default: every precision the target and student allow ({listed})"
