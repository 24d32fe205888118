"""The mobile target: an ExecuTorch program (``.pte``) with the XNNPACK backend.

``fp32``: the float model lowered to XNNPACK. ``8da4w``: 8-bit dynamic (per-token)
activations with 4-bit weights in groups of 32 (Linear layers whose inputs are not a multiple of
32 stay float: XNNPACK's blockwise kernels need it), quantized by torchao
(``Int8DynamicActivationIntxWeightConfig``) from the student's float weights (for a quantized
student: its dequantized codes, which lie on a 4-bit grid already; torchao's own rounding
picks the scales, so the codes may differ: the cpu target's int4 keeps them exactly).
Optional extra ``distill[mobile]`` (``executorch``, which brings torchao). Verified with
ExecuTorch's Python runtime on this machine.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from distill.export.source import ExportError, require

GROUP_SIZE = 32
BATCH_SIZES = (1, 64)  # one static-shape program each


def _quantize_8da4w(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """torchao 8da4w on every Linear whose inputs divide into groups of 32 (XNNPACK's requirement);
    returns the model and the paths of Linear layers left in float."""
    require("torchao", "mobile", "the mobile target's 8da4w precision")
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    linears = {path: m for path, m in model.named_modules() if type(m) is nn.Linear}
    kept_float = [path for path, m in linears.items() if m.in_features % GROUP_SIZE]
    if len(kept_float) == len(linears):
        raise ExportError(f"8da4w: no Linear layer has a multiple of {GROUP_SIZE} inputs (XNNPACK's group size), "
                          f"so nothing would be quantized; export --precision fp32")
    quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                           weight_granularity=PerGroup(GROUP_SIZE)),
              filter_fn=lambda module, path: type(module) is nn.Linear and module.in_features % GROUP_SIZE == 0)
    return model, kept_float


def _lower(model: nn.Module, input_shape: tuple[int, ...], batch_size: int):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exported = torch.export.export(model, (torch.zeros(batch_size, *input_shape),))
            lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            return lowered, lowered.to_executorch()
        except Exception as exc:
            raise ExportError(f"ExecuTorch/XNNPACK lowering failed on an unsupported operator: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def program_name(batch_size: int) -> str:
    return "model.pte" if batch_size == 1 else f"model.b{batch_size}.pte"


def to_executorch(model: nn.Module, input_shape: tuple[int, ...], precision: str, folder: Path) -> dict:
    """Lower ``model`` (a float copy) to XNNPACK ExecuTorch programs in ``folder``, one per batch size
    in :data:`BATCH_SIZES` (``model.pte`` for batch 1, ``model.b64.pte``); returns lowering facts.

    Static shapes: with a dynamic batch dimension, ExecuTorch 1.5 plans the memory of a
    convolutional model for at most 15 samples (``to_edge`` narrows the range), so each batch
    size gets its own program.
    """
    require("executorch", "mobile", "the mobile target")
    model, facts = copy.deepcopy(model).eval(), {}
    if precision == "8da4w":
        model, kept_float = _quantize_8da4w(model)
        facts["kept_float_linears"] = kept_float
    elif precision != "fp32":
        raise ExportError(f"mobile precision {precision!r} is not supported; valid: fp32, 8da4w")
    folder.mkdir(parents=True, exist_ok=True)
    programs = {}
    for batch_size in BATCH_SIZES:
        lowered, program = _lower(model, input_shape, batch_size)
        (folder / program_name(batch_size)).write_bytes(program.buffer)
        programs[str(batch_size)] = program_name(batch_size)
    graph = lowered.exported_program().graph
    calls = [node for node in graph.nodes if node.op == "call_function"]
    delegated = sum("executorch_call_delegate" in str(node.target) for node in calls)
    names = {getattr(node.target, "__name__", str(node.target)) for node in calls}
    not_delegated = sorted(name for name in names if "delegate" not in name and name not in ("getitem", "sym_size.int"))
    return {"backend": "XNNPACK", "programs": programs, "delegated_calls": delegated,
            "not_delegated_ops": not_delegated, **facts}
