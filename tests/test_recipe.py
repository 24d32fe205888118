"""The recipe schema: what validates, what is refused (and how it is said), overrides, files."""
from __future__ import annotations

import copy

import pytest
import yaml

from distill.recipe import Recipe, RecipeError, apply_overrides, check_files, load_recipe, parse_override

MINIMAL = {"student": {"model": "mlp", "params": {"hidden": [16]}}}
DISTILL = {
    "name": "distilled",
    "seed": 3,
    "output_dir": "runs/x",
    "data": {"name": "digits", "batch_size": 32, "augment": {"name": "shift", "max_shift": 1}},
    "teacher": {"checkpoint": "runs/teacher/model.safetensors"},
    "student": {"model": "mlp", "params": {"hidden": [16], "dropout": 0.1}},
    "losses": [{"name": "kl", "weight": 0.9, "temperature": 4}, {"name": "jsd", "weight": 0.05, "beta": 0.3},
               {"name": "cross_entropy", "weight": 0.05}],
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "betas": [0.8, 0.9]},
    "schedule": {"name": "cosine", "warmup_steps": 10},
    "train": {"epochs": 2, "checkpoint_every": 5, "threads": 1, "grad_accum": 2},
}


def refused(tree, overrides=()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(copy.deepcopy(tree), list(overrides))
    return str(info.value)


def test_minimal_recipe_validates_with_defaults():
    recipe = load_recipe(MINIMAL)
    assert isinstance(recipe, Recipe)
    assert recipe.student.model == "mlp" and recipe.student.params == {"hidden": [16]}
    assert recipe.teacher is None
    assert [loss.name for loss in recipe.losses] == ["cross_entropy"]
    assert recipe.data.name == "digits" and recipe.train.epochs == 1 and recipe.train.steps is None
    assert recipe.optimizer.name == "adamw"


def test_full_recipe_validates():
    recipe = load_recipe(DISTILL)
    assert recipe.teacher.checkpoint == "runs/teacher/model.safetensors" and recipe.teacher.model is None
    assert recipe.losses[1].params == {"beta": 0.3}  # extra loss parameters go to the loss
    assert recipe.losses[0].temperature == 4.0
    assert recipe.data.augment.max_shift == 1
    assert recipe.optimizer.betas == (0.8, 0.9)


def test_unknown_top_level_key():
    message = refused({**MINIMAL, "trian": {"epochs": 2}})
    assert "field 'trian'" in message and "did you mean 'train'?" in message
    assert len(message.splitlines()) == 1


def test_unknown_nested_key_names_the_path_and_suggests():
    message = refused({**MINIMAL, "train": {"epoch": 3}})
    assert "field 'train.epoch'" in message
    assert "did you mean 'epochs'?" in message
    assert "Valid keys here:" in message and "grad_accum" in message


def test_unknown_key_in_teacher_and_in_list_items():
    message = refused({**DISTILL, "teacher": {"checkpoint": "t.safetensors", "precomute": True}})
    assert "field 'teacher.precomute'" in message and "did you mean 'precompute'?" in message
    message = refused({**MINIMAL, "data": {"augment": {"name": "shift", "max_shif": 1}}})
    assert "field 'data.augment.max_shif'" in message and "did you mean 'max_shift'?" in message


def test_wrong_type_names_the_field_and_the_value():
    message = refused({**MINIMAL, "train": {"epochs": "many"}})
    assert "field 'train.epochs'" in message and "integer" in message and "'many'" in message


def test_out_of_range_and_bad_choice():
    assert "field 'optimizer.lr'" in refused({**MINIMAL, "optimizer": {"lr": -1}})
    message = refused({**MINIMAL, "train": {"mixed_precision": "fp8"}})
    assert "field 'train.mixed_precision'" in message and "'bf16'" in message


@pytest.mark.parametrize(
    "tree, field, hint",
    [
        ({"student": {"model": "mpl"}}, "student.model", "did you mean 'mlp'?"),
        ({**DISTILL, "teacher": {"model": "cnnn"}}, "teacher.model", "did you mean 'cnn'?"),
        ({**MINIMAL, "data": {"name": "mnsit"}}, "data.name", "did you mean 'mnist'?"),
        ({**MINIMAL, "losses": [{"name": "cross_entropy"}, {"name": "kll"}]}, "losses.1.name", "did you mean 'kl'?"),
    ],
)
def test_unknown_names_name_the_field_and_suggest(tree, field, hint):
    message = refused(tree)
    assert f"field '{field}'" in message and hint in message


def test_user_callables_are_accepted_by_name():
    recipe = load_recipe({"student": {"model": "my_package.models:build_student"}, "data": {"name": "my_pkg:data"}})
    assert recipe.student.model == "my_package.models:build_student"


def test_model_or_checkpoint_required():
    message = refused({"student": {"params": {"hidden": [3]}}})
    assert "field 'student'" in message and "'model'" in message and "'checkpoint'" in message
    assert "field 'student'" in refused({})


def test_teacher_loss_without_teacher_is_refused():
    message = refused({**MINIMAL, "losses": [{"name": "kl"}, {"name": "cross_entropy"}]})
    assert "['kl']" in message and "need a teacher" in message and "'teacher'" in message


def test_empty_losses_refused():
    assert "'losses' is empty" in refused({**MINIMAL, "losses": []})


def test_precompute_with_augment_is_refused():
    tree = copy.deepcopy(DISTILL)
    tree["teacher"]["precompute"] = True
    message = refused(tree)
    assert "teacher.precompute" in message and "data.augment" in message
    del tree["data"]["augment"]
    assert load_recipe(tree).teacher.precompute is True


# ----------------------------------------------------------------------------- overrides
def test_overrides_set_values_by_dotted_path():
    recipe = load_recipe(DISTILL, ["train.epochs=3", "losses.0.weight=0.5", "seed=7", "name=other",
                                   "student.params.activation=gelu", "optimizer.betas=[0.5, 0.6]"])
    assert recipe.train.epochs == 3 and isinstance(recipe.train.epochs, int)
    assert recipe.losses[0].weight == 0.5 and recipe.losses[1].weight == 0.05
    assert recipe.seed == 7 and recipe.name == "other"
    assert recipe.student.params["activation"] == "gelu"  # a new nested key
    assert recipe.optimizer.betas == (0.5, 0.6)
    assert DISTILL["train"]["epochs"] == 2, "the source tree is not modified"


def test_override_creates_missing_sections():
    recipe = load_recipe(MINIMAL, ["data.augment.name=shift", "data.augment.max_shift=1", "train.steps=5"])
    assert recipe.data.augment.name == "shift" and recipe.data.augment.max_shift == 1
    assert recipe.train.steps == 5


def test_override_with_an_unknown_key_is_validated_like_the_file():
    message = refused(MINIMAL, ["train.epoch=3"])
    assert "field 'train.epoch'" in message and "did you mean 'epochs'?" in message


def test_override_index_out_of_range():
    with pytest.raises(RecipeError, match=r"'losses\.5' needs an index below 3"):
        load_recipe(DISTILL, ["losses.5.weight=1"])
    with pytest.raises(RecipeError, match=r"'losses\.first' needs an index below 3"):
        load_recipe(DISTILL, ["losses.first.weight=1"])


def test_override_into_an_unset_list():
    with pytest.raises(RecipeError, match="'losses' is not set"):
        load_recipe(MINIMAL, ["losses.0.weight=0.5"])


@pytest.mark.parametrize("text", ["train.epochs", "=3", "", " =1"])
def test_malformed_override(text):
    with pytest.raises(RecipeError, match="not of the form key=value"):
        load_recipe(MINIMAL, [text])


def test_override_through_a_scalar_or_bad_yaml_is_a_recipe_error():
    with pytest.raises(RecipeError, match="'seed' is 3, not a mapping"):
        load_recipe(DISTILL, ["seed.value=1"])
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(MINIMAL, ["student.params.hidden=[1, 2"])


def test_parse_override_values_are_yaml_scalars():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=0.5") == (["a"], 0.5)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=") == (["a"], None)
    assert parse_override("a=x=y") == (["a"], "x=y")
    assert apply_overrides({"a": [1, 2]}, ["a.1=5"]) == {"a": [1, 5]}


