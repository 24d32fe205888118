"""Running and timing a model in its runtime: eager PyTorch, ONNX Runtime, ExecuTorch.

Every runner is a callable ``float32 array (B, C, H, W) -> float32 logits (B, K)`` with its
thread count fixed at construction, so latencies in one table are comparable. A text student's
runner takes ``{"input_ids": (B, L) int64, "attention_mask": (B, L) int64}`` instead (a dict of
arrays, fed to ONNX by input name); :func:`rows` / :func:`repeat_first` slice either kind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.evaluation import median_time_ms
from distill.export.source import require


def as_numpy(inputs):
    """A tensor, or a dict of tensors, as numpy (dicts stay dicts)."""
    if isinstance(inputs, dict):
        return {name: as_numpy(value) for name, value in inputs.items()}
    return inputs.numpy() if isinstance(inputs, torch.Tensor) else inputs


def num_rows(inputs) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def rows(inputs, start: int, stop: int):
    """Rows ``start:stop`` of an array / tensor or of every entry of a dict of them."""
    if isinstance(inputs, dict):
        return {name: value[start:stop] for name, value in inputs.items()}
    return inputs[start:stop]


def repeat_first(sample, batch_size: int):
    """The first row of ``sample`` repeated ``batch_size`` times (contiguous numpy; dicts stay dicts)."""
    if isinstance(sample, dict):
        return {name: repeat_first(value, batch_size) for name, value in sample.items()}
    return np.ascontiguousarray(np.repeat(np.asarray(sample)[:1], batch_size, axis=0))


class EagerRunner:
    """A torch module in eval mode under ``inference_mode``; a dict of inputs is passed as keyword
    arguments and the logits read from the output (:func:`distill.core.io.logits_of`)."""

    runtime = "pytorch-eager"

    def __init__(self, model: nn.Module, threads: int = 1):
        self.model, self.threads = model.eval(), threads
        torch.set_num_threads(threads)

    def __call__(self, inputs) -> np.ndarray:
        from distill.core.io import logits_of

        with torch.inference_mode():
            if isinstance(inputs, dict):
                output = self.model(**{name: torch.from_numpy(np.ascontiguousarray(value))
                                       for name, value in inputs.items()})
                return logits_of(output).float().numpy()
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
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.threads = threads

    def __call__(self, inputs) -> np.ndarray:
        if isinstance(inputs, dict):  # token inputs, by name (int64)
            return self.session.run(None, {name: np.ascontiguousarray(inputs[name], dtype=np.int64)
                                           for name in self.input_names})[0]
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


def run_batched(runner, inputs, batch_size: int = 500) -> np.ndarray:
    """Logits for all ``inputs`` (an array / tensor, or a dict of them) in batches of ``batch_size``
    (the last one may be smaller)."""
    array = as_numpy(inputs)
    return np.concatenate([runner(rows(array, i, i + batch_size)) for i in range(0, num_rows(array), batch_size)])


def latency(runner, sample: np.ndarray, batch_sizes=(1, 64), *, repeats: int = 50, warmup: int = 5,
            min_seconds: float = 0.2) -> dict:
    """Median ms per batch and per sample for each batch size (warm-up excluded) and the thread count."""
    result: dict = {"threads": runner.threads}
    for batch_size in batch_sizes:
        batch = repeat_first(sample, batch_size)
        batch_ms = median_time_ms(lambda: runner(batch), repeats=repeats if batch_size == 1 else max(10, repeats // 3),
                                  warmup=warmup, min_seconds=min_seconds)
        result[f"b{batch_size}_ms"] = batch_ms
        result[f"b{batch_size}_per_sample_ms"] = batch_ms / batch_size
    return result
