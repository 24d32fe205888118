"""Self-distillation exits: which layers, the loss against an independent formula, gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.models import build_model
from distill.self_distill import SelfDistillation


def mlp(hidden=(16, 12)):
    torch.manual_seed(0)
    return build_model("mlp", input_shape=(64,), num_classes=10, hidden=list(hidden))


def test_auto_puts_an_exit_on_every_stage_but_the_last():
    assert list(SelfDistillation(mlp((16, 12, 8)), "auto", torch.randn(4, 64), 10).paths.values()) == ["layers.0", "layers.1"]
    torch.manual_seed(0)
    cnn = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, channels=[8, 16, 16])
    assert list(SelfDistillation(cnn, "auto", torch.randn(4, 1, 8, 8), 10).paths.values()) == ["stages.0", "stages.1"]


def test_losses_match_an_independent_formula():
    student = mlp()
    self_distill = SelfDistillation(student, ["layers.0", "layers.1"], torch.randn(4, 64), 10,
                                    weight=1.0, temperature=2.0, label_weight=0.5)
    inputs, target = torch.randn(8, 64), torch.randint(0, 10, (8,))
    final = self_distill.module(inputs)
    exits = [self_distill.module.exits[name](feature) for name, feature in
             zip(self_distill.paths, [student.layers[0](inputs), student.layers[1](student.layers[0](inputs))])]
    terms = dict((key, value) for key, _, value in self_distill.losses(final, target))
    teacher = F.softmax(final / 2.0, -1)
    expected_kl = torch.stack([4.0 * (teacher * (teacher.log() - F.log_softmax(z / 2.0, -1))).sum(-1).mean() for z in exits]).mean()
    expected_ce = torch.stack([F.cross_entropy(z, target) for z in exits]).mean()
    torch.testing.assert_close(terms["self/kl"], expected_kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["self/ce"], expected_ce, rtol=1e-5, atol=1e-6)


def test_the_final_classifier_is_the_teacher_and_gets_no_gradient():
    student = mlp()
    self_distill = SelfDistillation(student, "auto", torch.randn(4, 64), 10, label_weight=0.0)
    final = self_distill.module(torch.randn(8, 64))
    (terms,) = self_distill.losses(final, None)
    terms[2].backward()
    assert student.head.weight.grad is None or not student.head.weight.grad.any()
    assert student.layers[0][0].weight.grad.abs().sum() > 0  # the shared shallow layers learn
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in self_distill.module.exits.parameters())
    self_distill.remove()
    assert not self_distill.module.taps.attached


def test_bad_layers_are_refused_with_the_nearest_paths():
    with pytest.raises(ValueError, match="single stage"):
        SelfDistillation(mlp((16,)), "auto", torch.randn(4, 64), 10)
    with pytest.raises(ValueError, match="layers.0"):
        SelfDistillation(mlp(), ["layer.0"], torch.randn(4, 64), 10)
    with pytest.raises(ValueError, match="empty"):
        SelfDistillation(mlp(), [], torch.randn(4, 64), 10)
