"""Training from a teacher-output cache: same result as the live teacher, reuse, refusals."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import RecipeError, load_recipe
from distill.runner import run_recipe


def recipe_tree(out, teacher, **teacher_extra):
    return {
        "name": "cached", "seed": 0, "output_dir": str(out),
        "data": {"name": "digits", "batch_size": 64},
        "teacher": {"checkpoint": str(teacher), **teacher_extra},
        "student": {"model": "mlp", "params": {"hidden": [16]}},
        "losses": [{"name": "kl", "weight": 0.9, "temperature": 4.0}, {"name": "cross_entropy", "weight": 0.1}],
        "optimizer": {"name": "adamw", "lr": 0.01},
        "train": {"steps": 20, "threads": 1, "eval_every_epoch": False},
    }


def run(tree, *overrides):
    return run_recipe(load_recipe(tree, list(overrides)), progress=False, measure_latency=False)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two different tiny trained teachers (distill model files)."""
    base = tmp_path_factory.mktemp("teachers")
    paths = []
    for seed in (0, 1):
        tree = {"name": "t", "seed": seed, "output_dir": str(base / f"t{seed}"), "data": {"name": "digits"},
                "student": {"model": "mlp", "params": {"hidden": [32]}}, "train": {"steps": 30, "threads": 1}}
        paths.append(run(tree).model_path)
    return paths


def weights(result):
    return load_file(str(result.model_path))


def test_dense_float32_cache_trains_like_the_live_teacher(tmp_path, teachers):
    live = run(recipe_tree(tmp_path / "live", teachers[0]))
    cached = run(recipe_tree(tmp_path / "cached", teachers[0], cache={"path": str(tmp_path / "cache"), "dtype": "float32"}))
    assert (tmp_path / "cache" / "manifest.json").is_file()
    for name, tensor in weights(live).items():
        torch.testing.assert_close(weights(cached)[name], tensor, rtol=1e-4, atol=1e-5)


def test_topk_cache_is_reused_and_a_mismatch_is_refused(tmp_path, teachers, monkeypatch):
    cache = {"path": str(tmp_path / "cache"), "k": 4}
    first = run(recipe_tree(tmp_path / "a", teachers[0], cache=cache))
    manifest = (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns

    import distill.data.cache as cache_module

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran again although the cache matches")

    monkeypatch.setattr(cache_module, "_run_teacher", no_teacher)
    second = run(recipe_tree(tmp_path / "b", teachers[0], cache=cache))
    assert (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns == manifest
    for name, tensor in weights(first).items():
        assert torch.equal(weights(second)[name], tensor)
    # another teacher: refused, naming what differs
    with pytest.raises(RecipeError, match="teacher.cache.*teacher"):
        run(recipe_tree(tmp_path / "c", teachers[1], cache=cache))


def test_cache_recipe_refusals(tmp_path):
    base = recipe_tree(tmp_path / "x", tmp_path / "t.safetensors", cache={"path": "c", "k": 4})
    with pytest.raises(RecipeError, match="data.augment"):
        load_recipe(base, ["data.augment={name: shift, max_shift: 1}"])
    with pytest.raises(RecipeError, match="dense teacher logits"):
        load_recipe(base, ["losses=[{name: dkd, temperature: 4}, {name: cross_entropy}]"])
    with pytest.raises(RecipeError, match="tail mass at T=1.0"):
        load_recipe(base, ["teacher.cache.mode=tail"])
    with pytest.raises(RecipeError, match="not both"):
        load_recipe(base, ["teacher.precompute=true"])


def test_cli_cache_builds_once(tmp_path, teachers):
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_tree(tmp_path / "run", teachers[0], cache={"path": str(tmp_path / "c"), "k": 8})))
    result = CliRunner().invoke(app, ["cache", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "k=8" in result.output and "bytes/sample" in result.output
    assert (tmp_path / "c" / "manifest.json").is_file()
    no_cache = CliRunner().invoke(app, ["cache", str(path), "teacher.cache=null"])
    assert no_cache.exit_code == 2 and "needs a teacher with a 'cache' section" in no_cache.output
