"""Evaluation: quality against labels and teacher, and cost (parameters, bytes, latency).

All numbers for one model come from :func:`evaluate`; latency from :func:`measure_latency`
(median of repeated timed runs after warm-up, thread count recorded).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.utils import count_parameters, model_bytes


@torch.inference_mode()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) for ``inputs`` (N, ...) -> (N, K), float32."""
    was_training = model.training
    model.eval()
    try:
        chunks = [model(inputs[i : i + batch_size]).float() for i in range(0, len(inputs), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def expected_calibration_error(logits: torch.Tensor, target: torch.Tensor, num_bins: int = 15) -> float:
    """ECE (Guo et al. 2017, "On Calibration of Modern Neural Networks", arXiv 1706.04599).

    ECE = sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)| over ``num_bins`` equal-width
    confidence bins. logits: (N, K); target: (N,).
    """
    probs = logits.float().softmax(-1)
    confidence, predicted = probs.max(-1)
    correct = (predicted == target).float()
    bins = torch.clamp((confidence * num_bins).long(), max=num_bins - 1)
    ece = torch.zeros(())
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
    return float(ece)


def compare_to_teacher(logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict[str, float]:
    """Top-1 ``agreement`` and mean ``kl_to_teacher`` = KL(p_teacher || p_model) at T=1 (nats).

    logits, teacher_logits: (N, K) on the same inputs.
    """
    return {
        "agreement": float((logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean()),
        "kl_to_teacher": float(
            F.kl_div(logits.float().log_softmax(-1), teacher_logits.float().log_softmax(-1), log_target=True, reduction="batchmean")
        ),
    }


def median_time_ms(call, *, repeats: int = 30, warmup: int = 5, min_seconds: float = 0.0) -> float:
    """Median wall time in ms of ``call()``: ``repeats`` timed calls after ``warmup`` untimed ones
    (more timed calls while their total is under ``min_seconds``)."""
    for _ in range(warmup):
        call()
    times = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_seconds:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    sample: torch.Tensor,
    batch_size: int,
    *,
    repeats: int = 30,
    warmup: int = 5,
    min_seconds: float = 0.0,
) -> dict[str, float]:
    """Median wall time of one forward of a (batch_size, ...) batch built from ``sample`` (1, ...).

    Returns ``{"batch_ms": median ms per batch, "per_sample_ms": batch_ms / batch_size,
    "threads": torch threads}``; ``repeats`` timed runs after ``warmup`` untimed ones
    (more runs while their total is under ``min_seconds``).
    """
    model.eval()
    batch = sample[:1].expand(batch_size, *sample.shape[1:]).contiguous()
    median_ms = median_time_ms(lambda: model(batch), repeats=repeats, warmup=warmup, min_seconds=min_seconds)
    return {"batch_ms": median_ms, "per_sample_ms": median_ms / batch_size, "threads": torch.get_num_threads()}


def evaluate(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    teacher_logits: torch.Tensor | None = None,
    file: str | Path | None = None,
    latency: bool = True,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Accuracy, ECE, agreement and KL with the teacher, size and latency of ``model``.

    Args:
        inputs: (N, ...) held-out inputs; target: (N,) labels.
        teacher_logits: (N, K) teacher outputs on the same inputs, for ``agreement``
            (top-1 agreement) and ``kl_to_teacher`` (mean KL(p_teacher || p_model), T=1, nats).
        file: the model's weight file, whose size on disk is reported as ``file_bytes``.
    """
    logits = predict(model, inputs, batch_size)
    metrics: dict[str, Any] = {
        "accuracy": float((logits.argmax(-1) == target).float().mean()),
        "ece": expected_calibration_error(logits, target),
        "parameters": count_parameters(model),
        "parameter_bytes": model_bytes(model),
    }
    if teacher_logits is not None:
        metrics.update(compare_to_teacher(logits, teacher_logits))
    if file is not None:
        metrics["file_bytes"] = Path(file).stat().st_size
    if latency:
        sample = inputs[:1]
        metrics["latency_b1_ms"] = measure_latency(model, sample, 1, repeats=50)["per_sample_ms"]
        metrics["latency_b64_ms"] = measure_latency(model, sample, 64, repeats=20)["per_sample_ms"]
        metrics["threads"] = torch.get_num_threads()
    return metrics
