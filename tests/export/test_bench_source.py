"""``distill bench`` and ``distill export`` on bad input, called as Python functions (fast): an
export folder that is missing, a run folder, or holds a broken card, a card whose source
checkpoint is gone or changed, a damaged artifact; a truncated, foreign or NaN model file, a
broken recipe.yaml. Each is one ExportError naming the file, never a traceback."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from distill.artifacts import save_model
from distill.export.bench import bench, read_variant_card, runner_for, variant_folders
from distill.export.source import ExportError, file_sha256, load_student
from distill.models import build_model

SPEC = {"model": "mlp", "params": {"hidden": [4]}, "input_shape": [1, 8, 8], "num_classes": 10}


def student_run(folder: Path) -> Path:
    """A run folder holding an untrained digits MLP and the recipe.yaml naming its data."""
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[4])
    save_model(model, folder / "model.safetensors", SPEC)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"name": folder.name, "seed": 0, "data": {"name": "digits"}}))
    return folder


def export_folder(run: Path, artifact: bytes = b"an onnx file") -> Path:
    """``run/export/cpu-fp32``: a card.json as `distill export` writes it (what bench reads) and an artifact."""
    variant = run / "export" / "cpu-fp32"
    variant.mkdir(parents=True)
    (variant / "model.onnx").write_bytes(artifact)
    checkpoint = run / "model.safetensors"
    card = {"target": "cpu", "precision": "fp32", "status": "verified",
            "artifact": {"file": "model.onnx", "bytes": len(artifact), "sha256": file_sha256(variant / "model.onnx")},
            "runtime": {"name": "onnxruntime"}, "accuracy": {"dataset": "digits"},
            "source": {"checkpoint": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint), "data_root": None,
                       "teacher_checkpoint": None}}
    (variant / "card.json").write_text(json.dumps(card))
    return run / "export"


def edit_card(export_dir: Path, change) -> Path:
    path = export_dir / "cpu-fp32" / "card.json"
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))
    return path


@pytest.fixture
def exported(tmp_path) -> Path:
    return export_folder(student_run(tmp_path / "run"))


def test_not_an_export_folder(tmp_path, exported):
    # before: all three said "holds no exported variant", the run folder without pointing at its export/
    with pytest.raises(ExportError, match=f"export folder {re.escape(str(tmp_path / 'nope'))} does not exist"):
        bench(tmp_path / "nope")
    with pytest.raises(ExportError, match="is a file, not an export folder"):
        bench(tmp_path / "run" / "model.safetensors")
    with pytest.raises(ExportError, match=rf"is a run folder, not an export folder .*did you mean {re.escape(str(exported))}"):
        bench(tmp_path / "run")
    with pytest.raises(ExportError, match="is not an export folder: it holds no exported variant"):
        bench(tmp_path)
    assert variant_folders(exported) == [exported / "cpu-fp32"]


@pytest.mark.parametrize("text,expected", [
    ("{not json", "is not readable JSON"),
    ("[1, 2]", "holds a list, not a card object"),
], ids=["malformed", "a-list"])
def test_a_broken_card_is_named(exported, text, expected):
    # before: a JSONDecodeError naming no file, or a TypeError traceback
    path = exported / "cpu-fp32" / "card.json"
    path.write_text(text)
    with pytest.raises(ExportError, match=f"model card {re.escape(str(path))} {expected}"):
        bench(exported)


@pytest.mark.parametrize("change,field", [
    (lambda card: card.pop("source"), "source.checkpoint"),
    (lambda card: card["source"].update(checkpoint=None), "source.checkpoint"),
    (lambda card: card["source"].pop("sha256"), "source.sha256"),
    (lambda card: card.pop("accuracy"), "accuracy.dataset"),
    (lambda card: card.pop("target"), "target"),
    (lambda card: card["artifact"].update(bytes="12"), "artifact.bytes"),
], ids=["no-source", "null-checkpoint", "no-sha", "no-accuracy", "no-target", "bytes-as-text"])
def test_a_card_without_a_field_bench_reads_is_named(exported, change, field):
    # before: KeyError / TypeError tracebacks
    path = edit_card(exported, change)
    with pytest.raises(ExportError, match=f"model card {re.escape(str(path))} has no valid {field!r}"):
        read_variant_card(path.parent)
    with pytest.raises(ExportError, match=re.escape(field)):
        bench(exported)


def test_a_missing_or_changed_source_checkpoint_is_refused(tmp_path, exported):
    checkpoint = tmp_path / "run" / "model.safetensors"
    edit_card(exported, lambda card: card["source"].update(checkpoint=str(tmp_path / "gone.safetensors")))
    with pytest.raises(ExportError, match=r"names the student checkpoint .*gone.safetensors, which does not exist"):
        bench(exported)
    edit_card(exported, lambda card: card["source"].update(checkpoint=str(checkpoint)))
    torch.manual_seed(1)  # the run folder re-trained after the export: another model under the same name
    save_model(build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[4]), checkpoint, SPEC)
    # before: benched the new student next to variants made from the old one, silently
    with pytest.raises(ExportError, match="which has changed since the export .*export the current student again"):
        bench(exported)


def test_a_missing_damaged_or_escaping_artifact_is_refused(exported):
    artifact = exported / "cpu-fp32" / "model.onnx"
    artifact.write_bytes(b"an onnx fi")  # truncated
    with pytest.raises(ExportError, match=f"{re.escape(str(artifact))} differs from the sha256 in"):
        bench(exported)
    artifact.unlink()
    # before: onnxruntime's NoSuchFile traceback
    with pytest.raises(ExportError, match="the artifact model.onnx its card names is missing"):
        bench(exported)
    edit_card(exported, lambda card: card["artifact"].update(file="../../model.safetensors"))
    with pytest.raises(ExportError, match="which is not a file name inside the variant folder"):
        bench(exported)


def test_an_artifact_the_runtime_cannot_load_is_named(exported):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'distill[export]'")
    folder = exported / "cpu-fp32"
    # before: onnxruntime's InvalidProtobuf (not a ValueError) escaped as a traceback
    with pytest.raises(ExportError, match=rf"{re.escape(str(folder))}: onnxruntime cannot load model.onnx"):
        runner_for(folder, read_variant_card(folder), threads=1)


def test_a_teacher_that_is_a_folder_is_named(tmp_path, exported):
    with pytest.raises(ExportError, match=r"teacher checkpoint .* \(given\) is a folder, not a model file"):
        bench(exported, teacher=tmp_path, repeats=3)


@pytest.mark.parametrize("make,expected", [
    (lambda good: good[: len(good) // 2], "it is not a readable .safetensors file (truncated or not a model file?)"),
    (lambda good: b"name,value\nhidden,4\n", "it is not a readable .safetensors file"),
    (lambda good: b"", "it is not a readable .safetensors file"),
], ids=["cut-in-half", "text-renamed", "empty"])
def test_a_truncated_or_foreign_model_file_is_named(tmp_path, make, expected):
    # before: a file cut in half was reported as "carries no 'distill' metadata"
    good = (student_run(tmp_path / "run") / "model.safetensors").read_bytes()
    path = tmp_path / "student.safetensors"
    path.write_bytes(make(good))
    pattern = f"^{re.escape(str(path))} is not a student checkpoint: {re.escape(expected)}"
    with pytest.raises(ExportError, match=pattern):
        load_student(path, data="digits")


def test_a_model_file_with_nan_weights_or_a_bad_spec_is_named(tmp_path):
    import json as json_module

    from safetensors.torch import save_file

    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[4])
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["head.bias"][3] = float("nan")
    path = tmp_path / "nan.safetensors"  # written by another tool: save_model refuses NaN weights
    save_file(state, str(path), metadata={"distill": json_module.dumps(SPEC)})
    # before: exported, then every variant was REFUSED for NaN parity with "accept it with --tolerance"
    with pytest.raises(ExportError, match=r"1 weight tensor\(s\) hold NaN or inf values \(head.bias\)"):
        load_student(path, data="digits")
    path = tmp_path / "zero.safetensors"
    save_file(state, str(path), metadata={"distill": json_module.dumps({**SPEC, "params": {"hidden": [0]}})})
    with pytest.raises(ExportError, match=r"is not a student checkpoint: its spec does not build a model: model 'mlp': "
                                          r"hidden\[0\] is 0"):
        load_student(path, data="digits")


@pytest.mark.parametrize("text,expected", [
    ("data: [digits\n", "is not readable YAML"),
    ("- digits\n", "holds a list, not a recipe mapping"),
    ("data: digits\n", "'data' is 'digits', not a mapping"),
    ("data: {name: 3}\n", "'data.name' is 3, not a string"),
], ids=["malformed", "a-list", "data-not-a-mapping", "name-not-a-string"])
def test_a_broken_recipe_beside_the_model_is_named(tmp_path, text, expected):
    # before: yaml's ParserError or an AttributeError traceback
    run = student_run(tmp_path / "run")
    (run / "recipe.yaml").write_text(text)
    with pytest.raises(ExportError, match=f"^{re.escape(str(run / 'recipe.yaml'))}:? {re.escape(expected)}"):
        load_student(run)
