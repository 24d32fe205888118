"""Diffusion on the shared training loop: exact resume (EMA and target network included), data
parallel on 2 processes equal to one, non-finite losses stopped, run folders guarded."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from distill.diffusion.consistency import consistency_distillation
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.progressive import progressive_distillation
from distill.diffusion.schedules import CosineSchedule
from distill.diffusion.teacher import train_teacher
from distill.diffusion.toy import sample_mixture
from distill.diffusion.training import Draws, NoiseSeeds
from distill.models.unet import TimeMLP
from distill.safety import NonFiniteError


def fresh_denoiser(seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=32, depth=1, time_dim=16), CosineSchedule(), "v")


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    left, right = a.state_dict(), b.state_dict()
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=0, atol=0, msg=name)


DATA = sample_mixture(512, torch.Generator().manual_seed(0))


def test_teacher_training_resumes_exactly_with_its_ema(tmp_path):
    whole, whole_history = train_teacher(fresh_denoiser(), DATA, num_steps=10, batch_size=64, run_dir=tmp_path / "a",
                                         progress=False)
    train_teacher(fresh_denoiser(), DATA, num_steps=4, batch_size=64, run_dir=tmp_path / "b", progress=False)
    # a later process continues from the step-4 checkpoint: weights, Adam state, EMA copy, data order, noise
    resumed, history = train_teacher(fresh_denoiser(seed=1), DATA, num_steps=10, batch_size=64,
                                     run_dir=tmp_path / "b", resume=True, progress=False)
    assert_same_weights(resumed, whole)
    assert history["losses"] == pytest.approx(whole_history["losses"], rel=0, abs=0)
    assert len(history["losses"]) == 10 and history["losses"][-1] < history["losses"][0]


def test_consistency_resumes_exactly_with_its_target_network(tmp_path, tiny_teacher):
    teacher, data = tiny_teacher
    settings = dict(batch_size=64, num_grid_points=6, mu=0.9, progress=False)
    whole, whole_history = consistency_distillation(teacher, data, num_steps=6, run_dir=tmp_path / "a", **settings)
    consistency_distillation(teacher, data, num_steps=3, run_dir=tmp_path / "b", **settings)
    resumed, history = consistency_distillation(teacher, data, num_steps=6, run_dir=tmp_path / "b", resume=True,
                                                **settings)
    assert_same_weights(resumed, whole)  # the EMA target theta- the paper samples with
    assert history["losses"] == whole_history["losses"]
    # the checkpoint holds both networks
    weights = load_file(str(sorted((tmp_path / "b" / "checkpoints").glob("step-*"))[-1] / "model.safetensors"))
    assert any(name.startswith("online.") for name in weights) and any(name.startswith("ema.") for name in weights)


def test_resume_refuses_other_settings(tmp_path, tiny_teacher):
    teacher, data = tiny_teacher
    consistency_distillation(teacher, data, num_steps=2, batch_size=64, num_grid_points=6, run_dir=tmp_path,
                             progress=False)
    with pytest.raises(ValueError, match="another recipe"):
        consistency_distillation(teacher, data, num_steps=4, batch_size=64, num_grid_points=8, run_dir=tmp_path,
                                 resume=True, progress=False)


def test_progressive_resume_reads_finished_rounds_back(tmp_path, tiny_teacher):
    teacher, data = tiny_teacher
    settings = dict(start_steps=4, end_steps=1, num_steps_per_round=3, batch_size=64, progress=False)
    students, history = progressive_distillation(teacher, data, run_dir=tmp_path, **settings)
    assert sorted(p.name for p in tmp_path.glob("round_*")) == ["round_1", "round_2"]
    again, again_history = progressive_distillation(teacher, data, run_dir=tmp_path, resume=True, **settings)
    for steps in (2, 1):
        assert_same_weights(again[steps], students[steps])
    assert [h["losses"] for h in again_history] == [h["losses"] for h in history]


def test_a_non_finite_loss_stops_with_a_clear_error(tiny_teacher):
    teacher, data = tiny_teacher
    bad = data.clone()
    bad[:] = float("nan")
    with pytest.raises(NonFiniteError, match="optimiser step 1.*NaN/inf inputs"):
        consistency_distillation(teacher, bad, num_steps=2, batch_size=64, num_grid_points=6, progress=False)


def test_draws_of_two_processes_make_the_global_batch():
    class Rows:
        def __len__(self):
            return 2

        def epoch_batches(self, epoch, start=0):
            for _ in range(start, 2):
                yield {"input": torch.zeros(4, 3)}

    def draws(rank, world):
        batch = next(NoiseSeeds(Rows(), seed=5, rank=rank, world_size=world).epoch_batches(0))
        one = Draws(batch, "cpu")
        return one.randn((4 // world, 3)), one.randint(0, 100, 4 // world)

    whole_noise, whole_ints = draws(0, 1)
    parts = [draws(rank, 2) for rank in (0, 1)]
    torch.testing.assert_close(torch.stack([parts[0][0], parts[1][0]], 1).reshape(4, 3), whole_noise)
    assert torch.stack([parts[0][1], parts[1][1]], 1).reshape(4).tolist() == whole_ints.tolist()


def test_cli_refuses_to_start_over_a_run_and_resumes_it(tmp_path):
    from distill.cli import app

    runner = CliRunner()
    out = tmp_path / "teacher"
    base = ["diffusion", "train-teacher", "--data", "toy", "--steps", "3", "--batch-size", "64", "--size", "small",
            "--out", str(out)]
    assert runner.invoke(app, base).exit_code == 0
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "--resume" in refused.output and "--overwrite" in refused.output
    resumed = runner.invoke(app, [*base[:5], "6", *base[6:], "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(json.loads((out / "history.json").read_text())["losses"]) == 6
    assert runner.invoke(app, [*base, "--overwrite"]).exit_code == 0
    assert len(json.loads((out / "history.json").read_text())["losses"]) == 3


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(tmp_path):
    """torchrun, 2 CPU processes (gloo): the same global batch and noise split in two; the averaged
    gradients give the same teacher (Adam, so up to the float rounding of the all-reduce)."""
    args = ["diffusion", "train-teacher", "--data", "toy", "--steps", "5", "--batch-size", "64", "--size", "small"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "distill", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "distill", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=240)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    left, right = (load_file(str(tmp_path / name / "teacher.safetensors")) for name in ("one", "two"))
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=1e-4, atol=1e-5, msg=name)
    losses = [json.loads((tmp_path / name / "history.json").read_text())["losses"] for name in ("one", "two")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
