"""The packed layout run by ONNX Runtime's own MatMulNBits kernel (skipped when onnxruntime is absent)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.quant import QuantConfig, convert, packed_layers, prepare

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def run_matmulnbits(ops: dict, x: np.ndarray) -> np.ndarray:
    from onnx import TensorProto, helper, numpy_helper

    attributes = ops["attributes"]
    initializers = [numpy_helper.from_array(ops["B"].numpy(), "B"), numpy_helper.from_array(ops["scales"].numpy(), "scales")]
    inputs = ["A", "B", "scales", ""]
    if "zero_points" in ops:
        initializers.append(numpy_helper.from_array(ops["zero_points"].numpy(), "zero_points"))
        inputs[3] = "zero_points"
    if "bias" in ops:
        initializers.append(numpy_helper.from_array(ops["bias"].numpy(), "bias"))
        inputs += ["", "bias"]
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, attributes["K"]])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, attributes["N"]])],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"A": x})[0]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity,group_size,in_features", [("per_group", 32, 88), ("per_group", 128, 300),
                                                                ("per_channel", 32, 784)])
def test_onnxruntime_matmulnbits_matches_eager(bits, symmetric, granularity, group_size, in_features):
    torch.manual_seed(bits)
    model = prepare(nn.Sequential(nn.Linear(in_features, 7)),
                    QuantConfig(weight_bits=bits, symmetric=symmetric, granularity=granularity, group_size=group_size))
    x = torch.randn(3, in_features)
    with torch.no_grad():
        expected = convert(model)(x).numpy()
    got = run_matmulnbits(packed_layers(model)["0"].matmulnbits(), x.numpy())
    assert np.allclose(got, expected, rtol=0, atol=1e-5)
