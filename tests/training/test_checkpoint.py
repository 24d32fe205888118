"""Checkpoints and model files are written atomically: a crash mid-write never costs the last good one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import distill.artifacts as artifacts
import distill.training.checkpoint as checkpoint
from distill.artifacts import ArtifactError, load_model, read_spec, save_model
from distill.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


class Crash(RuntimeError):
    """Stands for the process dying in the middle of a write."""


def linear(value: float) -> nn.Linear:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(value)
    return model


def state(step: int) -> dict:
    return {"counters": {"step": step}, "rng": {"torch": torch.get_rng_state()}, "note": torch.tensor([float(step)])}


def partial_writer(real_write):
    """Writes a truncated file where the real writer would have written, then crashes."""

    def write(obj, target, *args, **kwargs):
        Path(target).write_bytes(b"\x00partial")
        raise Crash("killed while writing")

    return write


def assert_loads_step(directory: Path, step: int, value: float) -> None:
    found = latest_checkpoint(directory)
    assert found is not None and found.name == f"step-{step:08d}"
    model = linear(-1.0)
    saved = load_checkpoint(found, model)
    assert saved["counters"]["step"] == step
    assert torch.equal(saved["note"], torch.tensor([float(step)]))
    assert all(torch.all(p == value) for p in model.parameters())


@pytest.mark.parametrize("target", ["torch.save", "save_file"])
def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, target):
    save_checkpoint(tmp_path, 10, linear(1.0), state(10))
    if target == "torch.save":
        monkeypatch.setattr(checkpoint.torch, "save", partial_writer(torch.save))
    else:
        monkeypatch.setattr(checkpoint, "save_file", partial_writer(checkpoint.save_file))
    with pytest.raises(Crash):
        save_checkpoint(tmp_path, 20, linear(2.0), state(20))
    monkeypatch.undo()

    assert not (tmp_path / "step-00000020").exists()
    assert (tmp_path / "latest").read_text().strip() == "step-00000010"
    assert not list(tmp_path.glob(".tmp-*")), "a failed write cleans up its temporary folder"
    assert_loads_step(tmp_path, 10, 1.0)
    # and the next save works normally
    save_checkpoint(tmp_path, 30, linear(3.0), state(30))
    assert_loads_step(tmp_path, 30, 3.0)


def test_leftovers_of_a_killed_writer_are_ignored(tmp_path):
    save_checkpoint(tmp_path, 10, linear(1.0), state(10))
    # a process killed outright leaves its temporary folder with half-written files
    tmp = tmp_path / ".tmp-abc123"
    tmp.mkdir()
    (tmp / checkpoint.MODEL_FILE).write_bytes(b"\x00partial")
    (tmp / checkpoint.STATE_FILE).write_bytes(b"\x00partial")
    assert_loads_step(tmp_path, 10, 1.0)
    # an incomplete step folder and a pointer to a missing folder are ignored too
    (tmp_path / "step-00000099").mkdir()
    (tmp_path / "step-00000099" / checkpoint.MODEL_FILE).write_bytes(b"\x00")
    (tmp_path / "latest").write_text("step-00000077\n")
    assert_loads_step(tmp_path, 10, 1.0)
    # pruning and later saves never trip over them
    save_checkpoint(tmp_path, 20, linear(2.0), state(20), keep=1)
    assert_loads_step(tmp_path, 20, 2.0)


def test_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_keep_prunes_to_the_newest(tmp_path):
    for step in (5, 10, 15, 20, 1000):
        save_checkpoint(tmp_path, step, linear(float(step)), state(step), keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000020", "step-00001000"]
    assert_loads_step(tmp_path, 1000, 1000.0)


def test_a_run_resumed_from_an_earlier_checkpoint_drops_the_later_ones(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, linear(float(step)), state(step), keep=3)
    # resumed from step 10 (say the pointer was lost), the run saves step 15: the stale
    # steps 20 and 30 of the abandoned timeline must neither survive nor evict step 15
    save_checkpoint(tmp_path, 15, linear(15.0), state(15), keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000010", "step-00000015"]
    (tmp_path / "latest").unlink()
    assert_loads_step(tmp_path, 15, 15.0)


def test_saving_the_same_step_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 10, linear(1.0), state(10))
    save_checkpoint(tmp_path, 10, linear(4.0), state(10))
    assert_loads_step(tmp_path, 10, 4.0)


class Opaque:
    """An arbitrary object: loading it needs unpickling code, which weights_only refuses."""


def test_state_is_loaded_weights_only(tmp_path):
    save_checkpoint(tmp_path, 1, linear(1.0), {"counters": {"step": 1}, "thing": Opaque()})
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_checkpoint(latest_checkpoint(tmp_path), linear(0.0))


# ----------------------------------------------------------------------------- model files
SPEC = {"model": "mlp", "params": {"hidden": [4]}, "input_shape": [1, 2, 2], "num_classes": 3}


def mlp(value: float) -> nn.Module:
    from distill.models import build_model

    model = build_model("mlp", input_shape=(1, 2, 2), num_classes=3, hidden=[4])
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(value)
    return model


def test_save_model_round_trips(tmp_path):
    path = save_model(mlp(0.5), tmp_path / "model.safetensors", SPEC)
    assert read_spec(path) == SPEC
    model, spec = load_model(path)
    assert spec == SPEC and not model.training
    assert all(torch.all(p == 0.5) for p in model.parameters())


def test_crash_in_save_model_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_model(mlp(0.5), path, SPEC)
    before = path.read_bytes()
    monkeypatch.setattr(artifacts, "save_file", partial_writer(artifacts.save_file))
    with pytest.raises(Crash):
        save_model(mlp(9.0), path, SPEC)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"], "no temporary file is left behind"
    model, _ = load_model(path)
    assert all(torch.all(p == 0.5) for p in model.parameters())


def test_model_file_errors_are_clear(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_spec(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ArtifactError, match="not a readable .safetensors"):
        load_model(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(ArtifactError, match="not written by distill"):
        load_model(foreign)
    # weights that do not fit the model name the keys
    wrong = tmp_path / "wrong.safetensors"
    save_file({"weight": torch.zeros(2)}, str(wrong), metadata={"distill": json.dumps(SPEC)})
    with pytest.raises(ArtifactError, match="missing"):
        load_model(wrong)
