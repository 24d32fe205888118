"""train.mixed_precision "auto": bf16 autocast where the CPU (AMX / AVX-512 BF16) or GPU multiplies bf16
natively, fp32 elsewhere; what a run used is recorded in eval.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import distill
import distill.training.precision as precision
from distill.data import ArrayDataset
from distill.recipe import load_recipe


def test_the_cpu_probe_agrees_with_the_kernels_flags():
    has, what = precision.cpu_bf16_units()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system: the probe asks torch.cpu instead")
    flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), set())
    assert has == bool({"amx_bf16", "avx512_bf16"} & flags)
    assert (what in flags) if has else ("no amx_bf16 / avx512_bf16" in what)


def test_auto_follows_the_hardware_and_the_other_values_are_kept(monkeypatch):
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: (True, "amx_bf16"))
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.describe_precision("auto", "cpu") == "bf16 autocast (auto: cpu, amx_bf16)"
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: (False, "AVX2 only (no amx_bf16 / avx512_bf16)"))
    assert precision.resolve_precision("auto", "cpu") == "no"
    assert "fp32 (auto: cpu, AVX2 only" in precision.describe_precision("auto", "cpu")
    for value in ("no", "bf16", "fp16"):
        assert precision.resolve_precision(value, "cpu") == value
    monkeypatch.setenv(precision.ENV, "bf16")
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("no", "cpu") == "no"  # the variable only says what auto means
    monkeypatch.setenv(precision.ENV, "int8")
    with pytest.raises(ValueError, match=precision.ENV):
        precision.resolve_precision("auto", "cpu")


def test_auto_is_the_default_and_the_run_records_what_it_used(tmp_path, monkeypatch):
    assert load_recipe({"name": "x", "data": {"name": "digits"}, "student": {"model": "mlp"}}).train.mixed_precision \
        == "auto"
    from accelerate.utils import is_bf16_available

    if not is_bf16_available():
        pytest.skip("accelerate reports no bf16 support on this CPU")
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    seen = []

    class Probe(torch.nn.Module):  # records the dtype its matmul runs in
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 2)

        def forward(self, inputs):
            out = self.linear(inputs)
            if self.training:
                seen.append(out.dtype)
            return out

    monkeypatch.delenv(precision.ENV, raising=False)
    for units, expected, dtype in ((True, "bf16", torch.bfloat16), (False, "no", torch.float32)):
        monkeypatch.setattr(precision, "cpu_bf16_units", lambda units=units: (units, "probe"))
        seen.clear()
        result = distill.distil(None, Probe(), (x, y), steps=2, batch_size=32, losses=[{"name": "cross_entropy"}],
                                output_dir=tmp_path / expected, progress=False, measure_latency=False, device="cpu")
        assert result.metrics["mixed_precision"] == expected
        assert seen and set(seen) == {dtype}
        assert all(p.dtype == torch.float32 for p in result.model.parameters())  # weights stay fp32


def test_bf16_run_leaves_no_autocast_on_the_model(tmp_path):
    """Accelerate wraps a prepared model's forward in autocast; distil takes the wrapper off when it ends, so
    the user's model (and a copy of it, e.g. torch.ao's quantize_dynamic) computes in fp32 afterwards."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    student = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    result = distill.distil(None, student, (x, y), steps=2, batch_size=32, losses=[{"name": "cross_entropy"}],
                            mixed_precision="bf16", output_dir=tmp_path / "run", progress=False,
                            measure_latency=False, device="cpu")
    assert result.metrics["mixed_precision"] == "bf16"
    assert "_original_forward" not in student.__dict__ and "forward" not in student.__dict__
    with torch.no_grad():
        out = student(x)
        assert out.dtype == torch.float32
        manual = student[2](torch.relu(student[0](x)))  # the layers by hand, fp32
        torch.testing.assert_close(out, manual, rtol=0, atol=0)
        quantized = torch.ao.quantization.quantize_dynamic(student, {torch.nn.Linear}, dtype=torch.qint8)
        assert quantized(x).dtype == torch.float32  # a bf16 input would raise in linear_dynamic


