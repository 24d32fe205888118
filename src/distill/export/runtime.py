"""Running and timing a model in its runtime: eager PyTorch, ONNX Runtime, ExecuTorch.

Every runner is a callable ``float32 array (B, C, H, W) -> float32 logits (B, K)`` with its
thread count fixed at construction, so latencies in one table are comparable.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.evaluation import median_time_ms
from distill.export.source import require


class EagerRunner:
    """A torch module in eval mode under ``inference_mode``."""

    runtime = "pytorch-eager"

    def __init__(self, model: nn.Module, threads: int = 1):
        self.model, self.threads = model.eval(), threads
        torch.set_num_threads(threads)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(inputs))).float().numpy()


class OrtRunner:
    """An ONNX model in onnxruntime's CPU provider (intra-op threads fixed, sequential)."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path | bytes, threads: int = 1):
        ort = require("onnxruntime", "export", "running ONNX variants")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        source = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.threads = threads

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]


class ExecuTorchRunner:
    """ExecuTorch programs (``.pte``, one per static batch size) run by ExecuTorch's Python runtime.

    A batch whose size has its own program runs as is; any other is cut into chunks of the
    largest program's batch size (the last chunk zero-padded, its padding dropped)."""

    runtime = "executorch"

    def __init__(self, programs: dict[int, str | Path], threads: int = 1):
        runtime = require("executorch.runtime", "mobile", "running ExecuTorch programs")
        loader = runtime.Runtime.get()
        self.methods = {int(batch): loader.load_program(str(path)).load_method("forward")
                        for batch, path in programs.items()}
        self.threads = threads  # recorded: the Python runtime gives XNNPACK no thread-count setting

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.methods[len(batch)].execute([torch.from_numpy(np.ascontiguousarray(batch))])[0].float().numpy()

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        if len(inputs) in self.methods:
            return self._run(inputs)
        size = max(self.methods)
        outputs = []
        for start in range(0, len(inputs), size):
            chunk = inputs[start : start + size]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outputs.append(self._run(padded)[: len(chunk)])
        return np.concatenate(outputs)


def run_batched(runner, inputs: torch.Tensor | np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits for all ``inputs`` in batches of ``batch_size`` (the last one may be smaller)."""
    array = inputs.numpy() if isinstance(inputs, torch.Tensor) else inputs
    return np.concatenate([runner(array[i : i + batch_size]) for i in range(0, len(array), batch_size)])


def latency(runner, sample: np.ndarray, batch_sizes=(1, 64), *, repeats: int = 50, warmup: int = 5,
            min_seconds: float = 0.2) -> dict:
    """Median ms per batch and per sample for each batch size (warm-up excluded) and the thread count."""
    result: dict = {"threads": runner.threads}
    for batch_size in batch_sizes:
        batch = np.ascontiguousarray(np.repeat(sample[:1], batch_size, axis=0))
        batch_ms = median_time_ms(lambda: runner(batch), repeats=repeats if batch_size == 1 else max(10, repeats // 3),
                                  warmup=warmup, min_seconds=min_seconds)
        result[f"b{batch_size}_ms"] = batch_ms
        result[f"b{batch_size}_per_sample_ms"] = batch_ms / batch_size
    return result
