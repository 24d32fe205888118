"""Recipe validation refuses silent wrong results: non-finite numbers, duplicate keys, the
mixed-precision spellings users type, non-positive sizes."""
from __future__ import annotations

import pytest

from distill.recipe import RecipeError, load_recipe

BASE = {"student": {"model": "mlp", "params": {"hidden": [8]}}, "train": {"steps": 2}}


def recipe(**tree):
    return {**BASE, **tree}


@pytest.mark.parametrize("overrides, field", [
    (["optimizer.lr=.inf"], "optimizer.lr"),
    (["losses=[{name: cross_entropy, weight: .nan}]"], "losses.0.weight"),
    (["student.params.dropout=-.inf"], "student.params.dropout"),
    (["train.max_grad_norm=.NaN"], "train.max_grad_norm"),
])
def test_non_finite_numbers_are_refused_naming_the_field(overrides, field):
    with pytest.raises(RecipeError, match=rf"non-finite .*'{field}'"):
        load_recipe(recipe(), overrides)


def test_duplicate_keys_are_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("student: {model: mlp}\ntrain:\n  steps: 3\n  grad_accum: 2\n  steps: 30\n")
    with pytest.raises(RecipeError, match=r"key 'steps' is given twice \(first at line 3\)"):
        load_recipe(path)


@pytest.mark.parametrize("typed, expected", [
    ("no", "no"), ("false", "no"), ("off", "no"), ("fp32", "no"), ("False", "no"), ("FP32", "no"),
    ("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"),
])
def test_mixed_precision_spellings(typed, expected):
    assert load_recipe(recipe(), [f"train.mixed_precision={typed}"]).train.mixed_precision == expected


def test_unknown_mixed_precision_still_refused():
    with pytest.raises(RecipeError, match="train.mixed_precision"):
        load_recipe(recipe(), ["train.mixed_precision=int3"])


@pytest.mark.parametrize("override", ["data.batch_size=0", "data.batch_size=-4", "data.eval_batch_size=0",
                                      "train.grad_accum=0", "train.steps=-1"])
def test_non_positive_sizes_are_refused(override):
    with pytest.raises(RecipeError, match=override.split("=")[0]):
        load_recipe(recipe(), [override])


def test_not_utf8_recipe_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(path)


def test_the_recipe_folder_is_importable_and_validate_imports_its_callables(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    (tmp_path / "my_models_for_recipe.py").write_text(
        "from distill.models import MLP\n\n"
        "def build(input_shape, num_classes, width=8):\n"
        "    return MLP(input_shape=input_shape, num_classes=num_classes, hidden=[width])\n")
    good = tmp_path / "good.yaml"
    good.write_text("student: {model: 'my_models_for_recipe:build', params: {width: 4}}\ntrain: {steps: 2}\n")
    result = CliRunner().invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "imported your code: my_models_for_recipe:build" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: {model: 'my_models_for_recipe:biuld'}\ntrain: {steps: 2}\n")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "student.model" in result.output and "biuld" in result.output