def test_channels_last_auto_for_convolutional_students(tmp_path, monkeypatch):
    """train.channels_last auto: a student with a Conv2d trains with NHWC weights (its convolutions see them
    channels_last), the layout is put back when the run ends, and the weights match a standard-layout run
    to float rounding; an MLP is left alone; DISTILL_AUTO_CHANNELS_LAST pins what auto means."""
    from distill.models import build_model
    from distill.recipe import RecipeError
    from distill.training.precision import CHANNELS_LAST_ENV, resolve_channels_last

    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = (x.mean((1, 2, 3)) > 0).long()
    seen = []

    def probe(module, inputs, output):
        if module.training:
            seen.append(module.weight.is_contiguous(memory_format=torch.channels_last))

    def run(name, channels_last):
        torch.manual_seed(0)
        model = build_model("cnn", input_shape=(3, 8, 8), num_classes=2)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        handle = conv.register_forward_hook(probe)
        seen.clear()
        result = distill.distil(None, model, (x, y), steps=3, batch_size=32, losses=[{"name": "cross_entropy"}],
                                channels_last=channels_last, output_dir=tmp_path / name, progress=False,
                                measure_latency=False, device="cpu")
        handle.remove()
        return model, result, list(seen)

    monkeypatch.delenv(CHANNELS_LAST_ENV, raising=False)
    nhwc, result, layouts = run("auto", "auto")
    assert layouts == [True] * 3 and result.metrics["channels_last"] is True
    assert all(p.is_contiguous() for p in nhwc.parameters())  # put back
    plain, plain_result, plain_layouts = run("off", False)
    assert plain_layouts == [False] * 3 and plain_result.metrics["channels_last"] is False
    torch.manual_seed(0)
    start = build_model("cnn", input_shape=(3, 8, 8), num_classes=2)
    moved = 0.0
    for a, b, s in zip(nhwc.parameters(), plain.parameters(), start.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3)  # AdamW's first steps amplify rounding a little
        assert (a - b).abs().mean() < 1e-5
        moved = max(moved, float((b - s).abs().max()))
    assert moved > 1e-3  # the runs trained
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    assert resolve_channels_last("auto", mlp) is False and resolve_channels_last("auto", plain) is True
    monkeypatch.setenv(CHANNELS_LAST_ENV, "0")
    assert resolve_channels_last("auto", plain) is False and resolve_channels_last(True, plain) is True
    monkeypatch.setenv(CHANNELS_LAST_ENV, "maybe")
    with pytest.raises(ValueError, match="DISTILL_AUTO_CHANNELS_LAST"):
        resolve_channels_last("auto", plain)
    with pytest.raises(ValueError, match="fsdp"):
        resolve_channels_last(True, plain, sharded=True)
    with pytest.raises(RecipeError, match="train.channels_last"):
        distill.distil(None, plain, (x, y), steps=1, batch_size=32, channels_last="sideways",
                       output_dir=tmp_path / "bad", progress=False)


def test_precomputed_teacher_outputs_follow_the_runs_precision(tmp_path):
    """teacher.precompute runs the teacher under the run's autocast (bf16 matmuls under bf16), as a live
    teacher would be; under fp32 it stays fp32."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    for precision, dtype in (("bf16", torch.bfloat16), ("no", torch.float32)):
        teacher = torch.nn.Sequential(torch.nn.Linear(8, 2)).eval()
        seen = []
        teacher[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        student = torch.nn.Sequential(torch.nn.Linear(8, 2))
        result = distill.distil(teacher, student, (x, y), steps=2, batch_size=32, precompute_teacher=True,
                                losses=[{"name": "kl", "temperature": 2.0}], mixed_precision=precision,
                                output_dir=tmp_path / precision, progress=False, measure_latency=False, device="cpu")
        assert result.metrics["mixed_precision"] == precision
        assert dtype in seen  # the precomputing forward
        assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_teacher_cache_builds_follow_the_runs_precision(tmp_path):
    """A cache built for a run (distil's ``cache=``) runs the teacher under the run's autocast: bf16 under
    bf16, fp32 under "no"; the manifest says which."""
    x = torch.randn(64, 1, 2, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0, 0, 0] > 0).long()
    train = ArrayDataset(x, y, ["a", "b"], "toy", "train")
    for precision, dtype, recorded in (("bf16", torch.bfloat16, "bf16"), ("no", torch.float32, "fp32")):
        teacher = torch.nn.Sequential(torch.nn.Linear(8, 2)).eval()
        teacher.insert(0, torch.nn.Flatten())
        seen = []
        teacher[1].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        distill.distil(teacher, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2)), train, steps=2, batch_size=32,
                       cache={"path": str(tmp_path / f"cache-{precision}"), "dtype": "float32"},
                       losses=[{"name": "kl", "temperature": 2.0}], mixed_precision=precision,
                       output_dir=tmp_path / precision, progress=False, measure_latency=False, device="cpu")
        assert seen and seen[0] == dtype  # the cache build's forward
        manifest = json.loads((tmp_path / f"cache-{precision}" / "manifest.json").read_text())
        assert manifest["precision"] == recorded
