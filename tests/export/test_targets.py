"""The export-target registry: every registered target keeps the contract, defaults and help text
come from it, and a target registered from outside (a toy TorchScript target) exports, is benched
and is offered by the CLI with nothing else changed: the registry is the extension point."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distill.export import (TARGETS, ExportError, ExportOptions, Exporter, MissingRuntimeError, Target, Tolerance,
                            check_request, default_precisions, get_target, load_student, register)
from distill.export.bench import bench, read_variant_card, runner_for
from distill.export.runtime import EagerRunner
from distill.export.targets import Built, UnknownTargetError, precision_help, target_help
from distill.registry import UnknownNameError

BUILT_IN = ["cpu", "gpu", "mobile", "web"]


def error_text(result) -> str:
    return " ".join((result.stderr or result.output).split())


# -- the contract over every registered target -------------------------------------------------------
@pytest.mark.parametrize("name", BUILT_IN)
def test_every_target_keeps_the_contract(name):
    target = get_target(name)
    assert isinstance(target, Target) and target.name == name and TARGETS.get(name) is target
    assert callable(target.build) and callable(target.load) and target.target_runtime
    assert all(isinstance(target.tolerance(p), Tolerance) for p in target.precisions)
    assert set(target.needs_codes) <= set(target.precisions)
    float_defaults = target.default_precisions(set())
    assert float_defaults and not set(float_defaults) & set(target.needs_codes)
    for precision, bits in target.needs_codes.items():
        assert precision in target.default_precisions({bits})
    assert target.card_notes({}) == [] or all(isinstance(note, str) for note in target.card_notes({}))


def test_the_built_in_targets_and_their_precisions_are_as_before():
    assert TARGETS.names() == BUILT_IN
    assert {name: get_target(name).precisions for name in BUILT_IN} == {
        "cpu": ("fp32", "int8-dynamic", "int8-static", "int4", "int2"), "gpu": ("fp16",),
        "mobile": ("fp32", "8da4w"), "web": ("fp32", "int4")}


def test_default_precisions_follow_the_students_codes(digits_runs):
    students = {name: load_student(run) for name, run in digits_runs.items()}
    expected = {
        "fp32": {"cpu": ["fp32", "int8-dynamic", "int8-static"], "web": ["fp32"]},
        "int4": {"cpu": ["fp32", "int8-dynamic", "int8-static", "int4"], "web": ["fp32", "int4"]},
        "int2": {"cpu": ["fp32", "int8-dynamic", "int8-static", "int2"], "web": ["fp32"]},
    }
    for student_name, by_target in expected.items():
        for target, precisions in {**by_target, "gpu": ["fp16"], "mobile": ["fp32", "8da4w"]}.items():
            assert default_precisions(target, students[student_name]) == precisions, (student_name, target)


def test_cli_help_text_comes_from_the_registry():
    assert target_help() == "cpu | gpu | mobile | web"
    assert precision_help() == ("repeatable; default: every precision the target and student allow (cpu: fp32 "
                                "int8-dynamic int8-static int4/int2; gpu: fp16; mobile: fp32 8da4w; web: fp32 int4)")


def test_the_registry_imports_without_torch_or_a_runtime():
    # the CLI builds its help text from the registry at start-up: it must stay light
    code = ("import sys, distill.export, distill.export.targets as t; t.precision_help(); "
            "print(sorted(m for m in ('torch', 'numpy', 'onnx', 'onnxruntime', 'executorch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_unknown_target_names_the_valid_ones_and_the_closest():
    with pytest.raises(UnknownTargetError, match=r"--target 'gpy' is not a target; valid: cpu, gpu, mobile, web; "
                                                 r"did you mean 'gpu'\?") as caught:
        get_target("gpy")
    assert isinstance(caught.value, ExportError) and isinstance(caught.value, UnknownNameError)
    with pytest.raises(ExportError, match=r"--precision 'int8' is not available for --target cpu; valid: .*; did you "
                                          r"mean 'int8-dynamic' or 'int8-static'\?"):
        check_request("cpu", ["int8"])


def _build(context, precision, folder):  # never called: the registration tests only
    raise AssertionError


@pytest.mark.parametrize("kwargs,expected", [
    ({"name": "cpu"}, "export target 'cpu' is already registered"),
    ({"name": "Tpu"}, "a target name is a lowercase word"),
    ({"name": "tpu", "precisions": ()}, "precisions must be a non-empty tuple"),
    ({"name": "tpu", "precisions": ("bf16",)}, r"no parity tolerance for \['bf16'\]"),
    ({"name": "tpu", "needs_codes": {"int4": 4}}, r"needs_codes names \['int4'\], which are not among its precisions"),
], ids=["taken", "capitals", "no-precision", "no-tolerance", "stray-codes"])
def test_a_malformed_or_clashing_target_is_refused_at_registration(kwargs, expected):
    fields = {"precisions": ("fp32",), "target_runtime": "toy", "build": _build, "load": _build, **kwargs}
    with pytest.raises(ValueError, match=expected):
        register(Target(**fields))
    assert TARGETS.names() == BUILT_IN


def test_a_new_precision_brings_its_own_tolerance():
    target = Target(name="tpu", precisions=("fp32", "bf16"), target_runtime="toy", build=_build, load=_build,
                    tolerances={"bf16": Tolerance(0.05, 0.99)})
    assert target.tolerance("bf16") == Tolerance(0.05, 0.99) and target.tolerance("fp32").max_abs_diff == 1e-3


# -- a target registered from outside ----------------------------------------------------------------
def build_torchscript(context, precision, folder):
    """The toy target: the eager reference traced by torch.jit and saved as model.pt."""
    model = copy.deepcopy(context.student.model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated: a toy target is all it is here
        traced = torch.jit.trace(model, torch.from_numpy(context.sample))
    path = folder / "model.pt"
    traced.save(str(path))
    return Built(path, load_torchscript(folder, {"artifact": {"file": path.name}}, context.options.threads),
                 {"name": "torchscript", "version": torch.__version__})


def load_torchscript(folder, card, threads):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return EagerRunner(torch.jit.load(str(Path(folder) / card["artifact"]["file"])), threads)


@pytest.fixture
def torchscript_target():
    pytest.importorskip("onnx", reason="every card records the fp32 ONNX size: pip install 'distill[export]'")
    target = register(Target(name="torchscript", precisions=("fp32",), target_runtime="TorchScript (libtorch)",
                             extra="export", modules=("torch",), build=build_torchscript, load=load_torchscript,
                             notes=lambda runtime: [f"traced by torch {runtime['version']}"]))
    yield target
    TARGETS._entries.pop(target.name)  # distill.registry.Registry has no unregister


def test_a_registered_target_exports_through_the_exporter_and_is_benched(torchscript_target, digits_runs, tmp_path):
    assert TARGETS.names() == ["cpu", "gpu", "mobile", "torchscript", "web"]
    student = load_student(digits_runs["fp32"])
    assert default_precisions("torchscript", student) == ["fp32"]
    with pytest.raises(ExportError, match="not available for --target torchscript; valid: fp32"):
        check_request("torchscript", ["int8-dynamic"])
    card = Exporter(student, tmp_path / "export", ExportOptions(latency_repeats=3)).export("torchscript", "fp32")
    folder = tmp_path / "export" / "torchscript-fp32"
    assert card["status"] == "verified" and card["parity"]["max_abs_diff"] < 1e-5
    assert sorted(p.name for p in folder.iterdir()) == [".distill-export", "card.json", "card.md", "model.pt"]
    assert card["artifact"]["file"] == "model.pt" and card["name"] == "fp32-torchscript-fp32"
    assert card["runtime"] == {"name": "torchscript", "version": torch.__version__,
                               "target_runtime": "TorchScript (libtorch)"}
    assert card["notes"] == [f"traced by torch {torch.__version__}"] and card["inputs"][0]["shape"][0] == "batch"
    assert json.loads((folder / "card.json").read_text()) == card
    result = bench(tmp_path / "export", repeats=3)
    assert [row["name"] for row in result["rows"]] == ["student (mlp)", "torchscript-fp32"]
    assert result["rows"][1]["runtime"] == "torchscript" and result["rows"][1]["accuracy"] > 0.85
    TARGETS._entries.pop("torchscript")  # a card naming a target nobody registered is refused, not guessed at
    try:
        with pytest.raises(ExportError, match=r"names the target 'torchscript', which is not a registered export "
                                              r"target \(registered: cpu, gpu, mobile, web\)"):
            runner_for(folder, read_variant_card(folder), threads=1)
    finally:
        register(torchscript_target)


def test_the_cli_exports_a_registered_target_and_lists_it_when_the_target_is_unknown(torchscript_target, fresh_run):
    from distill.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(fresh_run), "--target", "torchscript"])
    assert result.exit_code == 0, result.output
    card = json.loads((fresh_run / "export" / "torchscript-fp32" / "card.json").read_text())
    assert card["status"] == "verified" and card["command"].startswith(f"distill export {fresh_run} --target torchscript")
    result = runner.invoke(app, ["export", str(fresh_run), "--target", "tpu"])
    assert result.exit_code == 2
    assert "--target 'tpu' is not a target; valid: cpu, gpu, mobile, torchscript, web" in error_text(result)
    result = runner.invoke(app, ["export", str(fresh_run), "--target", "torchscrpt"])
    assert result.exit_code == 2 and "did you mean 'torchscript'?" in error_text(result)


def test_a_missing_runtime_is_refused_before_anything_is_written(digits_runs, tmp_path):
    target = register(Target(name="toy", precisions=("fp32",), target_runtime="toy", extra="toy",
                             modules=("distill_toy_runtime_not_installed",), build=_build, load=_build))
    try:
        with pytest.raises(MissingRuntimeError, match=r"the toy target needs the Python package "
                                                      r"'distill_toy_runtime_not_installed'.*pip install 'distill\[toy\]'"):
            check_request("toy", [])
        exporter = Exporter(load_student(digits_runs["fp32"]), tmp_path / "export", ExportOptions(latency_repeats=3))
        with pytest.raises(MissingRuntimeError, match=r"pip install 'distill\[toy\]'"):
            exporter.export("toy", "fp32")
        assert not (tmp_path / "export" / "toy-fp32").exists()
    finally:
        TARGETS._entries.pop(target.name)
