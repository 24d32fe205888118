"""The mobile export: an ExecuTorch program lowered to XNNPACK, run by ExecuTorch's runtime here.
Skipped without the mobile extra (pip install 'distill[mobile]'), except under CI=true."""
from __future__ import annotations

import importlib.util

import numpy as np
import torch

from distill.export import ExportOptions, Exporter, load_student
from distill.export.runtime import ExecuTorchRunner


def test_executorch_variants_match_eager(digits_runs, tmp_path, skip_or_fail, monkeypatch):
    if importlib.util.find_spec("executorch") is None:
        skip_or_fail("executorch is not installed (pip install 'distill[mobile]')")
    from distill.export import mobile

    monkeypatch.setattr(mobile, "BATCH_SIZES", (1, 8))  # static programs; 360 test samples run in padded chunks of 8
    student = load_student(digits_runs["fp32"])
    exporter = Exporter(student, tmp_path, ExportOptions(latency_repeats=3))
    fp32 = exporter.export("mobile", "fp32")
    assert fp32["status"] == "verified" and fp32["parity"]["max_abs_diff"] < 1e-4
    assert fp32["runtime"]["backend"] == "XNNPACK" and fp32["runtime"]["delegated_calls"] >= 1
    assert fp32["runtime"]["programs"] == {"1": "model.pte", "8": "model.b8.pte"}
    runner = ExecuTorchRunner({1: tmp_path / "mobile-fp32" / "model.pte"})
    inputs = student.dataset("test").inputs[:5]
    with torch.no_grad():  # any batch through the batch-1 program, one sample at a time
        np.testing.assert_allclose(runner(inputs.numpy()), student.model(inputs).numpy(), rtol=0, atol=1e-4)
    quantized = exporter.export("mobile", "8da4w")  # 64 inputs: both Linear layers take 4-bit groups of 32
    assert quantized["status"] == "verified", quantized["parity"]
    assert quantized["runtime"]["kept_float_linears"] == []
    assert quantized["artifact"]["bytes"] < fp32["artifact"]["bytes"]
