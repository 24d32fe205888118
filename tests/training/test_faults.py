"""Fault safety of a run: non-finite losses, damaged checkpoints and model files, concurrent runs,
leftovers of a crash, runs that could never step. Tiny digits runs (seconds each)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from distill.artifacts import ArtifactError, load_model
from distill.models import MLP
from distill.recipe import RecipeError
from distill.safety import LOCK_FILE, LOCK_INFO, FolderError, run_lock
from distill.training.checkpoint import CheckpointError, latest_checkpoint, save_checkpoint
from distill.training.loop import NonFiniteError

from test_training import make_recipe, run


def nan_teacher_file(path: Path) -> Path:
    """A distill model file (no digest, as an older or foreign writer leaves) whose weights are NaN."""
    model = MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(8,))
    state = {name: torch.full_like(tensor, float("nan")) for name, tensor in model.state_dict().items()}
    spec = {"model": "mlp", "params": {"hidden": [8]}, "input_shape": [1, 8, 8], "num_classes": 10}
    save_file(state, str(path), metadata={"distill": json.dumps(spec)})
    return path


def test_exploding_run_stops_naming_step_and_terms_and_keeps_the_last_checkpoint(tmp_path):
    recipe = make_recipe(tmp_path / "run", "optimizer.lr=1e30", "schedule.warmup_steps=0", "train.checkpoint_every=1",
                         "train.steps=50")
    with pytest.raises(NonFiniteError) as caught:
        run(recipe)
    message = str(caught.value)
    assert "optimiser step" in message and "cross_entropy" in message
    assert "last good checkpoint" in message
    run_dir = tmp_path / "run"
    assert not (run_dir / "model.safetensors").exists()  # no NaN model is ever written
    last = latest_checkpoint(run_dir / "checkpoints", verify=True)
    assert last is not None and str(last) in message
    model = MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(16,))
    from distill.training.checkpoint import load_checkpoint

    load_checkpoint(last, model)  # the kept checkpoint is intact and finite
    assert all(torch.isfinite(tensor).all() for tensor in model.state_dict().values())


def test_nan_teacher_is_refused_before_training(tmp_path):
    teacher = nan_teacher_file(tmp_path / "nan-teacher.safetensors")
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        run(make_recipe(tmp_path / "a", "train.steps=3", teacher=teacher))
    assert not (tmp_path / "a").exists()


NAN_DATA = """
from distill.data import build_dataset
from distill.data.datasets import ArrayDataset

def nan_digits(split, root=None, cache_dir=None):
    data = build_dataset("digits", split)
    if split != "train":
        return data
    inputs = data.inputs.clone()
    inputs[[5, 500, 1000]] = float("nan")
    return ArrayDataset(inputs, data.targets, list(data.classes), "nan_digits", split)
