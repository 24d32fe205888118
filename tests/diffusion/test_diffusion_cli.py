"""`distill diffusion ...`: train a teacher, distil it three ways, sample and report (a few steps each)."""
import json

import pytest
from typer.testing import CliRunner

from distill.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, ["diffusion", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    invoke("train-teacher", "--data", "digits", "--out", out, "--steps", 2, "--batch-size", 16, "--size", "small")
    assert json.loads((out / "history.json").read_text())["threads"] == 1
    return out / "teacher.safetensors"


@pytest.mark.parametrize("method,extra", [("progressive", ["--start-steps", 4]), ("consistency", ["--distance", "pseudo_huber"]),
                                          ("regression", ["--pairs", 16, "--teacher-steps", 2])])
def test_distill_and_sample(tmp_path, teacher_file, method, extra):
    out = tmp_path / method
    invoke("distill", "--teacher", teacher_file, "--method", method, "--out", out, "--steps", 2, "--batch-size", 8, *extra)
    assert (out / "student.safetensors").is_file()
    output = invoke("sample", out / "student.safetensors", "--steps", 1, "--steps", 2, "--num", 16)
    assert "2 steps: mmd2" in output
    report = (out / "samples" / "report.md").read_text()
    assert "![samples](samples.png)" in report and "| 2 |" in report
    assert (out / "samples" / "samples.png").stat().st_size > 1000


def test_loud_errors(tmp_path, teacher_file):
    result = runner.invoke(app, ["diffusion", "distill", "--teacher", str(teacher_file), "--method", "magic"])
    assert result.exit_code == 2 and "valid: progressive, consistency, regression" in result.output
    result = runner.invoke(app, ["diffusion", "train-teacher", "--data", "cifar", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "valid: toy, digits, mnist" in result.output
    result = runner.invoke(app, ["diffusion", "sample", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 2 and "no diffusion model file" in result.output
