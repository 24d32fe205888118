"""Recipes with intermediate-layer terms: training, exported student, resume, refusals."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from distill.artifacts import load_model
from distill.recipe import RecipeError, load_recipe
from distill.runner import run_recipe
from distill.training.loop import StopTraining


def run(tree, *overrides, **kwargs):
    return run_recipe(load_recipe(tree, list(overrides)), progress=False, measure_latency=False, **kwargs)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A CNN and a ViT teacher on digits (8x8), trained briefly."""
    base = tmp_path_factory.mktemp("feature-teachers")
    models = {"cnn": {"model": "cnn", "params": {"channels": [16, 32]}},
              "vit": {"model": "vit", "params": {"patch_size": 2, "dim": 32, "depth": 2, "heads": 2}}}
    return {name: run({"name": name, "seed": 0, "output_dir": str(base / name), "data": {"name": "digits"},
                       "student": spec, "train": {"steps": 40, "threads": 1}}).model_path
            for name, spec in models.items()}


def tree(out, teacher, features, **train):
    return {
        "name": "features", "seed": 0, "output_dir": str(out), "data": {"name": "digits", "batch_size": 32},
        "teacher": {"checkpoint": str(teacher)}, "student": {"model": "cnn", "params": {"channels": [8, 16]}},
        "losses": [{"name": "kl", "weight": 0.9, "temperature": 4.0}, {"name": "cross_entropy", "weight": 0.1}],
        "features": features, "optimizer": {"name": "adamw", "lr": 0.01},
        "train": {"steps": 30, "threads": 1, "log_every": 5, "eval_every_epoch": False, **train},
    }


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("teacher_name", ["cnn", "vit"])
def test_feature_terms_train_and_the_exported_student_is_bare(tmp_path, teachers, teacher_name):
    features = [{"loss": "hint", "weight": 1.0}, {"loss": "similarity_preserving", "weight": 10.0}]
    if teacher_name == "cnn":
        features.append({"loss": "attention_transfer", "weight": 100.0, "pairs": [["stages.1", "stages.1"]]})
    result = run(tree(tmp_path / "run", teachers[teacher_name], features))
    logged = records(result.run_dir)
    assert {"feature/hint", "feature/similarity_preserving"} <= set(logged[0])
    assert logged[-1]["feature/hint"] < logged[0]["feature/hint"]  # the projected student approaches the teacher
    exported = load_file(str(result.model_path))
    assert not any(key.startswith(("projectors.", "student.")) for key in exported)
    model, _ = load_model(result.model_path)  # rebuilds as the plain student
    assert type(model).__name__ == "CNN"
    checkpoint = load_file(str(next((result.run_dir / "checkpoints").glob("step-*")) / "model.safetensors"))
    assert any(key.startswith("projectors.student.") for key in checkpoint)  # heads train and are saved


def test_exact_resume_with_feature_heads(tmp_path, teachers):
    features = [{"loss": "hint"}, {"loss": "crd", "weight": 0.5}]
    whole = run(tree(tmp_path / "a", teachers["cnn"], features, checkpoint_every=10))

    def stop(state):
        if state.step == 14:
            raise StopTraining

    with pytest.raises(StopTraining):
        run(tree(tmp_path / "b", teachers["cnn"], features, checkpoint_every=10), on_step=stop)
    resumed = run(tree(tmp_path / "b", teachers["cnn"], features, checkpoint_every=10), resume=True)
    a, b = load_file(str(whole.model_path)), load_file(str(resumed.model_path))
    assert all(torch.equal(a[key], b[key]) for key in a)


SELF = {"layers": "auto", "weight": 1.0, "temperature": 3.0, "label_weight": 0.3}


def combined(out, teacher, **train):
    return {**tree(out, teacher, [{"loss": "hint"}, {"loss": "similarity_preserving", "weight": 10.0}], **train),
            "self_distill": SELF}


