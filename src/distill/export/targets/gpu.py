"""The gpu target: the fp32 ONNX graph in float16, float32 inputs and outputs (:mod:`distill.export.gpu`),
for onnxruntime-gpu (CUDA) or TensorRT; verified here with onnxruntime's CPU provider (numerics only)."""
from __future__ import annotations

from pathlib import Path

from distill.export.targets.base import Built, Target, register

NOTE = "latency measured with onnxruntime's CPU provider, which emulates fp16 slowly: time it on the GPU"


def build(context, precision: str, folder: Path) -> Built:
    from distill.export import gpu, onnx_cpu
    from distill.export.runtime import OrtRunner

    path = onnx_cpu.save(gpu.to_fp16(context.fp32_proto), folder / "model.onnx")
    return Built(path, OrtRunner(path, context.options.threads), onnx_cpu.runtime_facts())


def load(folder: Path, card: dict, threads: int):
    from distill.export.runtime import OrtRunner

    return OrtRunner(folder / card["artifact"]["file"], threads)


def notes(runtime: dict) -> list[str]:
    return [NOTE]


TARGET = register(Target(
    name="gpu",
    precisions=("fp16",),
    target_runtime="onnxruntime (CPU provider here; CUDA/TensorRT on a GPU)",
    extra="export", modules=("onnx", "onnxruntime", "onnxconverter_common"),
    build=build, load=load, notes=notes,
))
