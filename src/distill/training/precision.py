"""Which floating-point precision a run trains in: ``train.mixed_precision: auto`` (the default) picks
bf16 autocast where the hardware has bf16 matrix units, fp32 elsewhere.

bf16 autocast runs matmuls and convolutions in bfloat16 (8-bit mantissa) while weights, optimiser
state and the losses stay fp32 (``torch.autocast``; Accelerate's ``mixed_precision="bf16"``). It
pays only where the hardware multiplies bf16 natively:

- **CPU**: Intel AMX (``amx_bf16``, Sapphire Rapids and later) or AVX-512 BF16 (``avx512_bf16``, Cooper
  Lake, AMD Zen 4 and later). On a CPU with neither, oneDNN emulates bf16 and a training step is
  several times *slower* than fp32 (measured here, AVX2 only: ``benchmarks/precision.py``), so
  ``auto`` keeps fp32 there.
- **CUDA**: GPUs whose ``torch.cuda.is_bf16_supported()`` (Ampere and later).

>>> resolve_precision("auto", "cpu")            # doctest: +SKIP
'bf16'                                           # on a CPU with AMX; 'no' on an AVX2-only CPU

``no`` (also spelt ``fp32``) forces full precision, ``bf16`` / ``fp16`` force those.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch

AUTO = "auto"
ENV = "DISTILL_AUTO_PRECISION"  # what "auto" means in this environment, when set: "no" or "bf16" (tests pin "no")


@functools.lru_cache(maxsize=None)
def cpu_bf16_units() -> tuple[bool, str]:
    """``(has_units, what)``: whether this CPU multiplies bf16 natively (AMX tiles or AVX-512 BF16), and
    the capability that decided it (e.g. ``"amx_bf16"``, ``"avx512_bf16"``, ``"AVX2 only"``)."""
    flags: set[str] = set()
    try:  # Linux: the kernel's view of the CPU
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if "amx_bf16" in flags:
        return True, "amx_bf16"
    if "avx512_bf16" in flags:
        return True, "avx512_bf16"
    probes = (("_is_amx_tile_supported", "amx_bf16"), ("_is_avx512_bf16_supported", "avx512_bf16"))
    if not flags:  # no /proc/cpuinfo (macOS, Windows): ask PyTorch's own CPU probe
        for probe, name in probes:
            check = getattr(torch.cpu, probe, None)
            try:
                if check is not None and check():
                    return True, name
            except RuntimeError:
                pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = "unknown"
    return False, f"{capability} only (no amx_bf16 / avx512_bf16)"


def resolve_precision(value: str, device: str | torch.device) -> str:
    """The precision a run uses on ``device`` ("cpu" or "cuda") for the recipe's ``train.mixed_precision``:
    ``auto`` -> ``"bf16"`` where the device has bf16 units (:func:`cpu_bf16_units`,
    ``torch.cuda.is_bf16_supported``), else ``"no"`` (the environment variable ``DISTILL_AUTO_PRECISION``,
    ``no`` or ``bf16``, decides instead when set); any other value is returned as it is."""
    if value != AUTO:
        return value
    pinned = os.environ.get(ENV, "").strip().lower()
    if pinned:
        if pinned not in ("no", "bf16"):
            raise ValueError(f"environment variable {ENV}={pinned!r}: give 'no' (fp32) or 'bf16', or unset it")
        return pinned
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if kind == "cpu":
        return "bf16" if cpu_bf16_units()[0] else "no"
    return "no"


def describe_precision(value: str, device: str | torch.device) -> str:
    """One line for logs and reports: what ``value`` resolved to on ``device``, and why."""
    resolved = resolve_precision(value, device)
    name = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}.get(resolved, resolved)
    if value != AUTO:
        return f"{name} (train.mixed_precision={value})"
    if os.environ.get(ENV, "").strip():
        return f"{name} (auto, pinned by {ENV})"
    kind = torch.device(device).type
    why = cpu_bf16_units()[1] if kind == "cpu" else ("bf16 supported" if resolved == "bf16" else "no bf16 support")
    return f"{name} (auto: {kind}, {why})"


def release_model(accelerator, prepared):
    """The bare model behind ``prepared`` with Accelerate's autocast wrapper taken off its ``forward``
    (``accelerator.prepare`` wraps a model's forward in autocast under mixed precision, on the user's own
    object): after a run the model computes in fp32 again, as the saved and exported weights do. The
    instance attribute Accelerate leaves behind is dropped when it is just the class's forward."""
    model = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
    forward = model.__dict__.get("forward")
    if forward is not None and getattr(forward, "__func__", None) is type(model).forward:
        del model.__dict__["forward"]
    return model


# -- memory format --------------------------------------------------------------------------------------
CHANNELS_LAST_ENV = "DISTILL_AUTO_CHANNELS_LAST"


def has_conv2d(module: Any) -> bool:
    """Whether ``module`` (an nn.Module; anything else: False) holds a 2-d convolution."""
    return isinstance(module, torch.nn.Module) and any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def resolve_channels_last(value: Any, student: Any, *, sharded: bool = False) -> bool:
    """``train.channels_last`` for this run: ``auto`` -> True when the student has a Conv2d (the
    environment variable ``DISTILL_AUTO_CHANNELS_LAST``, ``0`` or ``1``, decides instead when set) and
    its parameters are not sharded (fsdp); True / False as given (True with fsdp is refused)."""
    if value is True and sharded:
        raise ValueError("true is not supported with train.strategy 'fsdp' (sharded weights); use auto or false")
    if value != AUTO:
        return bool(value)
    pinned = os.environ.get(CHANNELS_LAST_ENV, "").strip()
    if pinned not in ("", "0", "1"):
        raise ValueError(f"environment variable {CHANNELS_LAST_ENV}={pinned!r}: give 0 or 1, or unset it")
    return pinned != "0" and not sharded and has_conv2d(student)


def set_layout(models: Any, channels_last: bool) -> None:
    """Put the 4-d weights of each nn.Module in ``models`` in channels_last (NHWC) or the standard
    contiguous layout, in place (``Module.to(memory_format=...)``; values are unchanged). A convolution
    whose weight is channels_last computes, and returns, channels_last from a standard NCHW input."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for model in models:
        if isinstance(model, torch.nn.Module):
            model.to(memory_format=layout)


__all__ = ["AUTO", "CHANNELS_LAST_ENV", "ENV", "cpu_bf16_units", "describe_precision", "has_conv2d", "release_model",
           "resolve_channels_last", "resolve_precision", "set_layout"]
