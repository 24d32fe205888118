"""Evaluation: golden ECE, agreement and KL against an independent computation, latency, sizes;
non-finite logits refused, a model file that does not fit the data named."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from distill.evaluation import (NonFiniteError, check_finite_logits, check_model_fits, compare_to_teacher, evaluate,
                                expected_calibration_error, measure_latency, predict)
from distill.models.utils import count_parameters, model_bytes


def logits_of(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().float()


def test_ece_golden_value_by_hand():
    # confidence, prediction, target, correct?
    #   0.90  0  0  yes   -> bin [0.8, 1.0]
    #   0.70  1  0  no    -> bin [0.6, 0.8)
    #   0.75  0  1  no    -> bin [0.6, 0.8)
    #   0.55  0  0  yes   -> bin [0.4, 0.6)
    logits = logits_of([[0.9, 0.1], [0.3, 0.7], [0.75, 0.25], [0.55, 0.45]])
    target = torch.tensor([0, 0, 1, 0])
    # 1/4 |1 - 0.9| + 2/4 |0 - (0.7 + 0.75) / 2| + 1/4 |1 - 0.55| = 0.025 + 0.3625 + 0.1125
    assert expected_calibration_error(logits, target, num_bins=5) == pytest.approx(0.5, abs=1e-6)
    # one bin: |accuracy - mean confidence| = |0.5 - 0.725|
    assert expected_calibration_error(logits, target, num_bins=1) == pytest.approx(0.225, abs=1e-6)


def test_ece_is_zero_when_confidence_matches_accuracy():
    # four samples at confidence 0.75, three of them right
    logits = logits_of([[0.75, 0.25]] * 4)
    target = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(logits, target, num_bins=10) == pytest.approx(0.0, abs=1e-6)


def test_ece_confidence_one_falls_in_the_last_bin():
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert expected_calibration_error(logits, torch.tensor([0, 0]), num_bins=15) == pytest.approx(0.5, abs=1e-6)


def test_compare_to_teacher_against_an_independent_computation():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(50, 7, generator=generator)
    teacher = torch.randn(50, 7, generator=generator) * 2
    result = compare_to_teacher(student, teacher)

    s, t = student.double().numpy(), teacher.double().numpy()
    log_q = s - np.log(np.exp(s).sum(1, keepdims=True))
    log_p = t - np.log(np.exp(t).sum(1, keepdims=True))
    kl_rows = (np.exp(log_p) * (log_p - log_q)).sum(1)  # KL(p_teacher || p_student) per sample
    agreement = float((s.argmax(1) == t.argmax(1)).mean())

    assert result["agreement"] == pytest.approx(agreement)
    assert result["kl_to_teacher"] == pytest.approx(float(kl_rows.mean()), rel=1e-5)
    assert 0 < result["agreement"] < 1  # the example is not degenerate


def test_compare_to_itself():
    logits = torch.randn(20, 4, generator=torch.Generator().manual_seed(1))
    result = compare_to_teacher(logits, logits)
    assert result["agreement"] == 1.0 and result["kl_to_teacher"] == pytest.approx(0.0, abs=1e-6)


def test_kl_direction_is_teacher_first():
    # KL(p || q) != KL(q || p) in general: check the documented direction on one pair
    student, teacher = logits_of([[0.5, 0.5]]), logits_of([[0.9, 0.1]])
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert compare_to_teacher(student, teacher)["kl_to_teacher"] == pytest.approx(expected, rel=1e-5)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.register_buffer("scale", torch.ones(3, dtype=torch.float64))
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        return self.dropout(self.linear(x.flatten(1))) * self.scale.float()


def test_predict_uses_eval_mode_batches_and_restores_training():
    torch.manual_seed(0)
    model = Tiny().train()
    inputs = torch.randn(10, 4)
    logits = predict(model, inputs, batch_size=3)
    assert model.training  # restored
    with torch.no_grad():
        expected = model.eval()(inputs)
    torch.testing.assert_close(logits, expected)


def test_sizes():
    model = Tiny()
    assert count_parameters(model) == 4 * 3 + 3
    assert model_bytes(model) == (4 * 3 + 3) * 4 + 3 * 8


def test_measure_latency_is_positive_and_records_threads():
    model = Tiny()
    result = measure_latency(model, torch.randn(1, 4), 8, repeats=5, warmup=1)
    assert result["batch_ms"] > 0 and result["per_sample_ms"] > 0
    assert result["per_sample_ms"] == pytest.approx(result["batch_ms"] / 8)
    assert result["threads"] == torch.get_num_threads() >= 1
    assert not model.training


def test_evaluate_reports_everything(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    inputs, target = torch.randn(30, 4), torch.randint(0, 3, (30,))
    teacher_logits = torch.randn(30, 3)
    file = tmp_path / "w.bin"
    file.write_bytes(b"x" * 123)
    metrics = evaluate(model, inputs, target, teacher_logits=teacher_logits, file=file, latency=True, batch_size=7)
    with torch.no_grad():
        logits = model.eval()(inputs)
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(-1) == target).float().mean()))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(logits, target))
    assert metrics["agreement"] == pytest.approx(compare_to_teacher(logits, teacher_logits)["agreement"])
    assert metrics["file_bytes"] == 123 and metrics["parameters"] == 15
    assert metrics["latency_b1_ms"] > 0 and metrics["latency_b64_ms"] > 0 and metrics["threads"] >= 1
    assert "latency_b1_ms" not in evaluate(model, inputs, target, latency=False)


class Poisoned(nn.Module):
    """Logits (B, 3); samples whose first input is > ``threshold`` come out NaN."""

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.threshold = threshold

    def forward(self, x):
        logits = self.linear(x.flatten(1))
        return torch.where(x[:, :1] > self.threshold, torch.full_like(logits, float("nan")), logits)


def test_non_finite_logits_are_refused_naming_the_model_file_and_how_many():
    # before: evaluate reported an accuracy over NaN logits (argmax of NaN is a class like any other)
    inputs = torch.zeros(10, 4)
    inputs[[2, 7], 0] = 5.0
    target = torch.zeros(10, dtype=torch.long)
    with pytest.raises(NonFiniteError, match=r"^model file student.safetensors produced NaN or infinite logits for "
                                             r"2 of 10 samples \(first: sample 2\).*inputs are finite"):
        evaluate(Poisoned(), inputs, target, file="student.safetensors", latency=False)
    with pytest.raises(ValueError, match=r"^model Poisoned produced NaN .* for 2 of 10 samples"):
        predict(Poisoned(), inputs, batch_size=3)  # found across batches
    assert issubclass(NonFiniteError, ValueError)


def test_non_finite_inputs_are_named_as_the_cause():
    inputs = torch.randn(6, 4)
    inputs[4, 1] = float("inf")
    with pytest.raises(ValueError, match=r"1 of 6 samples \(first: sample 4\).*1 of those samples have NaN or "
                                         r"infinite inputs: check the data"):
        predict(Tiny().eval(), inputs)


def test_non_finite_teacher_logits_are_refused():
    inputs, target = torch.randn(5, 4), torch.zeros(5, dtype=torch.long)
    teacher_logits = torch.randn(5, 3)
    teacher_logits[1, 2] = float("nan")
    with pytest.raises(ValueError, match="the teacher produced NaN or infinite logits for 1 of 5 samples"):
        evaluate(Tiny(), inputs, target, teacher_logits=teacher_logits, latency=False)


def test_check_finite_logits_passes_finite_ones_and_empty_inputs_are_refused():
    check_finite_logits(torch.randn(4, 3), what="x")
    with pytest.raises(ValueError, match="no samples to predict on"):
        predict(Tiny(), torch.randn(0, 4))


def test_check_model_fits_names_the_file_and_the_data():
    spec = {"model": "mlp", "input_shape": [1, 8, 8], "num_classes": 10}
    check_model_fits(spec, torch.Size([1, 8, 8]), 10, model_name="student.safetensors", data_name="digits")
    with pytest.raises(ValueError) as info:
        check_model_fits(spec, (1, 28, 28), 10, model_name="student.safetensors", data_name="mnist")
    assert str(info.value).startswith("model file student.safetensors was made for inputs (1, 8, 8) and 10 classes, "
                                      "but data 'mnist' has inputs (1, 28, 28) and 10 classes")
    with pytest.raises(ValueError, match=r"and 10 classes, but data 'cifar100' has inputs \(1, 8, 8\) and 100 classes"):
        check_model_fits(spec, [1, 8, 8], 100, model_name="student.safetensors", data_name="cifar100")
