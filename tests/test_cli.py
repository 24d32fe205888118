"""The ``distill`` command line: validate, run, eval; user errors exit 2 with one clear message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from distill.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def write_recipe(path: Path, **changes) -> Path:
    tree = {
        "name": "cli-tiny",
        "seed": 0,
        "output_dir": str(path.parent / "run"),
        "data": {"name": "digits", "batch_size": 64},
        "student": {"model": "mlp", "params": {"hidden": [16]}},
        "losses": [{"name": "cross_entropy"}],
        "optimizer": {"name": "adamw", "lr": 0.01},
        "train": {"steps": 20, "threads": 1, "log_every": 5},
    }
    tree.update(changes)
    path.write_text("# distill run this.yaml\n" + yaml.safe_dump(tree, sort_keys=False))
    return path


def error_text(result) -> str:
    return " ".join((result.stderr or result.output).split())  # rich may wrap long lines


def test_validate_ok(tmp_path):
    recipe = write_recipe(tmp_path / "ok.yaml")
    result = invoke("validate", recipe)
    assert result.exit_code == 0, result.output
    assert "is valid" in result.stdout
    assert "grad_accum: 1" in result.stdout  # the resolved recipe, defaults included


def test_validate_with_override(tmp_path):
    recipe = write_recipe(tmp_path / "ok.yaml")
    result = invoke("validate", recipe, "train.steps=7")
    assert result.exit_code == 0, result.output
    assert "steps: 7" in result.stdout


def test_validate_unknown_key_exits_2_with_one_message(tmp_path):
    recipe = write_recipe(tmp_path / "bad.yaml", train={"epoch": 3, "threads": 1})
    result = invoke("validate", recipe)
    assert result.exit_code == 2
    message = error_text(result)
    assert "field 'train.epoch'" in message and "did you mean 'epochs'?" in message
    assert message.count("error:") == 1
    assert "Traceback" not in result.output


def test_validate_bad_override_exits_2(tmp_path):
    recipe = write_recipe(tmp_path / "ok.yaml")
    result = invoke("validate", recipe, "seed.x=1")
    assert result.exit_code == 2 and "not a mapping" in error_text(result)
    result = invoke("validate", recipe, "train.steps")
    assert result.exit_code == 2 and "key=value" in error_text(result)


def test_validate_missing_recipe_file(tmp_path):
    result = invoke("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "does not exist" in error_text(result)


def test_run_with_a_missing_teacher_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "no-teacher.safetensors"
    recipe = write_recipe(tmp_path / "distil.yaml", teacher={"checkpoint": str(missing)},
                          losses=[{"name": "kl", "temperature": 4}])
    result = invoke("run", recipe, "--no-progress")
    assert result.exit_code == 2
    message = error_text(result)
    assert "teacher.checkpoint" in message and str(missing) in message
    assert not (tmp_path / "run").exists(), "a refused run writes nothing"


def test_run_then_eval(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    out = tmp_path / "out"
    result = invoke("run", recipe, f"output_dir={out}", "train.steps=12", "seed=1", "--no-progress")
    assert result.exit_code == 0, result.output
    for name in ("recipe.yaml", "metrics.jsonl", "model.safetensors", "eval.json", "report.md"):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["train"]["steps"] == 12 and saved["seed"] == 1 and saved["output_dir"] == str(out)
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["train_steps"] == 12 and 0 <= metrics["accuracy"] <= 1
    assert "accuracy" in result.stdout and f"{metrics['accuracy']:.2%}" in result.stdout
    assert "Run folder:" in result.stdout

    # running again into the same folder is refused; --overwrite replaces it
    again = invoke("run", recipe, f"output_dir={out}", "--no-progress")
    assert again.exit_code == 2 and "output_dir" in error_text(again)

    # eval prints accuracy and writes the same accuracy to --json
    json_out = tmp_path / "eval.json"
    result = invoke("eval", out / "model.safetensors", "--json", json_out)
    assert result.exit_code == 0, result.output
    numbers = json.loads(json_out.read_text())["model.safetensors"]
    assert numbers["accuracy"] == pytest.approx(metrics["accuracy"])
    assert "accuracy" in result.stdout and f"{numbers['accuracy']:.2%}" in result.stdout

    # with a teacher (here the model itself): agreement 100%
    result = invoke("eval", out / "model.safetensors", "--teacher", out / "model.safetensors", "--json", json_out)
    assert result.exit_code == 0, result.output
    assert json.loads(json_out.read_text())["model.safetensors"]["agreement"] == 1.0


def test_eval_garbage_file_exits_2(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"definitely not a model")
    result = invoke("eval", garbage)
    assert result.exit_code == 2
    assert "not a readable .safetensors file" in error_text(result)
    assert "Traceback" not in result.output


def test_eval_foreign_safetensors_and_missing_file_exit_2(tmp_path):
    import torch
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    result = invoke("eval", foreign)
    assert result.exit_code == 2 and "not written by distill" in error_text(result)
    result = invoke("eval", tmp_path / "absent.safetensors")
    assert result.exit_code == 2 and "does not exist" in error_text(result)


def test_console_script_validate(tmp_path):
    """The installed entry point (a real process) validates a recipe and refuses a bad one."""
    script = Path(sys.executable).with_name("distill")
    if not script.is_file():
        pytest.skip(f"no console script next to {sys.executable}")
    env = {**os.environ, "COLUMNS": "200"}
    ok = subprocess.run([str(script), "validate", str(write_recipe(tmp_path / "ok.yaml"))],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(script), "validate", str(write_recipe(tmp_path / "bad.yaml", trian={}))],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert "field 'trian'" in bad.stderr and "did you mean 'train'?" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_inspect_lists_module_paths_with_shapes():
    from typer.testing import CliRunner

    from distill.cli import app

    result = CliRunner().invoke(app, ["inspect", "cnn", "--params", "{channels: [8, 16]}"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "stages.1" in result.output and "(2, 16, 2, 2)" in result.output
    bad = CliRunner().invoke(app, ["inspect", "cnn", "--params", "{chanels: [8]}"], terminal_width=200)
    assert bad.exit_code == 2 and "channels" in bad.output
