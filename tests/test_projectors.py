"""Projectors: every shape pairing, the tokens <-> map rule, errors, the set and its checkpoint keys."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.losses import hint
from distill.models import build_model
from distill.projectors import (IdentityProjector, MapProjector, MapToTokensProjector, PoolProjector, ProjectorSet,
                                TokenProjector, TokensToMapProjector, VectorProjector, build_embedding_head,
                                build_logit_head, build_projector, resize_grid, strip_projectors, token_layout)
from distill.taps import Taps, probe

B = 2

PAIRS = [  # student shape, teacher shape, projector class
    ((B, 8), (B, 5), VectorProjector),
    ((B, 4, 8, 8), (B, 6, 8, 8), MapProjector),
    ((B, 4, 8, 8), (B, 6, 4, 4), MapProjector),  # teacher grid smaller
    ((B, 4, 4, 4), (B, 6, 8, 8), MapProjector),  # teacher grid larger
    ((B, 4, 8, 8), (B, 6, 4, 8), MapProjector),  # one dim only
    ((B, 17, 8), (B, 17, 12), TokenProjector),  # channels only
    ((B, 17, 8), (B, 65, 12), TokenProjector),  # CLS + 4x4 -> CLS + 8x8
    ((B, 16, 8), (B, 5, 12), TokenProjector),  # no CLS 4x4 -> CLS + 2x2
    ((B, 17, 8), (B, 4, 12), TokenProjector),  # CLS + 4x4 -> 2x2 (CLS dropped)
    ((B, 7, 8), (B, 3, 12), TokenProjector),  # no grid: resized along the token axis
    ((B, 3, 8), (B, 7, 12), TokenProjector),
    ((B, 6, 8, 8), (B, 17, 12), MapToTokensProjector),  # CNN student, ViT teacher
    ((B, 6, 8, 8), (B, 64, 12), MapToTokensProjector),
    ((B, 6, 2, 2), (B, 17, 12), MapToTokensProjector),
    ((B, 17, 12), (B, 6, 8, 8), TokensToMapProjector),  # ViT student, CNN teacher
    ((B, 16, 12), (B, 6, 2, 2), TokensToMapProjector),
    ((B, 6, 4, 4), (B, 10), PoolProjector),
    ((B, 17, 12), (B, 10), PoolProjector),
]


@pytest.mark.parametrize("student_shape,teacher_shape,cls", PAIRS)
def test_every_pairing_gives_the_teacher_shape(student_shape, teacher_shape, cls):
    torch.manual_seed(0)
    projector = build_projector(student_shape, teacher_shape)
    assert type(projector) is cls
    x = torch.randn(*student_shape, requires_grad=True)
    out = projector(x)
    assert out.shape == teacher_shape
    out.square().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in projector.parameters())
    mlp = build_projector(student_shape, teacher_shape, hidden=7)
    assert mlp(torch.randn(*student_shape)).shape == teacher_shape
    assert sum(p.numel() for p in mlp.parameters()) != sum(p.numel() for p in projector.parameters())


@pytest.mark.parametrize("shape", [(B, 8), (B, 4, 8, 8), (B, 17, 8)])
def test_equal_shapes_give_the_identity_unless_asked(shape):
    projector = build_projector(shape, shape)
    assert isinstance(projector, IdentityProjector) and not list(projector.parameters())
    x = torch.randn(*shape)
    assert projector(x) is x
    assert isinstance(build_projector(shape, shape, kind="identity"), IdentityProjector)
    learned = build_projector(shape, shape, kind="linear")  # the FitNets regressor
    assert list(learned.parameters()) and learned(x).shape == shape
    assert build_projector(shape, shape, kind="mlp")(x).shape == shape


def test_kind_errors():
    with pytest.raises(ValueError, match="kind='identity' needs equal shapes"):
        build_projector((B, 8), (B, 5), kind="identity")
    with pytest.raises(ValueError, match="not one of"):
        build_projector((B, 8), (B, 5), kind="conv")
    with pytest.raises(ValueError, match="use kind='mlp'"):
        build_projector((B, 8), (B, 5), kind="linear", hidden=4)


@pytest.mark.parametrize("teacher_shape", [(B, 4, 8, 8), (B, 17, 8)])
def test_vector_student_cannot_reach_a_spatial_teacher(teacher_shape):
    with pytest.raises(ValueError, match=r"vector student \(B, 8\).*teacher \(B, .*\).*Tap a student module") as info:
        build_projector((B, 8), teacher_shape)
    assert str(teacher_shape[1]) in str(info.value)


def test_token_sides_without_a_square_grid_cannot_meet_a_map():
    with pytest.raises(ValueError, match=r"student \(B, 4, 8, 8\) and teacher \(B, 7, 12\).*square"):
        build_projector((B, 4, 8, 8), (B, 7, 12))
    with pytest.raises(ValueError, match=r"student's 11 tokens"):
        build_projector((B, 11, 12), (B, 4, 8, 8))
    with pytest.raises(ValueError, match=r"student's 17 tokens.*cls_token=False"):
        build_projector((B, 17, 12), (B, 4, 8, 8), cls_token=False)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        build_projector((B, 2, 3, 4, 5), (B, 8))


def test_token_layout_rule():
    assert token_layout(16) == (False, (4, 4))
    assert token_layout(17) == (True, (4, 4))
    assert token_layout(10) == (True, (3, 3))  # 1 + 3x3
    assert token_layout(11) == (False, None)
    assert token_layout(16, cls_token=True) == (True, None)
    assert token_layout(17, cls_token=False) == (False, None)
    assert token_layout(65, cls_token=True) == (True, (8, 8))


def test_map_to_tokens_is_row_major_and_tokens_to_map_inverts_it():
    maps = torch.randn(B, 3, 2, 2)
    to_tokens = build_projector(maps.shape, (B, 5, 3))  # CLS + 2x2
    to_map = build_projector((B, 5, 3), maps.shape)
    with torch.no_grad():
        for projector in (to_tokens, to_map):
            projector.mix.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            projector.mix.bias.zero_()
    tokens = to_tokens(maps)
    torch.testing.assert_close(tokens[:, 1:], maps.flatten(2).transpose(1, 2))  # ViT's own patch order
    torch.testing.assert_close(tokens[:, 0], maps.mean(dim=(2, 3)))  # teacher CLS <- mean token
    torch.testing.assert_close(to_map(tokens), maps)  # CLS dropped, grid restored


def test_token_projector_keeps_cls_and_resizes_the_grid():
    projector = build_projector((B, 17, 3), (B, 5, 3), kind="linear")
    with torch.no_grad():
        projector.mix.weight.copy_(torch.eye(3))
        projector.mix.bias.zero_()
    x = torch.randn(B, 17, 3)
    out = projector(x)
    torch.testing.assert_close(out[:, 0], x[:, 0])
    grid = x[:, 1:].transpose(1, 2).reshape(B, 3, 4, 4)
    torch.testing.assert_close(out[:, 1:], F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2))


def test_resize_grid_pools_down_and_interpolates_up():
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(resize_grid(x, (2, 2)), F.avg_pool2d(x, 2))
    torch.testing.assert_close(resize_grid(x, (8, 8)), F.interpolate(x, size=(8, 8), mode="bilinear"))
    assert resize_grid(x, (4, 4)) is x


def test_repr_shows_the_arguments_verbatim():
    projector = build_projector((B, 4, 8, 8), (B, 6, 4, 4), batch_norm=True)
    assert projector.student_shape == (B, 4, 8, 8) and projector.batch_norm is True
    text = repr(projector)
    assert text.startswith("MapProjector(\n  student_shape=(2, 4, 8, 8), teacher_shape=(2, 6, 4, 4), hidden=None, "
                           "batch_norm=True")
    assert "BatchNorm2d" in text
    with pytest.raises(ValueError, match=r"built for student features \(B, 4, 8, 8\)"):
        projector(torch.randn(B, 4, 4, 4))


def test_logit_and_embedding_heads():
    head = build_logit_head((B, 17, 12), num_classes=10)
    assert head(torch.randn(B, 17, 12)).shape == (B, 10)
    assert build_logit_head((B, 6, 4, 4), 3)(torch.randn(B, 6, 4, 4)).shape == (B, 3)
    assert build_embedding_head((B, 8), 16)(torch.randn(B, 8)).shape == (B, 16)
    with pytest.raises(ValueError, match="num_classes"):
        build_logit_head((B, 8), 0)


class StudentWithProjectors(nn.Module):
    def __init__(self, student, projectors):
        super().__init__()
        self.student, self.projectors = student, projectors


def test_projector_set_state_dict_prefix_and_strip():
    projectors = ProjectorSet.from_shapes({"a": (B, 4, 8, 8), "b": (B, 8)}, {"a": (B, 6, 4, 4), "b": (B, 8)})
    assert isinstance(projectors["a"], MapProjector) and isinstance(projectors["b"], IdentityProjector)
    out = projectors({"a": torch.randn(B, 4, 8, 8), "b": torch.randn(B, 8)})
    assert out["a"].shape == (B, 6, 4, 4)
    holder = StudentWithProjectors(nn.Linear(2, 2), projectors)
    state = holder.state_dict()
    assert {"projectors.a.mix.weight", "projectors.a.mix.bias", "student.weight"} <= set(state)
    assert ProjectorSet.state_dict_prefix == "projectors."
    assert set(strip_projectors(state)) == {"student.weight", "student.bias"}
    with pytest.raises(ValueError, match="without '.'"):
        ProjectorSet({"stages.0": nn.Identity()})
    with pytest.raises(ValueError, match=r"feature pair 'a'.*vector student"):
        ProjectorSet.from_shapes({"a": (B, 8)}, {"a": (B, 4, 2, 2)})
    with pytest.raises(ValueError, match="names differ"):
        ProjectorSet.from_shapes({"a": (B, 8)}, {"b": (B, 8)})


def test_cross_architecture_gradient_reaches_student_and_projector_never_the_teacher():
    """A ViT teacher's tokens (B, 1 + N, D) taught to a CNN student's map through a projector."""
    torch.manual_seed(0)
    teacher = build_model("vit", input_shape=(1, 8, 8), num_classes=3, patch_size=2, dim=8, depth=1, heads=2)
    student = build_model("cnn", input_shape=(1, 8, 8), num_classes=3, channels=(4, 6))
    teacher.eval().requires_grad_(False)
    x = torch.randn(B, 1, 8, 8)
    student_shapes = probe(student, x, {"pair": "stages.0"})
    teacher_shapes = probe(teacher, x, {"pair": "blocks.0"})
    assert student_shapes["pair"] == (B, 4, 4, 4) and teacher_shapes["pair"] == (B, 17, 8)
    projectors = ProjectorSet.from_shapes(student_shapes, teacher_shapes)
    assert isinstance(projectors["pair"], MapToTokensProjector)
    with Taps(student, {"pair": "stages.0"}) as student_taps, Taps(teacher, {"pair": "blocks.0"}) as teacher_taps:
        with torch.no_grad():
            teacher(x)
        student(x)
        projected = projectors(student_taps.require_all())
        loss = hint(projected["pair"], teacher_taps.require_all()["pair"])
        loss.backward()
    assert all(p.grad is not None for p in projectors.parameters())
    assert all(p.grad is not None for p in student.stages[0].parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in [*student.modules(), *teacher.modules()]) == 0
