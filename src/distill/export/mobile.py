"""The mobile target: an ExecuTorch program (``.pte``) with the XNNPACK backend.

``fp32``: the float model lowered to XNNPACK. ``8da4w``: 8-bit dynamic (per-token)
activations with 4-bit weights in groups (torchao's ``Int8DynamicActivationIntxWeightConfig``).
A quantized student's 4-bit layers keep their own codes, scales and zero points (written into
torchao's weight, checked exactly); other Linear layers are rounded by torchao in groups of 32,
and those whose inputs are not a multiple of 32 stay float (XNNPACK's blockwise kernels need
groups that are multiples of 32). The card lists which layer got what.
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


def _layer_group(layer, linear: nn.Linear) -> int | None:
    """The group size at which a packed layer's own symmetric 4-bit codes can be written (None: they cannot)."""
    if layer is None or layer.kind != "linear" or layer.bits != 4 or not layer.symmetric:
        return None  # XNNPACK's blockwise 4-bit weights are symmetric
    block = layer.block_size
    return block if block % GROUP_SIZE == 0 and linear.in_features % block == 0 else None


def _write_codes(weight, layer) -> None:
    """Put a packed layer's codes, scales and zero points into torchao's int4 weight (signed codes,
    ``(q - zero_point) * scale``), in place; checks the dequantized weight is the packed one exactly."""
    offset = 2 ** (layer.bits - 1)
    weight.qdata.copy_((layer.codes().to(torch.int16) - offset).to(torch.int8))
    weight.scale.copy_(layer.scales.to(weight.scale.dtype).reshape(weight.scale.shape))
    weight.zero_point.copy_((layer.zero_points_unpacked().to(torch.int16) - offset).to(torch.int8))
    groups = weight.qdata.reshape(layer.out_features, -1, layer.block_size).float()
    dequantized = (groups - weight.zero_point.float().unsqueeze(-1)) * weight.scale.float().unsqueeze(-1)
    if not torch.equal(dequantized.reshape(layer.out_features, -1), layer.dequantize(torch.float32)):
        raise ExportError("8da4w: the packed codes did not survive the copy into torchao's int4 weight")


def _quantize_8da4w(model: nn.Module, packed: dict) -> tuple[nn.Module, dict[str, list[str]]]:
    """torchao 8da4w on the Linear layers; returns the model and which layers got what.

    A layer of a quantized student holding 4-bit codes in groups that are a multiple of 32
    keeps *its own codes* (``own_codes``); any other Linear whose inputs divide into groups of 32
    is rounded by torchao (``torchao_rounded``); the rest stay float (``kept_float_linears``):
    XNNPACK's blockwise kernels need groups that are multiples of 32.
    """
    require("torchao", "mobile", "the mobile target's 8da4w precision")
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    linears = {path: m for path, m in model.named_modules() if type(m) is nn.Linear}
    plan = {"own_codes": [], "torchao_rounded": [], "kept_float_linears": []}
    for path, linear in linears.items():
        group = _layer_group(packed.get(path), linear)
        if group is None:
            group = GROUP_SIZE if linear.in_features % GROUP_SIZE == 0 else None
            plan["torchao_rounded" if group else "kept_float_linears"].append(path)
        else:
            plan["own_codes"].append(path)
        if group is None:
            continue
        config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group))
        quantize_(model, config, filter_fn=lambda module, fqn, path=path: fqn == path)
        if path in plan["own_codes"]:
            _write_codes(model.get_submodule(path).weight, packed[path])
    if not plan["own_codes"] and not plan["torchao_rounded"]:
        raise ExportError(f"8da4w: no Linear layer has a multiple of {GROUP_SIZE} inputs (XNNPACK's group size), "
                          f"so nothing would be quantized; export --precision fp32")
    return model, plan


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


def to_executorch(model: nn.Module, input_shape: tuple[int, ...], precision: str, folder: Path,
                  packed: dict | None = None) -> dict:
    """Lower ``model`` (a float copy) to XNNPACK ExecuTorch programs in ``folder``, one per batch size
    in :data:`BATCH_SIZES` (``model.pte`` for batch 1, ``model.b64.pte``); returns lowering facts.
    ``packed``: path -> PackedLayer of a quantized student, whose 4-bit codes 8da4w keeps.

    Static shapes: with a dynamic batch dimension, ExecuTorch 1.5 plans the memory of a
    convolutional model for at most 15 samples (``to_edge`` narrows the range), so each batch
    size gets its own program.
    """
    require("executorch", "mobile", "the mobile target")
    model, facts = copy.deepcopy(model).eval(), {}
    if precision == "8da4w":
        model, facts = _quantize_8da4w(model, packed or {})
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
