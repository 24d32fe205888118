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

    monkeypatch.setattr(mobile, "BATCH_SIZES", (1,))  # static programs (benchmarks: 1 and 64); 360 samples one by one
    student = load_student(digits_runs["fp32"])
    exporter = Exporter(student, tmp_path, ExportOptions(latency_repeats=3))
    fp32 = exporter.export("mobile", "fp32")
    assert fp32["status"] == "verified" and fp32["parity"]["max_abs_diff"] < 1e-4
    assert fp32["runtime"]["backend"] == "XNNPACK" and fp32["runtime"]["delegated_calls"] >= 1
    assert fp32["runtime"]["programs"] == {"1": "model.pte"}
    assert fp32["inputs"][0]["shape"] == ["1 (model.pte)", 1, 8, 8]
    runner = ExecuTorchRunner({1: tmp_path / "mobile-fp32" / "model.pte"})
    inputs = student.dataset("test").inputs[:5]
    with torch.no_grad():  # any batch through the batch-1 program, one sample at a time
        np.testing.assert_allclose(runner(inputs.numpy()), student.model(inputs).numpy(), rtol=0, atol=1e-4)
    monkeypatch.setattr(mobile, "BATCH_SIZES", (8,))  # 360 samples in zero-padded chunks of 8
    quantized = exporter.export("mobile", "8da4w")  # a float student: torchao rounds both layers (64, 32 inputs)
    assert quantized["status"] == "verified", quantized["parity"]
    assert quantized["runtime"]["torchao_rounded"] == ["layers.0.0", "head"] and quantized["runtime"]["own_codes"] == []


def test_8da4w_keeps_a_quantized_students_own_codes(tmp_path, skip_or_fail, monkeypatch):
    if importlib.util.find_spec("executorch") is None:
        skip_or_fail("executorch is not installed (pip install 'distill[mobile]')")
    from torch import nn

    from distill.export import mobile
    from distill.export.source import float_copy, packed_modules
    from distill.quant import QuantConfig, convert, prepare

    monkeypatch.setattr(mobile, "BATCH_SIZES", (8,))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    packed = convert(prepare(model, QuantConfig(weight_bits=4, group_size=32, exclude=["3"]))).eval()
    layers = {path: module.packed_layer() for path, module in packed_modules(packed).items()}
    facts = mobile.to_executorch(float_copy(packed), (1, 8, 8), "8da4w", tmp_path, layers)
    # '1': its own 4-bit codes (copied exactly, else to_executorch raises); '3': float in the student,
    # 32 inputs, rounded by torchao; '5': 16 inputs, no group of 32: float
    assert (facts["own_codes"], facts["torchao_rounded"], facts["kept_float_linears"]) == (["1"], ["3"], ["5"])
    inputs = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        expected = packed(inputs).numpy()
    got = ExecuTorchRunner({8: tmp_path / "model.b8.pte"})(inputs.numpy())
    assert np.abs(got - expected).max() < 0.05  # only the 8-bit dynamic activations (and layer '3') differ