# ----------------------------------------------------------------------------- files
def test_yaml_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping.*got list"):
        load_recipe(path)


def test_invalid_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("student: {model: mlp\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "train": {"epoch": 1}}))
    with pytest.raises(RecipeError, match=rf"{path}: field 'train.epoch'"):
        load_recipe(path)


def test_check_files_names_the_missing_teacher_checkpoint(tmp_path):
    recipe = load_recipe(DISTILL, [f"teacher.checkpoint={tmp_path / 'missing.safetensors'}"])
    with pytest.raises(RecipeError) as info:
        check_files(recipe)
    assert "field 'teacher.checkpoint'" in str(info.value) and "missing.safetensors" in str(info.value)
    (tmp_path / "missing.safetensors").write_bytes(b"x")
    check_files(recipe)  # present now


def test_check_files_names_a_missing_data_root(tmp_path):
    recipe = load_recipe(MINIMAL, [f"data.root={tmp_path / 'nowhere'}", "student.checkpoint=also-missing.safetensors"])
    with pytest.raises(RecipeError) as info:
        check_files(recipe)
    assert "field 'data.root'" in str(info.value) and "field 'student.checkpoint'" in str(info.value)


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("tree", [MINIMAL, DISTILL], ids=["minimal", "distill"])
def test_round_trip_through_yaml(tmp_path, tree):
    recipe = load_recipe(tree)
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    again = load_recipe(path)
    assert again == recipe
    assert again.to_dict() == recipe.to_dict()
    assert again.fingerprint() == recipe.fingerprint()


def test_fingerprint_changes_with_the_recipe_and_not_with_key_order():
    recipe = load_recipe(DISTILL)
    reordered = dict(reversed(list(copy.deepcopy(DISTILL).items())))
    assert load_recipe(reordered).fingerprint() == recipe.fingerprint()
    assert load_recipe(DISTILL, ["optimizer.lr=0.2"]).fingerprint() != recipe.fingerprint()
    assert len(recipe.fingerprint()) == 12


def test_training_fingerprint_ignores_fields_left_at_their_defaults():
    """A field added later at a default that keeps the old behaviour must not make older runs unresumable."""
    recipe = load_recipe(DISTILL)
    explicit = load_recipe({**copy.deepcopy(DISTILL), "on_policy": None, "task": "classification"})
    assert explicit.fingerprint(training_only=True) == recipe.fingerprint(training_only=True)
    assert load_recipe(DISTILL, ["train.threads=3"]).fingerprint(training_only=True) == \
        recipe.fingerprint(training_only=True)
    assert load_recipe(DISTILL, ["optimizer.lr=0.2"]).fingerprint(training_only=True) != \
        recipe.fingerprint(training_only=True)
