"""The mobile target: ExecuTorch programs with the XNNPACK delegate (:mod:`distill.export.mobile`),
one static-shape ``.pte`` per batch size, run here by ExecuTorch's Python runtime.

``fp32``; ``8da4w``: 8-bit dynamic activations, 4-bit weights (a quantized student's symmetric 4-bit
layers keep their own codes, other Linear layers are rounded by torchao; the card says which).
"""
from __future__ import annotations

from pathlib import Path

from distill.export.errors import ExportError
from distill.export.targets.base import Built, Target, register

LAYER_NOTES = (("own_codes", "4-bit layers holding the student's own codes"),
               ("torchao_rounded", "layers rounded to 4 bits by torchao (groups of 32)"),
               ("kept_float_linears", "Linear layers kept in float (inputs not a multiple of 32)"))


def build(context, precision: str, folder: Path) -> Built:
    if context.student.tokens is not None:
        raise ExportError(f"{context.student.checkpoint or context.student.spec['model']}: the mobile target exports "
                          "models over a float tensor (static shapes); this student takes token ids: export it with "
                          "--target cpu or web")
    import importlib.metadata as metadata

    from distill.export.mobile import to_executorch
    from distill.export.runtime import ExecuTorchRunner
    from distill.export.source import packed_modules

    student = context.student
    packed = {path: module.packed_layer() for path, module in packed_modules(student.model).items()}
    runtime = to_executorch(student.float_model(), student.input_shape, precision, folder, packed)
    runtime.update(name="executorch", version=metadata.version("executorch"))
    programs = {int(batch): folder / name for batch, name in runtime["programs"].items()}
    return Built(programs[min(programs)], ExecuTorchRunner(programs, context.options.threads), runtime)


def load(folder: Path, card: dict, threads: int):
    from distill.export.runtime import ExecuTorchRunner

    programs = card["runtime"].get("programs")
    if not isinstance(programs, dict) or not programs:
        raise ExportError(f"{folder / 'card.json'}: a mobile card needs runtime.programs (batch -> .pte file); "
                          "re-export the variant")
    return ExecuTorchRunner({int(b): folder / name for b, name in programs.items()}, threads)


def notes(runtime: dict) -> list[str]:
    lines = [f"8da4w: {text}: {', '.join(runtime[key])}" for key, text in LAYER_NOTES if runtime.get(key)]
    if runtime.get("not_delegated_ops"):
        lines.append(f"ops left to ExecuTorch's portable kernels: {', '.join(runtime['not_delegated_ops'])}")
    return lines


TARGET = register(Target(
    name="mobile",
    precisions=("fp32", "8da4w"),
    target_runtime="executorch (XNNPACK)",
    extra="mobile", modules=("executorch",),
    build=build, load=load, notes=notes,
))
