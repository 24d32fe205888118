"""ONNX variants for onnxruntime on CPU: fp32, int8 (dynamic, static QDQ) and packed 4/2-bit.

Linear layers are exported as ``MatMul`` + ``Add`` (not ``Gemm``): torch.onnx turns a 2-D
``nn.Linear`` into ``Gemm``, which onnxruntime's weight-only quantizers skip and which has no
``MatMulNBits`` form. :class:`MatMulLinear` stores the weight transposed, ``(in, out)``, so the
graph's ``MatMul`` takes it as its ``B`` initializer directly.

The 4/2-bit variant never rounds anything: each packed layer's ``MatMul`` is replaced by a
``com.microsoft.MatMulNBits`` node holding the student's own codes, scales and zero points
(:meth:`distill.quant.pack.PackedLayer.matmulnbits`); the layer is found by the exact float
weight its dequantized codes give.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.export.source import ExportError, float_copy, packed_modules, require
from distill.models.utils import set_module

OPSET = 17
INPUT_NAME, OUTPUT_NAME, EMBEDDING_NAME = "input", "logits", "embedding"


class MatMulLinear(nn.Module):
    """``x @ weight_t + bias``: an nn.Linear that exports as MatMul (+ Add) instead of Gemm."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias


def matmul_linears(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (packed layers made float) whose nn.Linear layers are MatMulLinear."""
    model = float_copy(model)
    for path, module in list(model.named_modules()):
        if type(module) is nn.Linear:
            if not path:
                model = MatMulLinear(module)
            else:
                set_module(model, path, MatMulLinear(module))
    return model.eval()


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], tokens=None, output_name: str = OUTPUT_NAME):
    """fp32 ONNX ModelProto of ``model``: input ``input`` (batch, C, H, W), output ``logits``; or for a text
    student (``tokens``, a :class:`distill.export.text.TokenInputs`) int64 inputs ``input_ids`` and
    ``attention_mask`` (batch, sequence), both axes dynamic, and the output ``output_name``."""
    onnx = require("onnx", "export", "ONNX export")
    exportable = matmul_linears(model)
    if tokens is None:
        sample: tuple = (torch.zeros(2, *input_shape),)
        input_names = [INPUT_NAME]
        dynamic_axes = {INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}}
    else:
        from distill.export.text import TokenModel, example_tokens

        exportable = TokenModel(exportable)
        sample = example_tokens(tokens)
        input_names = list(tokens.names)
        dynamic_axes = {**{name: {0: "batch", 1: "sequence"} for name in input_names}, output_name: {0: "batch"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(exportable, sample, buffer, dynamo=False, opset_version=OPSET,
                              input_names=input_names, output_names=[output_name], dynamic_axes=dynamic_axes)
        except Exception as exc:  # torch.onnx names the operator it cannot export
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ExportError(f"ONNX export (opset {OPSET}) of {type(model).__name__} failed on an unsupported "
                              f"operator: {message}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto


def save(proto, path: Path) -> Path:
    onnx = require("onnx", "export", "ONNX export")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def gemm_count(proto) -> int:
    return sum(node.op_type == "Gemm" for node in proto.graph.node)


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs a pre-processing hint on the root logger at every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# -- int8 --------------------------------------------------------------------------------------------------
def quantize_int8_dynamic(fp32_path: Path, out_path: Path, per_channel: bool = False) -> Path:
    """onnxruntime's dynamic quantization: int8 weights (one scale per tensor, or per output channel),
    activations quantized at run time."""
    quantization = require("onnxruntime.quantization", "export", "int8 quantization")
    with _quiet_root_logger():
        quantization.quantize_dynamic(str(fp32_path), str(out_path), weight_type=quantization.QuantType.QInt8,
                                      per_channel=per_channel)
    return out_path


def calibration_reader(inputs, batch_size: int = 32):
    """onnxruntime's CalibrationDataReader over real training samples (a tensor, or a text student's dict of
    token tensors), one batch at a time."""
    quantization = require("onnxruntime.quantization", "export", "int8 quantization")
    named = inputs if isinstance(inputs, dict) else {INPUT_NAME: inputs}
    count = len(next(iter(named.values())))

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = [{name: value[i : i + batch_size].numpy() for name, value in named.items()}
                            for i in range(0, count, batch_size)]
            self.index = 0

        def get_next(self):
            if self.index >= len(self.batches):
                return None
            self.index += 1
            return self.batches[self.index - 1]

        def rewind(self):
            self.index = 0

    return Reader()


def quantize_int8_static(fp32_path: Path, out_path: Path, calibration_inputs) -> Path:
    """Static QDQ int8 (weights per channel, activations per tensor) calibrated on ``calibration_inputs``."""
    quantization = require("onnxruntime.quantization", "export", "int8 quantization")
    with _quiet_root_logger():
        quantization.quantize_static(str(fp32_path), str(out_path), calibration_reader(calibration_inputs),
                                     quant_format=quantization.QuantFormat.QDQ,
                                     activation_type=quantization.QuantType.QUInt8,
                                     weight_type=quantization.QuantType.QInt8, per_channel=True,
                                     calibrate_method=quantization.CalibrationMethod.MinMax)
    return out_path


# -- packed 4 / 2 bits ---------------------------------------------------------------------------------------
def check_packed(model: nn.Module, bits: int, source: str) -> dict:
    """The packed layers of ``model`` if ``MatMulNBits`` can run them at ``bits``; else ExportError."""
    layers = {path: module.packed_layer() for path, module in packed_modules(model).items()}
    if not layers:
        raise ExportError(f"int{bits} needs a quantized student (its {bits}-bit codes): {source} has no quantized "
                          "layer. Train one with a 'quantize:' section (e.g. recipes/fashion_mnist_qad.yaml)")
    found = sorted({layer.bits for layer in layers.values()})
    if bits not in found:
        raise ExportError(f"int{bits}: {source} holds {found}-bit codes, not {bits}-bit; use --precision "
                          f"{' '.join(f'int{b}' for b in found if b in (2, 4))} (codes are never re-rounded)")
    for path, layer in layers.items():
        if layer.kind != "linear":
            raise ExportError(f"operator Conv2d at {layer.bits} bits (layer {path!r}) is not supported by the cpu "
                              "target's MatMulNBits (Linear weights only); quantize only Linear layers "
                              "(quantize.include) or export fp32/int8")
        if layer.bits not in (2, 4, 8):
            raise ExportError(f"layer {path!r} has {layer.bits}-bit codes; MatMulNBits runs 2, 4 and 8 bits only")
        if layer.activation is not None:
            raise ExportError(f"layer {path!r} quantizes its input ({layer.activation['bits']}-bit activations); "
                              "MatMulNBits takes float inputs, so this student cannot be exported weight-only")
    return layers


def to_matmulnbits(model: nn.Module, input_shape: tuple[int, ...], bits: int, source: str, tokens=None,
                   output_name: str = OUTPUT_NAME):
    """ONNX ModelProto where every packed Linear runs as ``MatMulNBits`` with the student's own codes."""
    onnx = require("onnx", "export", "ONNX export")
    from onnx import helper, numpy_helper

    layers = check_packed(model, bits, source)
    proto = to_onnx(model, input_shape, tokens, output_name)
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    weights = {path: layer.dequantize(torch.float32).t().contiguous().numpy() for path, layer in layers.items()}
    replaced: dict[str, str] = {}
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        init = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        match = None
        if init is not None:
            array = numpy_helper.to_array(init)
            match = next((p for p, w in weights.items() if p not in replaced and w.shape == array.shape
                          and np.array_equal(w, array)), None)
        if match is None:
            graph.node.append(node)
            continue
        ops = layers[match].matmulnbits()
        prefix = f"{match}.nbits"
        tensors = {"B": ops["B"], "scales": ops["scales"].float()}
        inputs = [node.input[0], f"{prefix}.B", f"{prefix}.scales"]
        if "zero_points" in ops:
            tensors["zero_points"] = ops["zero_points"]
            inputs.append(f"{prefix}.zero_points")
        for name, tensor in tensors.items():
            graph.initializer.append(numpy_helper.from_array(tensor.numpy(), f"{prefix}.{name}"))
        graph.node.append(helper.make_node("MatMulNBits", inputs, list(node.output), name=f"{prefix}",
                                           domain="com.microsoft", **ops["attributes"]))
        replaced[match] = init.name
    missing = sorted(set(layers) - set(replaced))
    if missing:
        raise ExportError(f"packed layers {missing} were not found as MatMul in the ONNX graph (export changed their "
                          "weights); cannot write their codes")
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(opset.domain == "com.microsoft" for opset in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(proto)
    return proto, sorted(replaced)


def output_name_of(student) -> str:
    """``logits``, or ``embedding`` for a text model without classes (it gives (B, D) vectors)."""
    return EMBEDDING_NAME if student.tokens is not None and student.num_classes is None else OUTPUT_NAME


WRITTEN_PRECISIONS = ("fp32", "int8-dynamic", "int8-static", "int4", "int2")


def runtime_facts() -> dict:
    """The card's ``runtime`` name and version for a variant run by onnxruntime."""
    onnxruntime = require("onnxruntime", "export", "running ONNX variants")
    return {"name": "onnxruntime", "version": onnxruntime.__version__}


def write_variant(context, precision: str, path: Path) -> dict:
    """Write the ``precision`` ONNX variant of ``context``'s student (an
    :class:`~distill.export.targets.ExportContext`) to ``path``; returns its runtime facts.

    ``fp32`` is the shared fp32 graph; ``int8-dynamic`` / ``int8-static`` quantize it (static: on
    ``options.calibration_samples`` training inputs); ``int4`` / ``int2`` write the student's own
    codes as ``MatMulNBits`` (refused for a student without them).
    """
    student, runtime = context.student, {}
    if precision == "fp32":
        save(context.fp32_proto, path)
    elif precision in ("int8-dynamic", "int8-static"):
        with tempfile.TemporaryDirectory() as tmp:
            fp32_path = save(context.fp32_proto, Path(tmp) / "fp32.onnx")
            if precision == "int8-dynamic":
                # text students: weights per output channel (a transformer's outlier channels cost all-MiniLM-L6-v2
                # 0.969 mean cosine per tensor, 0.993 per channel, on STS-B sentences)
                per_channel = student.tokens is not None
                quantize_int8_dynamic(fp32_path, path, per_channel=per_channel)
                runtime["int8_weights"] = "per output channel" if per_channel else "per tensor"
            else:
                calibration = student.calibration_inputs(context.options.calibration_samples)
                quantize_int8_static(fp32_path, path, calibration)
                count = len(next(iter(calibration.values()))) if isinstance(calibration, dict) else len(calibration)
                runtime["calibration"] = f"{count} {student.data_name} training samples, min/max"
    elif precision in ("int4", "int2"):
        proto, layers = to_matmulnbits(student.model, student.input_shape, int(precision[3:]),
                                       str(student.checkpoint or student.spec["model"]), student.tokens,
                                       output_name_of(student))
        save(proto, path)
        runtime["matmulnbits_layers"] = layers
    else:
        raise ExportError(f"ONNX precision {precision!r} is not written here; valid: {', '.join(WRITTEN_PRECISIONS)}")
    runtime.update(runtime_facts())
    return runtime
