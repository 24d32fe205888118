"""Every recipe in ``recipes/`` validates, and runs through ``distill run`` for two steps.

A recipe whose teacher or student checkpoint is another recipe's output
(``<output_dir>/model.safetensors``) gets that recipe's two-step model instead, so the smoke runs
never depend on earlier full-length runs. Post-training quantization recipes (``quantize.method:
rtn``) train nothing: they run zero steps. Recipes reading ``../shared/data`` skip when it is absent (fail under CI=true).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared_data import require_shared
import distill.runner as runner
from distill.cli import app
from distill.data import build_dataset
from distill.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
SHARED_PREFIX = "../shared/data"


def test_there_are_recipes():
    assert RECIPES, f"no recipes in {ROOT / 'recipes'}"


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_validates_and_names_its_command(path):
    recipe = load_recipe(path)
    assert recipe.name
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# distill run recipes/{path.name}"), f"{path.name} should open with the command that runs it"


def _small_test_split(name, split, root=None, cache_dir=None, **params):
    """The run's data, with the test split cut to 1000 samples: a CNN teacher evaluated on
    all 10k Fashion-MNIST test images takes ~7 s on one busy core, and a smoke run checks
    that the recipe runs, not its numbers."""
    dataset = build_dataset(name, split, root=root, cache_dir=cache_dir, **params)
    return dataset.subset(1000, seed=0) if split == "test" and len(dataset) > 1000 else dataset


def _producer(checkpoint: str) -> Path | None:
    """The recipe whose output folder holds ``checkpoint``, if any."""
    for other in RECIPES:
        if (Path(load_recipe(other).output_dir) / "model.safetensors") == Path(checkpoint):
            return other
    return None


class SmokeRuns:
    """Runs recipes for two steps through the CLI, each at most once per test session."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.models: dict[Path, Path] = {}

    def overrides(self, path: Path) -> list[str]:
        recipe = load_recipe(path)
        out = self.base / path.stem
        items = [f"output_dir={out}", "train.steps=2", "train.threads=1", "data.train_subset=256",
                 "train.log_every=1", "train.eval_every_epoch=false"]
        root = recipe.data.root
        if root is not None and Path(root).as_posix().startswith(SHARED_PREFIX):
            parts = Path(root).as_posix()[len(SHARED_PREFIX):].strip("/").split("/")
            items.append(f"data.root={require_shared(*parts)}")
        specs = [("student", recipe.student)] + (recipe.teacher.members() if recipe.teacher is not None else [])
        for role, spec in specs:  # role: the override's prefix ("teacher.ensemble.1" for an ensemble's member)
            if spec.checkpoint is None:
                continue
            producer = _producer(spec.checkpoint)
            if producer is None:
                if not Path(spec.checkpoint).is_file():
                    pytest.fail(f"{path.name}: {role}.checkpoint {spec.checkpoint} is made by no recipe "
                                "in recipes/ and does not exist")
            else:
                items.append(f"{role}.checkpoint={self.run(producer)}")
        return items

    def run(self, path: Path) -> Path:
        if path not in self.models:
            overrides = self.overrides(path)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(runner, "build_dataset", _small_test_split)
                result = CliRunner().invoke(app, ["run", str(path), *overrides, "--no-progress", "--overwrite"])
            assert result.exit_code == 0, f"{path.name}: {result.output}"
            self.models[path] = self.base / path.stem / "model.safetensors"
        return self.models[path]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> SmokeRuns:
    return SmokeRuns(tmp_path_factory.mktemp("recipes"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_two_steps(path, smoke):
    model = smoke.run(path)
    run_dir = model.parent
    for name in ("recipe.yaml", "metrics.jsonl", "model.safetensors", "eval.json", "report.md"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "eval.json").read_text())
    recipe = load_recipe(path)
    post_training = recipe.quantize is not None and recipe.quantize.method == "rtn"
    assert metrics["train_steps"] == (0 if post_training else 2) and metrics["threads"] == 1
    assert 0.0 <= metrics["accuracy"] <= 1.0
    ran = load_recipe(run_dir / "recipe.yaml")
    # the smoke run trained the recipe's own models, objective and optimiser (a student checkpoint
    # made by another recipe is that recipe's smoke model)
    same_student = ran.student.model_copy(update={"checkpoint": recipe.student.checkpoint})
    assert same_student == recipe.student and ran.losses == recipe.losses and ran.optimizer == recipe.optimizer
    assert ran.quantize == recipe.quantize
    if recipe.teacher is not None:
        assert "agreement" in metrics
    if recipe.quantize is not None:  # the packed low-bit model, checked against the fake-quantized one
        assert (run_dir / "model.packed.safetensors").is_file()
        assert metrics["packed_accuracy"] == metrics["accuracy"] and metrics["quantized_bytes"] < metrics["fp32_bytes"]
