"""Feature terms: stage discovery, automatic layer mapping, heads from probed shapes, gradients."""
from __future__ import annotations

import pytest
import torch

from distill.intermediate import FeatureDistillation, FeatureTerm, StudentWithHeads, auto_pairs, stage_paths
from distill.models import build_model


def model(name, **params):
    return build_model(name, input_shape=(3, 16, 16), num_classes=10, **params)


def test_stage_paths_of_each_reference_model():
    assert stage_paths(model("mlp", hidden=[32, 16])) == ["layers.0", "layers.1"]
    assert stage_paths(model("cnn", channels=[8, 16])) == ["stages.0", "stages.1"]
    assert stage_paths(model("resnet", depth=8)) == ["layer1", "layer2", "layer3"]
    assert stage_paths(model("vit", patch_size=4, dim=32, depth=4, heads=2)) == [f"blocks.{i}" for i in range(4)]


def test_auto_pairs_spread_student_stages_over_teacher_stages():
    teacher = model("vit", patch_size=4, dim=32, depth=6, heads=2)
    student = model("cnn", channels=[8, 16, 32])
    # ceil((i + 1) * 6 / 3) - 1 = 1, 3, 5: uniform, and the last stages meet
    assert auto_pairs(student, teacher) == [("stages.0", "blocks.1"), ("stages.1", "blocks.3"), ("stages.2", "blocks.5")]
    assert auto_pairs(model("cnn", channels=[8, 16]), model("resnet", depth=8)) == [("stages.0", "layer2"), ("stages.1", "layer3")]


@pytest.mark.parametrize("loss", ["hint", "cosine", "attention_transfer", "similarity_preserving", "rkd_distance",
                                  "rkd_angle", "crd", "ofa"])
def test_cnn_student_learns_from_vit_or_resnet_features(loss):
    torch.manual_seed(0)
    teacher = model("resnet", depth=8).eval().requires_grad_(False)
    if loss not in ("attention_transfer",):
        teacher = model("vit", patch_size=4, dim=32, depth=2, heads=2).eval().requires_grad_(False)
    student = model("cnn", channels=[8, 16])
    inputs, target = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    setup = FeatureDistillation(student, teacher, [FeatureTerm(loss)], inputs, num_classes=10)
    try:
        with torch.inference_mode():
            teacher_logits = teacher(inputs)
        features = setup.teacher_features()
        logits = setup.module(inputs, features)
        assert logits.shape == (6, 10)
        [(key, weight, value)] = setup.losses(setup.module.outputs, teacher_logits.clone(), target)
        assert key == f"feature/{loss}" and weight == 1.0 and torch.isfinite(value)
        value.backward()
        # the tapped stages (auto: stages.0 and stages.1) learn from the feature loss; the teacher does not
        assert all(p.grad is not None for p in student.stages.parameters())
        assert all(p.grad is None for p in teacher.parameters())
        for head in setup.module.projectors["student"].values():
            assert all(p.grad is not None for p in head.parameters())
    finally:
        setup.remove()
    assert not student._forward_hooks and not teacher._forward_hooks


def test_unbridgeable_pair_names_paths_and_shapes():
    teacher = model("cnn", channels=[8, 16])
    student = model("mlp", hidden=[32])
    with pytest.raises(ValueError, match=r"'layers.0' \(student, \(2, 32\)\) -> 'stages.0' \(teacher"):
        FeatureDistillation(student, teacher, [FeatureTerm("hint", pairs=[("layers.0", "stages.0")])],
                            torch.randn(2, 3, 16, 16), num_classes=10)


def test_wrong_path_lists_close_paths():
    with pytest.raises(ValueError, match="stages.1"):
        FeatureDistillation(model("cnn", channels=[8, 16]), model("cnn", channels=[8, 16]),
                            [FeatureTerm("hint", pairs=[("stage.1", "stages.1")])], torch.randn(2, 3, 16, 16), 10)


def test_heads_are_saved_under_projectors_and_strip_to_the_student():
    teacher, student = model("resnet", depth=8), model("cnn", channels=[8, 16])
    setup = FeatureDistillation(student, teacher, [FeatureTerm("hint")], torch.randn(2, 3, 16, 16), 10)
    keys = setup.module.state_dict().keys()
    assert any(k.startswith("projectors.student.") for k in keys)
    assert {k[len("student."):] for k in keys if k.startswith("student.")} == set(student.state_dict())
    assert isinstance(setup.module, StudentWithHeads)
    setup.remove()
