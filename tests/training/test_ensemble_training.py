"""Recipes with several teachers (``teacher.ensemble``): training, cache identity, refusals."""
from __future__ import annotations

import pytest
import torch
from test_training import make_recipe, run, trained_mlp, weights

from distill.artifacts import load_model
from distill.ensemble import combine_logits
from distill.recipe import RecipeError, load_recipe
from distill.runner import load_data


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two different trained MLP teachers (hidden 32 and 24)."""
    return [trained_mlp(tmp_path_factory, 32, 0.8), trained_mlp(tmp_path_factory, 24, 0.8)]


def ensemble_recipe(out, members, *overrides, combine="mean", weights_=(1.0, 1.0), **teacher):
    recipe = make_recipe(out, *overrides, teacher=members[0])  # kl + ce losses
    tree = recipe.to_dict()
    tree["teacher"] = {"ensemble": [{"checkpoint": str(path), "weight": weight} for path, weight in zip(members, weights_)],
                       "combine": combine, **teacher}
    return load_recipe(tree)


def test_an_ensemble_of_one_teacher_twice_trains_like_that_teacher(tmp_path, members):
    single = run(make_recipe(tmp_path / "single", teacher=members[0]))
    doubled = run(ensemble_recipe(tmp_path / "doubled", [members[0], members[0]]))
    for name, tensor in weights(single.run_dir).items():  # log-mixture = logits minus a per-row constant
        torch.testing.assert_close(weights(doubled.run_dir)[name], tensor, rtol=1e-4, atol=1e-4)


def test_agreement_is_measured_against_the_combined_teacher(tmp_path, members):
    result = run(ensemble_recipe(tmp_path / "run", members, "train.steps=60", combine="logit_mean", weights_=(1.0, 3.0)))
    recipe = load_recipe(str(result.run_dir / "recipe.yaml"))
    _, test_set = load_data(recipe)
    logits = [load_model(path)[0].eval()(test_set.inputs) for path in members]
    combined = combine_logits(torch.stack(logits).detach(), torch.tensor([1.0, 3.0]), "logit_mean")
    student = load_model(result.model_path)[0].eval()(test_set.inputs).detach()
    expected = float((student.argmax(-1) == combined.argmax(-1)).float().mean())
    assert result.metrics["agreement"] == pytest.approx(expected)
    assert "ensemble (logit_mean, weights [1.0, 3.0])" in (result.run_dir / "report.md").read_text()


def test_precomputed_ensemble_equals_the_live_ensemble(tmp_path, members):
    live = run(ensemble_recipe(tmp_path / "live", members, combine="confident"))
    stored = run(ensemble_recipe(tmp_path / "stored", members, combine="confident", precompute=True))
    for name, tensor in weights(live.run_dir).items():
        torch.testing.assert_close(weights(stored.run_dir)[name], tensor, rtol=1e-4, atol=1e-5)


def test_a_cache_built_for_another_combination_is_refused(tmp_path, members):
    cache = {"path": str(tmp_path / "cache"), "dtype": "float32"}
    run(ensemble_recipe(tmp_path / "mean", members, cache=cache))
    with pytest.raises(RecipeError, match="teacher weights"):
        run(ensemble_recipe(tmp_path / "other", members, combine="logit_mean", cache=cache))


def test_feature_pairs_reach_into_a_member(tmp_path, members):
    recipe = ensemble_recipe(tmp_path / "features", members, "train.steps=5")
    tree = recipe.to_dict()
    tree["features"] = [{"loss": "hint", "pairs": [["layers.0", "teachers.1.layers.0"]]}]
    result = run(load_recipe(tree))
    assert "feature/hint" in (result.run_dir / "metrics.jsonl").read_text()
    tree["features"] = [{"loss": "hint"}]
    with pytest.raises(RecipeError, match="cannot choose among an ensemble's teachers"):
        load_recipe(tree)


def test_missing_member_file_is_named(tmp_path, members):
    with pytest.raises(RecipeError, match=r"teacher\.ensemble\.1\.checkpoint': file .*nope.safetensors does not exist"):
        run(ensemble_recipe(tmp_path / "run", [members[0], tmp_path / "nope.safetensors"]))
