"""The training loop through ``run_recipe`` on digits: determinism, exact resume, refusals.

Every run is tiny (an MLP with 16 hidden units, a few dozen steps on 8x8 digits, one thread),
so the whole file runs in seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.recipe import RecipeError, load_recipe
from distill.runner import run_recipe
from distill.training.checkpoint import latest_checkpoint
from distill.training.loop import StopTraining


def make_recipe(output_dir: Path, *overrides: str, teacher: Path | None = None, **tree):
    """A tiny digits recipe; ``tree`` replaces top-level sections, ``overrides`` are k=v."""
    base = {
        "name": "tiny",
        "seed": 0,
        "output_dir": str(output_dir),
        "data": {"name": "digits", "batch_size": 64},
        "student": {"model": "mlp", "params": {"hidden": [16]}},
        "losses": [{"name": "cross_entropy"}],
        "optimizer": {"name": "adamw", "lr": 0.01},
        "schedule": {"name": "cosine", "warmup_steps": 3},
        "train": {"steps": 30, "threads": 1, "log_every": 5},
    }
    if teacher is not None:
        base["teacher"] = {"checkpoint": str(teacher)}
        base["losses"] = [{"name": "kl", "weight": 0.9, "temperature": 4.0}, {"name": "cross_entropy", "weight": 0.1}]
    base.update(tree)
    return load_recipe(base, list(overrides))


def run(recipe, **kwargs):
    return run_recipe(recipe, progress=False, measure_latency=False, **kwargs)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs (max |diff| {(a[name] - b[name]).abs().max():.3g})"


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]


def trained_mlp(tmp_path_factory, hidden: int, min_accuracy: float) -> Path:
    """A float MLP 64-``hidden``-10 trained on digits for 60 steps; its model file."""
    out = tmp_path_factory.mktemp(f"mlp{hidden}") / "run"
    result = run(make_recipe(out, "train.steps=60", student={"model": "mlp", "params": {"hidden": [hidden]}}))
    assert result.metrics["accuracy"] > min_accuracy
    return result.model_path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A small MLP teacher trained for 60 steps (about 90% test accuracy on digits)."""
    return trained_mlp(tmp_path_factory, 32, 0.8)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_weights_other_seed_differs(tmp_path):
    first = run(make_recipe(tmp_path / "a", "student.params.dropout=0.2"))
    second = run(make_recipe(tmp_path / "b", "student.params.dropout=0.2"))
    assert_same_weights(weights(first.run_dir), weights(second.run_dir))
    other = run(make_recipe(tmp_path / "c", "student.params.dropout=0.2", "seed=1"))
    a, c = weights(first.run_dir), weights(other.run_dir)
    assert any(not torch.equal(a[name], c[name]) for name in a)


def test_loss_falls_and_files_are_written(tmp_path):
    result = run(make_recipe(tmp_path / "run", "train.steps=60"))
    train = [r for r in records(result.run_dir) if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(5, 61, 5))
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    for name in ("recipe.yaml", "metrics.jsonl", "model.safetensors", "eval.json", "report.md"):
        assert (result.run_dir / name).is_file(), name
    assert json.loads((result.run_dir / "eval.json").read_text())["train_steps"] == 60
    assert result.metrics["accuracy"] > 0.7
    assert result.metrics["threads"] == 1
    # the resolved recipe in the run folder is the recipe that ran
    assert load_recipe(result.run_dir / "recipe.yaml").fingerprint() == make_recipe(tmp_path / "run", "train.steps=60").fingerprint()


def test_distillation_logs_agreement_and_improves_it(tmp_path, teacher):
    # 22 batches per epoch: 44 steps end two epochs, each logging a test record with agreement
    result = run(make_recipe(tmp_path / "run", "train.steps=44", teacher=teacher))
    test = [r for r in records(result.run_dir) if r["split"] == "test"]
    assert [r["epoch"] for r in test] == [0, 1]
    assert all(0.0 <= r["agreement"] <= 1.0 for r in test)
    assert 0.0 <= result.metrics["agreement"] <= 1.0 and result.metrics["kl_to_teacher"] >= 0.0
    # agreement of the untrained student (step 0) vs. after distillation
    from distill.artifacts import load_model
    from distill.data import build_dataset
    from distill.evaluation import compare_to_teacher, predict
    from distill.models import build_model

    test_set = build_dataset("digits", "test")
    torch.manual_seed(0)
    untrained = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    teacher_logits = predict(load_model(teacher)[0], test_set.inputs)
    before = compare_to_teacher(predict(untrained, test_set.inputs), teacher_logits)["agreement"]
    assert result.metrics["agreement"] > before + 0.3


