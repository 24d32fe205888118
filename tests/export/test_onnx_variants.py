"""ONNX variants against eager PyTorch: fp32 parity, Linear as MatMul (never Gemm), MatMulNBits
holding the student's own codes, fp16 with float32 inputs/outputs, int8 dynamic and static."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.export import ExportError, ExportOptions, Exporter, load_student
from distill.export import onnx_cpu
from distill.export.runtime import OrtRunner
from distill.quant import QuantConfig, convert, packed_layers, prepare

onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is not installed: pip install 'distill[export]'")
pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed: pip install 'distill[export]'")


def model_and_inputs(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10)).eval()
    return model, torch.randn(33, 1, 8, 8)


def test_fp32_onnx_matches_eager_and_has_no_gemm():
    model, x = model_and_inputs()
    proto = onnx_cpu.to_onnx(model, (1, 8, 8))
    ops = [node.op_type for node in proto.graph.node]
    assert "Gemm" not in ops and ops.count("MatMul") == 2  # weight-only quantizers skip Gemm
    got = OrtRunner(proto.SerializeToString())(x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matmulnbits_holds_the_codes_and_equals_the_dequantized_layer(bits, symmetric):
    model, x = model_and_inputs(bits)
    packed = convert(prepare(model, QuantConfig(weight_bits=bits, group_size=16, symmetric=symmetric))).eval()
    proto, replaced = onnx_cpu.to_matmulnbits(packed, (1, 8, 8), bits, "tiny")
    assert sorted(replaced) == ["1", "3"]
    nodes = [node for node in proto.graph.node if node.op_type == "MatMulNBits"]
    assert len(nodes) == 2 and not any(node.op_type == "MatMul" for node in proto.graph.node)
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    for path, layer in packed_layers(packed).items():  # the very bytes of the packed codes: nothing re-rounded
        np.testing.assert_array_equal(initializers[f"{path}.nbits.B"], layer.qweight.numpy())
        np.testing.assert_array_equal(initializers[f"{path}.nbits.scales"], layer.scales.reshape(-1).numpy())
    got = OrtRunner(proto.SerializeToString())(x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(got, packed(x).numpy(), rtol=0, atol=1e-5)


def test_matmulnbits_refuses_what_it_cannot_run():
    model, _ = model_and_inputs()
    with pytest.raises(ExportError, match="no quantized layer.*quantize"):
        onnx_cpu.to_matmulnbits(model, (1, 8, 8), 4, "float.safetensors")
    packed = convert(prepare(model_and_inputs()[0], QuantConfig(weight_bits=4, group_size=16))).eval()
    with pytest.raises(ExportError, match=r"\[4\]-bit codes, not 2-bit.*int4"):
        onnx_cpu.to_matmulnbits(packed, (1, 8, 8), 2, "w4.safetensors")
    conv = convert(prepare(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10)),
                           QuantConfig(weight_bits=4, group_size=16))).eval()
    with pytest.raises(ExportError, match="operator Conv2d at 4 bits.*'0'.*MatMulNBits"):
        onnx_cpu.to_matmulnbits(conv, (1, 8, 8), 4, "conv.safetensors")


def test_unexportable_operator_is_named():
    class Model(nn.Module):
        def forward(self, x):
            return torch.erfinv(x.flatten(1).tanh())  # no ONNX opset-17 form

    with pytest.raises(ExportError, match="unsupported operator.*aten::erfinv"):
        onnx_cpu.to_onnx(Model(), (1, 8, 8))


def test_fp16_keeps_float32_io_and_stays_within_tolerance():
    from distill.export.gpu import to_fp16

    model, x = model_and_inputs()
    proto = to_fp16(onnx_cpu.to_onnx(model, (1, 8, 8)))
    float_type = onnx.TensorProto.FLOAT
    assert proto.graph.input[0].type.tensor_type.elem_type == float_type
    assert proto.graph.output[0].type.tensor_type.elem_type == float_type
    assert all(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer if init.dims)
    got = OrtRunner(proto.SerializeToString())(x.numpy())
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() < 0.05 and np.abs(got - expected).max() > 0  # really half precision


def test_every_cpu_and_gpu_variant_of_a_trained_student_is_verified(digits_runs, tmp_path):
    for run, precisions in ((digits_runs["fp32"], ["fp32", "int8-dynamic", "int8-static"]),
                            (digits_runs["int4"], ["int4"]), (digits_runs["int2"], ["int2"])):
        student = load_student(run)
        exporter = Exporter(student, tmp_path / run.name, ExportOptions(latency_repeats=3, calibration_samples=64))
        for precision in precisions:
            card = exporter.export("cpu", precision)
            assert card["status"] == "verified", (precision, card["parity"])
            assert card["accuracy"]["samples"] == 360 and card["accuracy"]["accuracy"] > 0.85
            assert (tmp_path / run.name / f"cpu-{precision}" / "card.md").is_file()
        if run.name == "fp32":
            card = exporter.export("gpu", "fp16")
            assert card["status"] == "verified" and card["parity"]["max_abs_diff"] > 0
    int4 = (tmp_path / "int4" / "cpu-int4" / "model.onnx").stat().st_size
    fp32 = (tmp_path / "fp32" / "cpu-fp32" / "model.onnx").stat().st_size
    assert int4 < fp32 / 3  # 64x32 + 32x10 weights: the 4-bit file is several times smaller
