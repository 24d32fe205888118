"""Evaluation: quality against labels and teacher, and cost (parameters, bytes, latency).

All numbers for one model come from :func:`evaluate`; latency from :func:`measure_latency`
(median of repeated timed runs after warm-up, thread count recorded). A non-finite logit never
passes silently: :func:`predict` raises ``ValueError`` (naming the model and how many samples)
instead of letting accuracy be computed over NaN. :func:`check_model_fits` refuses a model file
whose inputs or classes do not match the data it is evaluated on.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.core.io import Inputs, batch_size_of, forward_logits, select
from distill.models.utils import count_parameters, model_bytes
from distill.safety import NonFiniteError  # a model produced NaN / inf outputs (re-exported here)


def check_finite_logits(logits: torch.Tensor, *, what: str, inputs: Inputs | None = None) -> None:
    """Raise :class:`NonFiniteError` when a row of ``logits`` (N, K) holds a NaN or an infinity.

    The message names ``what`` (e.g. ``"model file student.safetensors"``), how many of the N
    samples and the first of them, and, given ``inputs`` (N, ...), whether the inputs themselves
    were finite (bad data) or not (the model's weights or arithmetic).
    """
    bad_rows = ~torch.isfinite(logits.reshape(len(logits), -1)).all(dim=1)  # (N,)
    count = int(bad_rows.sum())
    if count == 0:
        return
    first = int(bad_rows.nonzero()[0, 0])
    message = (f"{what} produced NaN or infinite logits for {count} of {len(logits)} samples (first: sample {first}); "
               "no metric is reported over them")
    if isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
        bad_inputs = ~torch.isfinite(inputs.reshape(len(inputs), -1)).all(dim=1)[bad_rows.to(inputs.device)]
        if bool(bad_inputs.any()):
            message += f". {int(bad_inputs.sum())} of those samples have NaN or infinite inputs: check the data"
        else:
            message += (". Their inputs are finite, so the model itself overflows or holds damaged weights: "
                        "check the model file (re-train or re-export it)")
    raise NonFiniteError(message)


@torch.inference_mode()
def predict(model: nn.Module, inputs: Inputs, batch_size: int = 512, *, what: str | None = None) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) for ``inputs`` (N, ...) -> (N, K), float32.

    ``inputs`` is a tensor or a mapping of tensors (passed as keyword arguments); the model may
    return a tensor, a tuple or a ``ModelOutput`` (:mod:`distill.core.io`).

    Raises :class:`NonFiniteError` (a ``ValueError``) when any logit is NaN or infinite, naming
    ``what`` (default: ``model <class name>``) and how many samples (:func:`check_finite_logits`);
    ``ValueError`` for an empty ``inputs``.
    """
    count = batch_size_of(inputs)
    if count == 0:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else {k: tuple(v.shape) for k, v in inputs.items()}
        raise ValueError(f"{what or f'model {type(model).__name__}'}: no samples to predict on (inputs of shape {shape})")
    was_training = model.training
    model.eval()
    who = what or f"model {type(model).__name__}"
    try:
        chunks = [forward_logits(model, select(inputs, slice(i, i + batch_size)), who=who).float()
                  for i in range(0, count, batch_size)]
    finally:
        model.train(was_training)
    logits = torch.cat(chunks)
    check_finite_logits(logits, what=what or f"model {type(model).__name__}", inputs=inputs)
    return logits


def check_model_fits(spec: dict[str, Any], input_shape, num_classes: int, *, model_name: str, data_name: str) -> None:
    """Raise ``ValueError`` unless a model file's ``spec`` matches the data it is evaluated on.

    ``spec`` is the file's rebuild spec (:func:`distill.artifacts.read_spec`: ``input_shape``
    [C, H, W] and ``num_classes`` K); ``input_shape`` and ``num_classes`` are the data's. The
    message names both, e.g. ``model file student.safetensors was made for inputs (1, 8, 8) and
    10 classes, but data 'mnist' has inputs (1, 28, 28) and 10 classes``.
    """
    made_for = tuple(spec.get("input_shape") or ()), spec.get("num_classes")
    data = tuple(input_shape), num_classes
    if made_for[0] == data[0] and made_for[1] == data[1]:
        return
    raise ValueError(f"model file {model_name} was made for inputs {made_for[0]} and {made_for[1]} classes, but data "
                     f"{data_name!r} has inputs {data[0]} and {data[1]} classes; evaluate it on the data it was "
                     "trained on (--data, and --root for its files)")


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
    sample: Inputs,
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

    def repeat(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:1].expand(batch_size, *tensor.shape[1:]).contiguous()

    batch = repeat(sample) if isinstance(sample, torch.Tensor) else {k: repeat(v) for k, v in sample.items()}
    median_ms = median_time_ms(lambda: forward_logits(model, batch), repeats=repeats, warmup=warmup,
                               min_seconds=min_seconds)
    return {"batch_ms": median_ms, "per_sample_ms": median_ms / batch_size, "threads": torch.get_num_threads()}


def evaluate(
    model: nn.Module,
    inputs: Inputs,
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

    Raises :class:`NonFiniteError` (a ``ValueError``) when the model's logits, or the given
    ``teacher_logits``, hold a NaN or an infinity, naming the model (its file, when given).
    """
    logits = predict(model, inputs, batch_size, what=f"model file {file}" if file is not None else None)
    if teacher_logits is not None:
        check_finite_logits(teacher_logits, what="the teacher", inputs=inputs)
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
        sample = select(inputs, slice(0, 1))
        metrics["latency_b1_ms"] = measure_latency(model, sample, 1, repeats=50)["per_sample_ms"]
        metrics["latency_b64_ms"] = measure_latency(model, sample, 64, repeats=20)["per_sample_ms"]
        metrics["threads"] = torch.get_num_threads()
    return metrics


def evaluate_task(task, model: nn.Module, inputs: Inputs, target: torch.Tensor | None, *,
                  teacher_outputs: torch.Tensor | None = None, file: str | Path | None = None, latency: bool = True,
                  batch_size: int = 512) -> dict[str, Any]:
    """A :class:`distill.tasks.Task`'s metrics of ``model`` on ``inputs`` (N, ...) (labels ``target``
    when the task has them; the teacher's outputs for the comparisons), plus parameters, bytes and
    latency (median ms per sample at batch 1 and 64 of one forward)."""
    from distill.core.io import call_model

    outputs = task.predict(model, inputs, batch_size, who=f"model file {file}" if file is not None else "the model")
    metrics: dict[str, Any] = {**task.metrics(outputs, teacher_outputs, target, inputs=inputs),
                               "parameters": count_parameters(model), "parameter_bytes": model_bytes(model)}
    if file is not None:
        metrics["file_bytes"] = Path(file).stat().st_size
    if latency:
        sample = select(inputs, slice(0, 1))
        for size, key, repeats in ((1, "latency_b1_ms", 30), (64, "latency_b64_ms", 10)):
            def repeat(tensor: torch.Tensor, size=size) -> torch.Tensor:
                return tensor[:1].expand(size, *tensor.shape[1:]).contiguous()

            batch = repeat(sample) if isinstance(sample, torch.Tensor) else {k: repeat(v) for k, v in sample.items()}
            model.eval()
            with torch.inference_mode():
                metrics[key] = median_time_ms(lambda: call_model(model, batch), repeats=repeats, warmup=3) / size
        metrics["threads"] = torch.get_num_threads()
    return metrics
