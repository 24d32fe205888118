"""Trust: a model file never makes distill import or run code; distill deletes only what it made.

The crafted model file names ``payload_<id>:build`` as its architecture; importing that module
writes a sentinel file. Every way a user can open a model file (load_model, eval, inspect, a
recipe's checkpoint) must refuse it without importing it, unless the user passes trust_code.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from distill.artifacts import UntrustedCodeError, load_model, save_model
from distill.cli import app
from distill.models import MLP
from distill.recipe import RecipeError, load_recipe
from distill.runner import run_recipe
from distill.safety import MARKER, FolderError, remove_owned

runner = CliRunner()


def one_line(result) -> str:
    return " ".join((result.stderr or result.output).split())


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """A module on sys.path whose import writes ``sentinel``; returns (module name, sentinel path)."""
    name = f"payload_{abs(hash(str(tmp_path))) % 10**8}"
    sentinel = tmp_path / "code-ran"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(sentinel)!r}).write_text("imported")
        from distill.models import MLP

        def build(input_shape, num_classes, hidden=(8,)):
            return MLP(input_shape=input_shape, num_classes=num_classes, hidden=hidden)
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    yield name, sentinel
    sys.modules.pop(name, None)


@pytest.fixture
def crafted_file(tmp_path, payload) -> Path:
    """A valid distill model file (an 8x8-digits MLP) whose spec names the payload module."""
    name, _ = payload
    model = MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(8,))
    spec = {"model": f"{name}:build", "params": {"hidden": [8]}, "input_shape": [1, 8, 8], "num_classes": 10}
    return save_model(model, tmp_path / "gift.safetensors", spec)


def test_load_model_refuses_code_named_by_a_file(crafted_file, payload):
    _, sentinel = payload
    with pytest.raises(UntrustedCodeError, match="--trust-code"):
        load_model(crafted_file)
    assert not sentinel.exists()


def test_trust_code_loads_it(crafted_file, payload):
    _, sentinel = payload
    model, spec = load_model(crafted_file, trust_code=True)
    assert sentinel.exists()
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("command", ["eval", "inspect"])
def test_cli_refuses_code_named_by_a_file(crafted_file, payload, command):
    _, sentinel = payload
    result = runner.invoke(app, [command, str(crafted_file)])
    assert result.exit_code == 2, result.output
    assert "--trust-code" in one_line(result) and "Traceback" not in result.output
    assert not sentinel.exists()


def test_cli_trust_code_flag(crafted_file, payload):
    _, sentinel = payload
    result = runner.invoke(app, ["inspect", str(crafted_file), "--trust-code"])
    assert result.exit_code == 0, result.output
    assert sentinel.exists()


def tiny_recipe(tmp_path: Path, **changes) -> dict:
    tree = {"name": "trust", "output_dir": str(tmp_path / "run"), "data": {"name": "digits", "batch_size": 64},
            "student": {"model": "mlp", "params": {"hidden": [8]}}, "losses": [{"name": "cross_entropy"}],
            "train": {"steps": 2, "threads": 1}}
    tree.update(changes)
    return tree


def test_recipe_checkpoint_naming_code_is_refused_unless_trusted(tmp_path, crafted_file, payload):
    _, sentinel = payload
    tree = tiny_recipe(tmp_path, teacher={"checkpoint": str(crafted_file)},
                       losses=[{"name": "kl", "temperature": 2.0}])
    with pytest.raises(RecipeError, match="teacher.trust_code"):
        run_recipe(load_recipe(tree), progress=False, measure_latency=False)
    assert not sentinel.exists()
    assert not (tmp_path / "run").exists()  # failed before its first step: no folder left behind
    tree["teacher"]["trust_code"] = True
    result = run_recipe(load_recipe(tree), progress=False, measure_latency=False)
    assert sentinel.exists() and result.state.step == 2


def test_recipe_model_may_name_user_code(tmp_path, payload):
    """What the user wrote themselves (a recipe's model:) is theirs to run."""
    name, sentinel = payload
    tree = tiny_recipe(tmp_path, student={"model": f"{name}:build", "params": {"hidden": [8]}})
    run_recipe(load_recipe(tree), progress=False, measure_latency=False)
    assert sentinel.exists()


# -- --overwrite deletes only what distill made -------------------------------------------------

def test_overwrite_refuses_a_folder_distill_did_not_make(tmp_path):
    precious = tmp_path / "home"
    (precious / "src").mkdir(parents=True)
    (precious / "notes.txt").write_text("keep me")
    tree = tiny_recipe(tmp_path, output_dir=str(precious))
    with pytest.raises(FolderError, match=r"refusing to delete .*notes\.txt"):
        run_recipe(load_recipe(tree), overwrite=True, progress=False, measure_latency=False)
    assert (precious / "notes.txt").read_text() == "keep me" and (precious / "src").is_dir()


def test_overwrite_replaces_a_run_folder(tmp_path):
    tree = tiny_recipe(tmp_path)
    first = run_recipe(load_recipe(tree), progress=False, measure_latency=False)
    assert (first.run_dir / MARKER).is_file()
    (first.run_dir / "stale.txt").write_text("from the first run")
    second = run_recipe(load_recipe(tree), overwrite=True, progress=False, measure_latency=False)
    assert not (second.run_dir / "stale.txt").exists() and (second.run_dir / "model.safetensors").is_file()


def test_cli_overwrite_of_foreign_folder_exits_2(tmp_path):
    precious = tmp_path / "src-tree"
    precious.mkdir()
    (precious / "main.py").write_text("print('hi')\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path, output_dir=str(precious))))
    result = runner.invoke(app, ["run", str(recipe), "--overwrite", "--no-progress"])
    assert result.exit_code == 2, result.output
    text = one_line(result)
    assert "refusing to delete" in text and "main.py" in text and "Traceback" not in result.output
    assert (precious / "main.py").is_file()


def test_demo_refuses_a_foreign_out_folder(tmp_path):
    precious = tmp_path / "docs"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...")
    result = runner.invoke(app, ["demo", "--out", str(precious), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "thesis.tex" in one_line(result)
    assert (precious / "thesis.tex").is_file()


def test_remove_owned(tmp_path):
    remove_owned(tmp_path / "missing")  # nothing to do
    empty = tmp_path / "empty"
    empty.mkdir()
    remove_owned(empty)
    assert not empty.exists()
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / MARKER).write_text("{}")
    (ours / "x").write_text("x")
    remove_owned(ours)
    assert not ours.exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(FolderError, match="is a file"):
        remove_owned(afile)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(FolderError, match="symbolic link"):
        remove_owned(link)


# -- export and bench: a run folder's recipe.yaml and a variant's card.json are files too ----------

def test_export_refuses_data_code_named_by_a_run_folder(tmp_path, payload):
    from distill.export.source import load_student

    name, sentinel = payload
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_model(MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(8,)), run_dir / "model.safetensors",
               {"model": "mlp", "params": {"hidden": [8]}, "input_shape": [1, 8, 8], "num_classes": 10})
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"data": {"name": f"{name}:build"}}))
    with pytest.raises(UntrustedCodeError, match=r"recipe.yaml \(data.name\)"):
        load_student(run_dir)
    result = runner.invoke(app, ["export", str(run_dir), "--target", "cpu"])
    assert result.exit_code == 2 and "--trust-code" in one_line(result)
    assert not sentinel.exists()
    assert load_student(run_dir, data="digits").data_name == "digits"  # the user's own --data is theirs


def test_bench_refuses_code_named_by_a_card(tmp_path, payload):
    import json

    from export.test_bench_source import export_folder, student_run

    name, sentinel = payload
    exported = export_folder(student_run(tmp_path / "run"))
    card_path = exported / "cpu-fp32" / "card.json"
    card = json.loads(card_path.read_text())
    card["accuracy"]["dataset"] = f"{name}:build"
    card_path.write_text(json.dumps(card))
    result = runner.invoke(app, ["bench", str(exported)])
    assert result.exit_code == 2, result.output
    assert "card.json (dataset)" in one_line(result) and "--trust-code" in one_line(result)
    assert not sentinel.exists()