# ----------------------------------------------------------------------------- exact resume
RESUME_CASES = {
    # dropout in the student: the torch RNG state must be restored
    "distill-dropout": dict(overrides=("student.params.dropout=0.2",), teacher=True),
    # the accumulation boundary and micro-batch counter must be restored
    "grad-accum": dict(overrides=("student.params.dropout=0.2", "train.grad_accum=2"), teacher=True),
    # per-batch augmentation draws come from (seed, epoch, batch)
    "augment-shift": dict(overrides=("student.params.dropout=0.2", "data.augment={name: shift, max_shift: 1}"), teacher=False),
    # a checkpoint that falls exactly on an epoch end (5 batches per epoch), interrupted after
    # the epoch's test record was written
    "checkpoint-at-epoch-end": dict(overrides=("student.params.dropout=0.2", "data.train_subset=320"), teacher=True),
}


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, StopTraining])
@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_exact_resume(tmp_path, teacher, case, interrupt):
    config = RESUME_CASES[case]
    common = ("train.checkpoint_every=5", "train.log_every=3", *config["overrides"])
    kwargs = {"teacher": teacher} if config["teacher"] else {}
    uninterrupted = run(make_recipe(tmp_path / "a", *common, **kwargs))

    recipe_b = make_recipe(tmp_path / "b", *common, **kwargs)
    stop_at = 7  # past the checkpoint at step 5, before the next one

    def on_step(state):
        if state.step == stop_at:
            raise interrupt("stop")

    with pytest.raises(interrupt):
        run(recipe_b, on_step=on_step)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    saved = latest_checkpoint(tmp_path / "b" / "checkpoints")
    assert saved is not None, "an interrupted run must leave its last checkpoint"
    # StopTraining comes between steps: the loop saves that step; a KeyboardInterrupt keeps the last periodic one
    assert saved.name == (f"step-{stop_at:08d}" if interrupt is StopTraining else "step-00000005")

    resumed = run(recipe_b, resume=True)
    assert resumed.state.step == uninterrupted.state.step == 30
    assert resumed.state.samples == uninterrupted.state.samples
    assert_same_weights(weights(uninterrupted.run_dir), weights(resumed.run_dir))

    # metrics: no step logged twice, and the same values as the uninterrupted run
    def comparable(run_dir):
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records(run_dir)]

    keys = [(r["split"], r["step"]) for r in records(resumed.run_dir)]
    assert len(keys) == len(set(keys)), f"duplicated metric records: {keys}"
    assert comparable(resumed.run_dir) == comparable(uninterrupted.run_dir)


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    recipe = make_recipe(tmp_path / "run", "train.steps=10")
    first = weights(run(recipe).run_dir)
    again = run(recipe, resume=True)
    assert again.state.step == 10
    assert_same_weights(first, weights(again.run_dir))


# ----------------------------------------------------------------------------- refusals
def test_resume_with_a_changed_recipe_is_refused(tmp_path):
    recipe = make_recipe(tmp_path / "run", "train.steps=10", "train.checkpoint_every=5")
    run(recipe)
    before = (tmp_path / "run" / "recipe.yaml").read_text()
    changed = make_recipe(tmp_path / "run", "train.steps=10", "train.checkpoint_every=5", "optimizer.lr=0.5")
    with pytest.raises((RecipeError, ValueError), match="another recipe"):
        run(changed, resume=True)
    # the run folder still describes the run it holds
    assert (tmp_path / "run" / "recipe.yaml").read_text() == before


def test_resume_may_change_threads_and_cadence_but_not_the_numbers(tmp_path):
    common = ("train.steps=12", "train.checkpoint_every=4")
    uninterrupted = run(make_recipe(tmp_path / "a", *common))

    def stop(state):
        if state.step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(make_recipe(tmp_path / "b", *common), on_step=stop)
    # logging and checkpoint cadence do not change the computation: resuming is allowed, exactly
    resumed = run(make_recipe(tmp_path / "b", "train.steps=12", "train.checkpoint_every=5", "train.log_every=7"),
                  resume=True)
    assert_same_weights(weights(uninterrupted.run_dir), weights(resumed.run_dir))
    # another thread count is allowed too; it only reorders float sums (equal to rounding error)
    with pytest.raises(KeyboardInterrupt):
        run(make_recipe(tmp_path / "c", *common), on_step=stop)
    other_threads = run(make_recipe(tmp_path / "c", *common, "train.threads=2"), resume=True)
    for name, tensor in weights(uninterrupted.run_dir).items():
        torch.testing.assert_close(weights(other_threads.run_dir)[name], tensor, rtol=1e-5, atol=1e-6)


def test_resume_without_checkpoint_is_refused_and_creates_nothing(tmp_path):
    out = tmp_path / "never-ran"
    with pytest.raises((RecipeError, FileNotFoundError), match="no complete checkpoint"):
        run(make_recipe(out), resume=True)
    # nothing was left behind that would block a plain run
    assert not out.exists() or not any(out.iterdir())
    run(make_recipe(out, "train.steps=2"))


def test_existing_output_dir_is_refused_without_resume_or_overwrite(tmp_path):
    recipe = make_recipe(tmp_path / "run", "train.steps=3")
    run(recipe)
    with pytest.raises(RecipeError, match="output_dir"):
        run(recipe)
    result = run(make_recipe(tmp_path / "run", "train.steps=4"), overwrite=True)
    assert result.state.step == 4
    assert [r["step"] for r in records(result.run_dir) if r["split"] == "train"] == [4]


def test_bf16_mixed_precision_runs_on_cpu(tmp_path):
    from accelerate.utils import is_bf16_available

    if not is_bf16_available():
        pytest.skip("accelerate reports no bf16 support on this CPU")
    result = run(make_recipe(tmp_path / "bf16", "train.steps=6", "train.mixed_precision=bf16", "train.log_every=1"))
    losses = [r["loss"] for r in records(result.run_dir) if r["split"] == "train"]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    # the saved student is float32 and usable
    assert all(t.dtype == torch.float32 for t in weights(result.run_dir).values())
    # and a plain fp32 run in the same process still works afterwards
    assert run(make_recipe(tmp_path / "fp32", "train.steps=2")).state.step == 2
