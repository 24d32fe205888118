"""Recipes with ``self_distill``: the exits train, are reported, are stripped; resume; refusals."""
from __future__ import annotations

import json

import pytest
import torch
from test_training import assert_same_weights, make_recipe, records, run, weights

from distill.artifacts import load_model
from distill.recipe import RecipeError
from distill.training.loop import StopTraining

SELF = {"layers": "auto", "weight": 1.0, "temperature": 3.0, "label_weight": 0.3}


def recipe(out, *overrides, **tree):
    return make_recipe(out, "train.steps=60", *overrides, student={"model": "mlp", "params": {"hidden": [32, 16]}},
                       self_distill=SELF, **tree)


def test_exits_learn_and_are_left_out_of_the_exported_student(tmp_path):
    result = run(recipe(tmp_path / "run"))
    steps = [r for r in records(result.run_dir) if "self/kl" in r]
    assert len(steps) >= 5 and steps[-1]["self/ce"] < 0.5 * steps[0]["self/ce"]  # the exit learns the labels
    exits = json.loads((result.run_dir / "eval.json").read_text())["exit_accuracy"]
    assert list(exits) == ["layers.0", "final"] and exits["layers.0"] > 0.5
    assert exits["final"] == pytest.approx(result.metrics["accuracy"])
    model, _ = load_model(result.model_path)
    assert not any(name.startswith(("exits", "student.")) for name in weights(result.run_dir))
    assert not model._forward_hooks and not model.layers[0]._forward_hooks  # no taps left on the student
    assert "Accuracy of each exit" in (result.run_dir / "report.md").read_text()


def test_exits_change_the_student(tmp_path):
    plain = make_recipe(tmp_path / "plain", "train.steps=60", student={"model": "mlp", "params": {"hidden": [32, 16]}})
    a, b = weights(run(plain).run_dir), weights(run(recipe(tmp_path / "self")).run_dir)
    assert a.keys() == b.keys() and not torch.equal(a["layers.0.0.weight"], b["layers.0.0.weight"])


def test_self_distilled_run_resumes_exactly(tmp_path):
    whole = run(recipe(tmp_path / "a", "train.steps=30"))

    def stop(state):
        if state.step == 14:
            raise StopTraining

    with pytest.raises(StopTraining):
        run(recipe(tmp_path / "b", "train.steps=30", "train.checkpoint_every=10"), on_step=stop)
    resumed = run(recipe(tmp_path / "b", "train.steps=30", "train.checkpoint_every=10"), resume=True)
    assert_same_weights(weights(whole.run_dir), weights(resumed.run_dir))


def test_self_distill_refusals(tmp_path):
    with pytest.raises(RecipeError, match=r"field 'self_distill': the student has a single stage"):
        run(make_recipe(tmp_path / "a", self_distill=SELF))  # hidden [16]: one stage
    with pytest.raises(RecipeError, match="'teacher' is not set"):  # features need a teacher; exits do not
        recipe(tmp_path / "b", features=[{"loss": "hint"}])
    # with a teacher, features and self-distillation are one run (tests/training/test_feature_training.py)
    both = recipe(tmp_path / "c", teacher=tmp_path / "t.safetensors", features=[{"loss": "hint"}])
    assert both.features and both.self_distill is not None