"""


def test_nan_data_is_named_and_skip_nonfinite_skips(tmp_path, monkeypatch):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "nan_data_mod.py").write_text(NAN_DATA)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    data = ["data.name=nan_data_mod:nan_digits", "train.steps=40"]
    with pytest.raises(NonFiniteError, match=r"the data holds NaN/inf inputs \(samples (5|500|1000)\)"):
        run(make_recipe(tmp_path / "a", *data))
    assert not (tmp_path / "a" / "model.safetensors").exists()
    # skipping is opt-in and bounded: the three bad samples spoil at most three batches an epoch
    result = run(make_recipe(tmp_path / "b", *data, "train.skip_nonfinite=10"))
    skipped = result.state.extra["skipped_nonfinite"]
    assert 1 <= skipped <= 6 and result.state.step == 40
    assert torch.isfinite(torch.tensor(result.metrics["accuracy"]))
    with pytest.raises(NonFiniteError, match="train.skip_nonfinite"):
        run(make_recipe(tmp_path / "c", *data, f"train.skip_nonfinite={skipped - 1}"))


def test_zero_optimiser_steps_is_refused_with_the_numbers(tmp_path):
    with pytest.raises(RecipeError, match=r"no optimiser step.*grad_accum 100"):
        run(make_recipe(tmp_path / "run", "train.steps=null", "train.epochs=1", "train.grad_accum=100"))
    with pytest.raises(RecipeError, match=r"data.batch_size.*5000 > 1437 samples"):
        run(make_recipe(tmp_path / "run", "data.batch_size=5000"))
    assert not (tmp_path / "run").exists()  # refused before the first step: nothing blocks the rerun


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    common = ("train.steps=12", "train.checkpoint_every=4", "train.keep_checkpoints=3")
    from distill.training.loop import StopTraining

    def stop(state):
        if state.step == 8:
            raise StopTraining

    with pytest.raises(StopTraining):
        run(make_recipe(tmp_path / "run", *common), on_step=stop)
    checkpoints = tmp_path / "run" / "checkpoints"
    newest = checkpoints / "step-00000008"
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in a weight
    (newest / "model.safetensors").write_bytes(bytes(data))
    assert latest_checkpoint(checkpoints, verify=True, say=lambda m: None).name == "step-00000004"
    resumed = run(make_recipe(tmp_path / "run", *common), resume=True)
    assert resumed.state.step == 12
    assert "step-00000008 is damaged" in capsys.readouterr().err


def test_flipped_byte_in_a_model_file_is_refused(tmp_path):
    result = run(make_recipe(tmp_path / "run", "train.steps=2"))
    data = bytearray(result.model_path.read_bytes())
    data[-5] ^= 0x01
    result.model_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupted"):
        load_model(result.model_path)
    truncated = tmp_path / "half.safetensors"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ArtifactError, match="not a readable .safetensors file"):
        load_model(truncated)


def test_checkpoint_with_nan_weights_is_never_written(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, 1, model, {"counters": {}})
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="NaN or inf"):
        save_checkpoint(tmp_path, 2, model, {"counters": {}})
    assert latest_checkpoint(tmp_path).name == "step-00000001"


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path):
    recipe = make_recipe(tmp_path / "run", "train.steps=2")
    holder = subprocess.Popen(  # another process holds the folder's lock
        [sys.executable, "-c", "import sys, time; from distill.safety import run_lock\n"
         f"with run_lock({str(tmp_path / 'run')!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderError, match=rf"in use by process {holder.pid} on host"):
            run(recipe)
        with pytest.raises(FolderError, match="in use"):
            run(recipe, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale and taken over
    assert (tmp_path / "run" / LOCK_INFO).is_file()
    assert run(recipe).state.step == 2


def test_stale_lock_is_taken_over_with_a_message(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).touch()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / LOCK_INFO).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    messages = []
    with run_lock(folder, say=messages.append):
        assert json.loads((folder / LOCK_INFO).read_text())["pid"] == os.getpid()
    assert messages and f"process {dead.pid}, which is no longer running" in messages[0]
    assert not (folder / LOCK_INFO).exists()


def test_leftovers_of_a_crash_are_removed_on_the_next_start(tmp_path):
    recipe = make_recipe(tmp_path / "run", "train.steps=4", "train.checkpoint_every=2")
    run(recipe)
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / ".tmp-abc123").mkdir()
    (checkpoints / ".tmp-abc123" / "model.safetensors").write_bytes(b"half")
    (tmp_path / "run" / ".model.safetensors.x1y2.tmp").write_bytes(b"half")
    (tmp_path / "run" / "notes.txt").write_text("the user's")
    run(recipe, resume=True)
    assert not (checkpoints / ".tmp-abc123").exists()
    assert not (tmp_path / "run" / ".model.safetensors.x1y2.tmp").exists()
    assert (tmp_path / "run" / "notes.txt").is_file()  # only distill's own leftovers go


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "taken"
    afile.write_text("x")
    with pytest.raises(FolderError, match="is an existing file"):
        run(make_recipe(afile))
    with pytest.raises(FolderError, match="is a file, so no folder can be made under it"):
        run(make_recipe(afile / "run"))
    assert afile.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write into any folder, so an unwritable folder cannot be made here")
def test_unwritable_output_dir_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(FolderError, match="not writable"):
            run(make_recipe(locked / "run"))
    finally:
        locked.chmod(0o700)