def test_features_and_self_distillation_train_together_and_export_the_bare_student(tmp_path, teachers):
    result = run(combined(tmp_path / "run", teachers["cnn"]))
    logged = [r for r in records(result.run_dir) if r["split"] == "train"]
    assert {"loss", "kl", "feature/hint", "feature/similarity_preserving", "self/kl", "self/ce"} <= set(logged[0])
    assert all({"feature/hint", "self/kl", "self/ce"} <= set(r) for r in logged)
    assert logged[-1]["loss"] < 0.8 * logged[0]["loss"]
    assert logged[-1]["feature/hint"] < logged[0]["feature/hint"] and logged[-1]["self/ce"] < logged[0]["self/ce"]
    exported = load_file(str(result.model_path))
    model, _ = load_model(result.model_path)  # rebuilds as the plain student: no projector, no exit
    assert type(model).__name__ == "CNN" and set(exported) == set(model.state_dict())
    assert not any(key.startswith(("projectors.", "exits.", "student.")) for key in exported)
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())
    checkpoint = load_file(str(next((result.run_dir / "checkpoints").glob("step-*")) / "model.safetensors"))
    assert any(key.startswith("projectors.student.") for key in checkpoint)  # both head families train and are saved
    assert any(key.startswith("exits.exit0.") for key in checkpoint)
    exits = json.loads((result.run_dir / "eval.json").read_text())["exit_accuracy"]
    assert list(exits) == ["stages.0", "final"] and exits["final"] == pytest.approx(result.metrics["accuracy"])


def test_exact_resume_with_feature_heads_and_exits(tmp_path, teachers):
    whole = run(combined(tmp_path / "a", teachers["cnn"], checkpoint_every=10))

    def stop(state):
        if state.step == 14:
            raise StopTraining

    with pytest.raises(StopTraining):
        run(combined(tmp_path / "b", teachers["cnn"], checkpoint_every=10), on_step=stop)
    resumed = run(combined(tmp_path / "b", teachers["cnn"], checkpoint_every=10), resume=True)
    a, b = load_file(str(whole.model_path)), load_file(str(resumed.model_path))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert records(whole.run_dir)[-1]["loss"] == records(resumed.run_dir)[-1]["loss"]


@pytest.mark.parametrize("with_exits", [False, True])
def test_hooks_are_removed_even_when_interrupted(tmp_path, teachers, monkeypatch, with_exits):
    import distill.runner as runner

    seen = {}
    original = runner.Distiller

    def spy(*args, **kwargs):
        distiller = original(*args, **kwargs)
        seen["distiller"] = distiller
        return distiller

    monkeypatch.setattr(runner, "Distiller", spy)

    def stop(state):
        raise KeyboardInterrupt

    recipe = tree(tmp_path / "run", teachers["cnn"], [{"loss": "hint"}])
    if with_exits:
        recipe["self_distill"] = SELF
    with pytest.raises(KeyboardInterrupt):
        run(recipe, on_step=stop)
    features = seen["distiller"].features
    assert not features.module.taps.attached and not features.teacher_taps.attached
    assert (seen["distiller"].self_distill is not None) == with_exits
    heads = seen["distiller"].heads
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in heads.student.modules())


def test_hooks_are_removed_when_the_run_fails_before_its_first_step(tmp_path, teachers, monkeypatch):
    import distill.runner as runner

    seen = {}
    original = runner.Distiller

    def spy(*args, **kwargs):
        seen["distiller"] = original(*args, **kwargs)
        return seen["distiller"]

    monkeypatch.setattr(runner, "Distiller", spy)
    monkeypatch.setattr(runner, "make_loader", lambda *args, **kwargs: (_ for _ in ()).throw(ValueError("no data")))
    with pytest.raises(RecipeError, match="no data"):
        run(combined(tmp_path / "run", teachers["cnn"]))
    distiller = seen["distiller"]
    assert not any(m._forward_hooks or m._forward_pre_hooks
                   for m in [*distiller.heads.student.modules(), *distiller.teacher.modules()])


def test_feature_recipe_refusals(tmp_path, teachers):
    good = tree(tmp_path / "x", teachers["cnn"], [{"loss": "hint"}])
    with pytest.raises(RecipeError, match="did you mean 'hint'"):
        load_recipe(good, ["features.0.loss=hnt"])
    with pytest.raises(RecipeError, match="live teacher"):
        load_recipe(good, ["teacher.precompute=true"])
    no_teacher = {**good, "teacher": None, "losses": [{"name": "cross_entropy"}]}
    with pytest.raises(RecipeError, match="'teacher' is not set"):
        load_recipe(no_teacher)
    # a wrong module path fails before the first step and names the nearest real paths
    with pytest.raises(RecipeError, match=r"field 'features'.*stages\.1"):
        run(tree(tmp_path / "y", teachers["cnn"], [{"loss": "hint", "pairs": [["stage.1", "stages.1"]]}]))
    assert not (tmp_path / "y" / "model.safetensors").exists()
