"""Data parallel on CPU: 2 processes (gloo, launched by torchrun) against one process.

The same global batch split across 2 processes must give the same gradients (hence the same
weights after each SGD step) and the same loss curve as one process; a run checkpointed by
one process resumes under two.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from distill.recipe import load_recipe
from distill.runner import run_recipe

RECIPE = {
    "name": "ddp",
    "seed": 0,
    "data": {"name": "digits", "batch_size": 64},
    "student": {"model": "mlp", "params": {"hidden": [16]}},
    "teacher": None,
    "losses": [{"name": "cross_entropy"}],
    # plain SGD: the weights after each step are w - lr * g, so equal weights <=> equal gradients
    "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.0},
    "schedule": {"name": "constant"},
    "train": {"steps": 6, "log_every": 1, "threads": 1, "checkpoint_every": 3, "eval_every_epoch": False},
}


def write_recipe(tmp_path: Path, output_dir: Path, **train) -> Path:
    tree = json.loads(json.dumps(RECIPE))
    tree["output_dir"] = str(output_dir)
    tree["train"].update(train)
    path = tmp_path / f"{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def torchrun(recipe: Path, *flags: str, processes: int = 2) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "distill", "run", str(recipe), "--no-progress", *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def assert_close_weights(a: Path, b: Path) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    one = run_recipe(load_recipe(write_recipe(tmp_path, tmp_path / "one")), progress=False, measure_latency=False)
    torchrun(write_recipe(tmp_path, tmp_path / "two"))
    two = tmp_path / "two"
    # every step's gradient: the weights after the SGD steps agree
    assert_close_weights(one.model_path, two / "model.safetensors")
    # the loss curve: the logged loss is the mean over both processes = the global-batch mean
    assert losses(two) == pytest.approx(losses(one.run_dir), rel=1e-5)
    assert len(losses(two)) == 6
    # the checkpoint was written once, by the main process, and counts global samples
    state = torch.load(two / "checkpoints" / "step-00000006" / "state.pt", weights_only=True)
    assert state["counters"]["samples"] == 6 * 64


@pytest.mark.slow
def test_checkpoint_of_one_process_resumes_under_two(tmp_path):
    whole = run_recipe(load_recipe(write_recipe(tmp_path, tmp_path / "whole")), progress=False, measure_latency=False)

    def stop(state):
        if state.step == 4:
            raise KeyboardInterrupt

    recipe = write_recipe(tmp_path, tmp_path / "split")
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(recipe), progress=False, measure_latency=False, on_step=stop)
    torchrun(recipe, "--resume")  # steps 4-6 on two processes, from the step-3 checkpoint
    assert_close_weights(whole.model_path, tmp_path / "split" / "model.safetensors")
    assert losses(tmp_path / "split") == pytest.approx(losses(whole.run_dir), rel=1e-5)


def test_global_batch_must_split_evenly():
    from distill.data import build_dataset
    from distill.data.loader import InMemoryLoader

    digits = build_dataset("digits", "train")
    with pytest.raises(ValueError, match="divide evenly"):
        InMemoryLoader(digits, 63, drop_last=True, rank=0, world_size=2)
    shares = [list(InMemoryLoader(digits, 64, drop_last=True, rank=r, world_size=2).epoch_batches(0)) for r in (0, 1)]
    whole = list(InMemoryLoader(digits, 64, drop_last=True).epoch_batches(0))
    for part0, part1, full in zip(*shares, whole):
        ids = torch.cat([part0["index"], part1["index"]])
        assert sorted(ids.tolist()) == sorted(full["index"].tolist())  # no overlap, nothing missing
        assert len(set(part0["index"].tolist()) & set(part1["index"].tolist())) == 0


@pytest.mark.slow
def test_fsdp_on_two_processes_equals_one_process_and_resumes_across_strategies(tmp_path):
    """FSDP2 (gloo): sharded parameters and optimiser state, full-weight checkpoints by name."""
    sgd = {"strategy": "fsdp", "steps": 24, "eval_every_epoch": True}  # 22 batches per epoch: one evaluation
    one = run_recipe(load_recipe(write_recipe(tmp_path, tmp_path / "one", **sgd)), progress=False, measure_latency=False)
    torchrun(write_recipe(tmp_path, tmp_path / "two", **sgd))
    two = tmp_path / "two"
    assert_close_weights(one.model_path, two / "model.safetensors")
    assert losses(two) == pytest.approx(losses(one.run_dir), rel=1e-5)
    tests = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines() if '"test"' in line]
    assert len(tests) == 1 and tests[0]["accuracy"] > 0.5  # evaluated once, on gathered weights
    state = torch.load(two / "checkpoints" / "step-00000024" / "state.pt", weights_only=True)
    assert all(isinstance(key, str) for key in state["optimizer"]["state"])  # keyed by parameter name

    # Adam state: a checkpoint written under FSDP resumes in one process, and one process's under FSDP
    adam = {**sgd, "steps": 6, "eval_every_epoch": False}
    override = "optimizer=" + json.dumps({"name": "adam", "lr": 0.01})
    whole_recipe, mixed_recipe = (write_recipe(tmp_path, tmp_path / name, **adam) for name in ("whole", "mixed"))
    whole = run_recipe(load_recipe(whole_recipe, [override]), progress=False, measure_latency=False)
    reference = load_file(str(whole.model_path))
    torchrun(mixed_recipe, override)
    assert_close_weights(whole.model_path, tmp_path / "mixed" / "model.safetensors")

    def resume_from_step_3(recipe: Path, run_dir: Path, under_fsdp: bool) -> None:
        shutil.rmtree(run_dir / "checkpoints" / "step-00000006")
        if under_fsdp:
            torchrun(recipe, override, "--resume")
        else:
            run_recipe(load_recipe(recipe, [override]), resume=True, progress=False, measure_latency=False)
        resumed = load_file(str(run_dir / "model.safetensors"))
        for name, tensor in reference.items():
            torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
        assert losses(run_dir) == pytest.approx(losses(tmp_path / "mixed"), rel=1e-5)

    resume_from_step_3(mixed_recipe, tmp_path / "mixed", under_fsdp=False)  # names -> indices
    resume_from_step_3(whole_recipe, tmp_path / "whole", under_fsdp=True)   # indices -> names
