"""``distill export`` / ``distill bench`` from the command line: variants and cards written, a
variant outside its tolerance refused (exit 1, card kept) unless the bar is moved explicitly,
and bad input (not a student, wrong precision, int4 of a float student, a missing runtime)
refused with one clear error (exit 2)."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from distill.cli import app
from distill.export import MissingRuntimeError
from distill.export.source import require

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'distill[export]'")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_text(result) -> str:
    return " ".join((result.stderr or result.output).split())


def test_export_then_bench(fresh_run):
    result = invoke("export", fresh_run, "--target", "cpu", "--precision", "fp32", "--precision", "int8-dynamic")
    assert result.exit_code == 0, result.output
    card = json.loads((fresh_run / "export" / "cpu-fp32" / "card.json").read_text())
    assert card["status"] == "verified" and card["accuracy"]["dataset"] == "digits"
    assert card["command"].startswith(f"distill export {fresh_run} --target cpu")
    assert card["inputs"][0]["shape"] == ["batch", 1, 8, 8] and card["latency"]["threads"] == 1
    assert "verified" in (fresh_run / "export" / "cpu-int8-dynamic" / "card.md").read_text().lower()
    result = invoke("bench", fresh_run / "export", "--teacher", fresh_run / "model.safetensors", "--repeats", "3",
                    "--json", fresh_run / "bench.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((fresh_run / "bench.json").read_text())["rows"]
    assert [row["name"] for row in rows] == ["teacher (mlp)", "student (mlp)", "cpu-fp32", "cpu-int8-dynamic"]
    assert all(row["b1_ms"] > 0 and row["b64_ms"] > 0 and row["threads"] == 1 for row in rows)


def test_outside_tolerance_is_refused_with_the_report_kept_unless_lowered(fresh_run):
    result = invoke("export", fresh_run, "--target", "cpu", "--precision", "int8-dynamic", "--tolerance", "1e-9")
    assert result.exit_code == 1
    assert "refused" in error_text(result) and "max |diff|" in error_text(result)
    card = json.loads((fresh_run / "export" / "cpu-int8-dynamic" / "card.json").read_text())
    assert card["status"] == "refused" and not card["parity"]["passed"]
    assert "Refused" in (fresh_run / "export" / "cpu-int8-dynamic" / "card.md").read_text()
    result = invoke("export", fresh_run, "--target", "cpu", "--precision", "int8-dynamic", "--tolerance", "100")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("make,expected", [
    (lambda p: p.write_text("not a model"), "is not a student checkpoint: it is a .txt file"),
    (lambda p: save_file({"w": __import__("torch").zeros(2)}, str(p)), "is not a student checkpoint: .* no 'distill' metadata"),
], ids=["text-file", "safetensors-without-spec"])
def test_a_file_that_is_not_a_student_is_refused(tmp_path, make, expected):
    path = tmp_path / ("model.txt" if "txt" in expected else "weights.safetensors")
    make(path)
    result = invoke("export", path, "--target", "cpu", "--data", "digits")
    assert result.exit_code == 2
    import re

    assert re.search(expected, error_text(result)) and str(path) in error_text(result)


def test_bad_requests_are_one_clear_error(fresh_run):
    result = invoke("export", fresh_run, "--target", "tpu")
    assert result.exit_code == 2 and "--target 'tpu' is not a target; valid: cpu, gpu, mobile, web" in error_text(result)
    result = invoke("export", fresh_run, "--target", "gpu", "--precision", "int4")
    assert result.exit_code == 2 and "not available for --target gpu; valid: fp16" in error_text(result)
    result = invoke("export", fresh_run, "--target", "cpu", "--precision", "int4")
    assert result.exit_code == 2 and "no quantized layer" in error_text(result)


def test_a_missing_runtime_names_its_extra(monkeypatch):
    with pytest.raises(MissingRuntimeError, match=r"pip install 'distill\[mobile\]'"):
        require("executorch_not_installed_here", "mobile", "the mobile target")
    monkeypatch.setenv("DISTILL_ORT_WEB_DIST", "/nonexistent")
    monkeypatch.chdir("/")
    import distill.export.web as web

    monkeypatch.setattr(web, "REPO_ROOT", web.Path("/nonexistent"))
    with pytest.raises(MissingRuntimeError, match="npm install --prefix web"):
        web.ort_web_dist()


def test_a_training_checkpoint_is_not_a_student(fresh_run):
    step = fresh_run / "checkpoints" / "step-00000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes((fresh_run / "model.safetensors").read_bytes())
    (step / "state.pt").write_bytes(b"")
    result = invoke("export", step, "--target", "cpu")
    assert result.exit_code == 2
    assert "is not a student checkpoint: it is a training checkpoint" in error_text(result)
    assert f"export the finished run {fresh_run}" in error_text(result)
