"""The recipe's ``quantize:`` section through ``run_recipe`` on digits: QAD, QAT, RTN, saving, resume.

Every run is tiny (an MLP 64-64-10 on 8x8 digits, a few dozen steps, one thread).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from test_training import assert_same_weights, make_recipe, records, run, trained_mlp, weights

from distill.artifacts import load_model, read_spec
from distill.cli import app
from distill.data import build_dataset
from distill.evaluation import predict
from distill.quant import PackedLinear, QuantLinear, quant_parameters, read_packed
from distill.recipe import OptimizerSpec, RecipeError, load_recipe
from distill.runner import PACKED_FILE, build_teacher, is_quantized
from distill.training.checkpoint import latest_checkpoint
from distill.training.loop import StopTraining
from distill.training.optim import build_optimizer

W4 = {"method": "qat", "weight_bits": 4, "group_size": 32, "activation_bits": 8, "activation_mode": "learned"}


@pytest.fixture(scope="module")
def fp_model(tmp_path_factory) -> Path:
    """A float MLP 64-64-10 trained for 60 steps: the teacher and the starting point."""
    return trained_mlp(tmp_path_factory, 64, 0.85)


def qad_recipe(out: Path, fp_model: Path, *overrides: str, **quantize):
    """QAD: teacher = the float model, student initialised from the same file (its own float self)."""
    return make_recipe(out, "train.log_every=1", "optimizer.lr=0.001", *overrides, teacher=fp_model,
                       student={"checkpoint": str(fp_model)}, quantize={**W4, **quantize})


@pytest.fixture(scope="module")
def qad_run(tmp_path_factory, fp_model):
    return run(qad_recipe(tmp_path_factory.mktemp("qad") / "run", fp_model, "train.steps=20"))


# ----------------------------------------------------------------------------- recipe
def test_quantize_section_refuses_unknown_keys_and_rtn_without_checkpoint(tmp_path):
    with pytest.raises(RecipeError, match=r"field 'quantize.weight_bitz': unknown key; did you mean 'weight_bits'"):
        make_recipe(tmp_path, quantize={"method": "qat", "weight_bitz": 4})
    with pytest.raises(RecipeError, match=r"quantize.overrides.head.gruop_size': unknown key; did you mean 'group_size'"):
        make_recipe(tmp_path, quantize={"overrides": {"head": {"gruop_size": 64}}})
    with pytest.raises(RecipeError, match=r"'qat' or 'rtn'"):
        make_recipe(tmp_path, quantize={"method": "qad"})
    with pytest.raises(RecipeError, match=r"'rtn'.*'student.checkpoint'"):
        make_recipe(tmp_path, quantize={"method": "rtn"})
    with pytest.raises(RecipeError, match=r"weight_init 'lsq'"):
        make_recipe(tmp_path, "student.checkpoint=x.safetensors", quantize={"method": "rtn", "weight_init": "lsq"})


def test_resolved_recipe_keeps_only_the_override_fields_written(tmp_path):
    recipe = make_recipe(tmp_path, quantize={"weight_bits": 2, "overrides": {"<last>": {"weight_bits": 8, "activation_bits": None}}})
    reloaded = load_recipe(recipe.to_dict())
    assert reloaded.fingerprint() == recipe.fingerprint()
    assert recipe.to_dict()["quantize"]["overrides"] == {"<last>": {"weight_bits": 8, "activation_bits": None}}
    config = reloaded.quantize.config()
    assert config.overrides["<last>"].model_fields_set == {"weight_bits", "activation_bits"}
    assert config.layer_settings([config.overrides["<last>"]])["group_size"] == 32  # not overwritten with None


def test_quantizer_parameters_are_kept_out_of_weight_decay():
    from distill.models import build_model
    from distill.quant import prepare

    config = {key: value for key, value in W4.items() if key != "method"}
    model = prepare(build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[64]), config)
    optimizer = build_optimizer(OptimizerSpec(name="adamw", weight_decay=0.1), model.parameters(),
                                no_weight_decay=quant_parameters(model))
    decayed, exempt = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    assert decayed["lr"] == 1e-3 and exempt["lr"] == 1e-3
    scaled = build_optimizer(OptimizerSpec(name="adamw", lr=1e-2), model.parameters(),
                             no_weight_decay=quant_parameters(model), no_weight_decay_lr_scale=0.1)
    assert [group["lr"] for group in scaled.param_groups] == [1e-2, pytest.approx(1e-3)]
    assert {id(p) for p in exempt["params"]} == {id(p) for p in quant_parameters(model)}
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))


# ----------------------------------------------------------------------------- QAD
def test_qad_from_the_students_own_float_self(qad_run, fp_model):
    recipe = qad_recipe(qad_run.run_dir, fp_model)
    assert recipe.teacher.checkpoint == recipe.student.checkpoint
    test_set = build_dataset("digits", "test")
    teacher = build_teacher(recipe, (1, 8, 8), 10)
    assert not is_quantized(teacher)  # the teacher is the float model; only the student is prepared
    losses = [r["loss"] for r in records(qad_run.run_dir) if r["split"] == "train"]
    assert len(losses) == 20 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 2 * losses[0]  # fine-tuning from the float weights: no blow-up
    metrics = qad_run.metrics
    assert metrics["quantize_method"] == "qat" and metrics["train_steps"] == 20
    assert metrics["quantized_layers"] == {"layers.0.0": 4, "head": 4}
    assert metrics["accuracy"] > 0.8

    # model.safetensors: the fake-quantized student with its quantizer parameters, rebuilt by load_model
    assert read_spec(qad_run.model_path)["quantize"]["weight_bits"] == 4
    assert "layers.0.0.weight_quantizer.step" in weights(qad_run.run_dir)
    model, _ = load_model(qad_run.model_path)
    assert isinstance(model.layers[0][0], QuantLinear) and isinstance(model.head, QuantLinear)
    logits = predict(model, test_set.inputs)
    assert float((logits.argmax(-1) == test_set.targets).float().mean()) == metrics["accuracy"]

    # model.packed.safetensors: the real 4-bit codes; loaded back it gives the same outputs
    packed_path = qad_run.run_dir / PACKED_FILE
    layers, tensors, _ = read_packed(packed_path)
    assert tensors["layers.0.0.qweight"].dtype == torch.uint8 and layers["layers.0.0"].bits == 4
    packed, _ = load_model(packed_path)
    assert isinstance(packed.head, PackedLinear)
    torch.testing.assert_close(predict(packed, test_set.inputs), logits, rtol=0, atol=1e-5)
    assert metrics["packed_accuracy"] == metrics["accuracy"]
    assert metrics["quantized_bytes"] < metrics["fp32_bytes"] / 4
    assert metrics["compression"] == pytest.approx(metrics["fp32_bytes"] / metrics["quantized_bytes"])
    assert metrics["packed_file_bytes"] < (qad_run.run_dir / "model.safetensors").stat().st_size / 2
    saved = json.loads((qad_run.run_dir / "eval.json").read_text())
    assert saved["quantized_bytes"] == metrics["quantized_bytes"]
    assert "quantized size" in (qad_run.run_dir / "report.md").read_text()


def test_cli_eval_reports_the_fake_quantized_accuracy(qad_run, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(qad_run.model_path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["model.safetensors"]
    assert metrics["accuracy"] == qad_run.metrics["accuracy"]
    assert metrics["quantized_bytes"] == qad_run.metrics["quantized_bytes"]
    result = CliRunner().invoke(app, ["eval", str(qad_run.run_dir / PACKED_FILE), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())[PACKED_FILE]["accuracy"] == qad_run.metrics["accuracy"]


def test_a_quantized_checkpoint_is_refused_as_the_start_of_another_quantization(qad_run, tmp_path):
    recipe = make_recipe(tmp_path / "run", "train.steps=2", student={"checkpoint": str(qad_run.model_path)}, quantize=W4)
    with pytest.raises(RecipeError, match="already quantized"):
        run(recipe)
    packed = make_recipe(tmp_path / "run2", "train.steps=2", student={"checkpoint": str(qad_run.run_dir / PACKED_FILE)})
    with pytest.raises(RecipeError, match="packed"):
        run(packed)


# ----------------------------------------------------------------------------- RTN
def test_rtn_rounds_the_float_model_without_training(tmp_path, fp_model):
    recipe = make_recipe(tmp_path / "rtn", "train.steps=500", student={"checkpoint": str(fp_model)},
                         quantize={**W4, "method": "rtn"})
    result = run(recipe)
    assert result.state.step == 0 and result.metrics["train_steps"] == 0
    assert not (result.run_dir / "checkpoints").exists()
    for name in ("recipe.yaml", "metrics.jsonl", "model.safetensors", PACKED_FILE, "eval.json", "report.md"):
        assert (result.run_dir / name).is_file(), name
    float_weights, saved = load_file(str(fp_model)), weights(result.run_dir)
    for name, tensor in float_weights.items():  # the float weights are untouched: only rounded in the forward
        assert torch.equal(saved[name], tensor), name
    assert saved["layers.0.0.input_quantizer.observed_batches"] == 1  # calibrated on one training batch
    assert result.metrics["packed_accuracy"] == result.metrics["accuracy"] > 0.8
    assert result.metrics["quantized_bytes"] < result.metrics["fp32_bytes"] / 4
    assert [r["split"] for r in records(result.run_dir)] == ["test"]


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, StopTraining])
def test_qat_run_resumes_exactly(tmp_path, fp_model, interrupt):
    common = ("train.steps=16", "train.checkpoint_every=5", "train.log_every=3", "optimizer.weight_decay=0.01")
    quantize = {"method": "qat", "weight_bits": 2, "symmetric": False, "activation_bits": 8, "activation_mode": "learned",
                "step_lr_scale": 0.5}
    student = {"checkpoint": str(fp_model), "params": {"dropout": 0.2}}
    uninterrupted = run(make_recipe(tmp_path / "a", *common, student=student, quantize=quantize))

    def stop(state):
        if state.step == 7:
            raise interrupt("stop")

    with pytest.raises(interrupt):
        run(make_recipe(tmp_path / "b", *common, student=student, quantize=quantize), on_step=stop)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints") is not None
    resumed = run(make_recipe(tmp_path / "b", *common, student=student, quantize=quantize), resume=True)
    assert resumed.state.step == 16
    final = weights(uninterrupted.run_dir)
    assert "layers.0.0.weight_quantizer.zero_point" in final and "head.input_quantizer.step" in final
    assert_same_weights(final, weights(resumed.run_dir))
    assert load_file(str(uninterrupted.run_dir / PACKED_FILE)).keys() == load_file(str(resumed.run_dir / PACKED_FILE)).keys()
    for name, tensor in load_file(str(uninterrupted.run_dir / PACKED_FILE)).items():
        assert torch.equal(tensor, load_file(str(resumed.run_dir / PACKED_FILE))[name]), name


def test_cnn_student_with_batchnorm_folded_trains_and_packs(tmp_path):
    """quantize.fold_batchnorm: the CNN's BatchNorms go into its convolutions before QAT; the packed
    file holds no BatchNorm and loads back to the fake-quantized accuracy."""
    cnn = {"model": "cnn", "params": {"channels": [8, 16]}}
    float_run = run(make_recipe(tmp_path / "float", "train.steps=40", student=cnn))
    result = run(make_recipe(tmp_path / "qat", "train.steps=20", "optimizer.lr=0.001",
                             student={"checkpoint": str(float_run.model_path)},
                             quantize={"method": "qat", "weight_bits": 4, "group_size": 16, "fold_batchnorm": True}))
    assert result.metrics["packed_accuracy"] == result.metrics["accuracy"] > 0.5
    packed = load_file(str(result.run_dir / PACKED_FILE))
    assert not any("running_mean" in key for key in packed)
    model, spec = load_model(result.model_path)
    assert spec["quantize"]["fold_batchnorm"] is True
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
