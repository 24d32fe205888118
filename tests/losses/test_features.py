"""Feature losses: golden values from independent numpy formulas, contracts, gradients."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from distill.losses import (FEATURE_LOSS_NEEDS, FEATURE_LOSSES, attention_relation, attention_transfer, cosine, crd,
                            hint, ofa, rkd_angle, rkd_distance, similarity_preserving)

RNG = np.random.default_rng(0)
MAP_S = RNG.normal(size=(3, 2, 4, 4))  # student map (B, Cs, H, W)
MAP_T = RNG.normal(size=(3, 5, 4, 4))  # teacher map, other channel count
VEC_S = RNG.normal(size=(4, 3))
VEC_T = RNG.normal(size=(4, 6))
TOK_S = RNG.normal(size=(2, 3, 4))  # tokens (B, N, D)
TOK_T = RNG.normal(size=(2, 3, 4))
REL_S = RNG.normal(size=(3, 5, 12))  # query/key/value projections (B, N, D): 12 relation heads by default
REL_T = RNG.normal(size=(3, 5, 24))


def t(array) -> torch.Tensor:
    return torch.tensor(array, dtype=torch.float32)


def np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_huber(a, b):
    d = np.abs(a - b)
    return np.where(d < 1, 0.5 * d**2, d - 0.5)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# ----------------------------------------------------------------------------- golden values
def test_hint_golden():
    s, tt = TOK_S, TOK_T
    assert hint(t(s), t(tt)).item() == pytest.approx(((s - tt) ** 2).mean(), rel=1e-5)
    per_sample = hint(t(s), t(tt), reduction="none")
    np.testing.assert_allclose(per_sample.numpy(), ((s - tt) ** 2).reshape(2, -1).mean(1), rtol=1e-5)
    assert hint(t(s), t(tt), reduction="sum").item() == pytest.approx(per_sample.sum().item(), rel=1e-6)


def test_cosine_golden():
    s, tt = TOK_S, TOK_T
    flat_s, flat_t = s.reshape(2, -1), tt.reshape(2, -1)
    expected = np.mean([1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(flat_s, flat_t)])
    assert cosine(t(s), t(tt)).item() == pytest.approx(expected, rel=1e-5)
    per_token = 1 - (np_normalize(s) * np_normalize(tt)).sum(-1)  # (B, N)
    assert cosine(t(s), t(tt), over="position").item() == pytest.approx(per_token.mean(), rel=1e-5)
    maps_s, maps_t = MAP_S, RNG.normal(size=MAP_S.shape)
    per_pixel = 1 - (np_normalize(maps_s.transpose(0, 2, 3, 1)) * np_normalize(maps_t.transpose(0, 2, 3, 1))).sum(-1)
    assert cosine(t(maps_s), t(maps_t), over="position").item() == pytest.approx(per_pixel.mean(), rel=1e-5)


def np_attention(maps):
    return np_normalize((np.abs(maps) ** 2).mean(1).reshape(maps.shape[0], -1))


def test_attention_transfer_golden():
    expected = np.linalg.norm(np_attention(MAP_S) - np_attention(MAP_T), axis=1).mean()
    assert attention_transfer(t(MAP_S), t(MAP_T)).item() == pytest.approx(expected, rel=1e-5)


def test_attention_transfer_resizes_the_student_attention_map_to_the_teacher_grid():
    teacher = RNG.normal(size=(3, 5, 2, 2))
    attention = (MAP_S**2).mean(1)  # (B, 4, 4), averaged over 2x2 cells -> (B, 2, 2)
    pooled = attention.reshape(3, 2, 2, 2, 2).mean(axis=(2, 4)).reshape(3, -1)
    expected = np.linalg.norm(np_normalize(pooled) - np_attention(teacher), axis=1).mean()
    assert attention_transfer(t(MAP_S), t(teacher)).item() == pytest.approx(expected, rel=1e-5)


def test_similarity_preserving_golden():
    f_s, f_t = MAP_S.reshape(3, -1), MAP_T.reshape(3, -1)
    g_s, g_t = np_normalize(f_s @ f_s.T), np_normalize(f_t @ f_t.T)
    expected = ((g_s - g_t) ** 2).sum() / 3**2
    assert similarity_preserving(t(MAP_S), t(MAP_T)).item() == pytest.approx(expected, rel=1e-5)


def np_rkd_distance(s, tt):
    def normalised(x):
        b = len(x)
        d = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(b)] for i in range(b)])
        return d / d[~np.eye(b, dtype=bool)].mean()
    return np_huber(normalised(s), normalised(tt)).mean()


def np_rkd_angle(s, tt):
    def angles(x):
        b = len(x)
        out = np.zeros((b, b, b))
        for i, j, k in itertools.product(range(b), repeat=3):
            if j != i and k != i:
                out[i, j, k] = np_normalize(x[j] - x[i]) @ np_normalize(x[k] - x[i])
        return out
    return np_huber(angles(s), angles(tt)).mean()


def test_rkd_distance_golden():
    expected = np_rkd_distance(VEC_S, VEC_T)
    assert rkd_distance(t(VEC_S), t(VEC_T)).item() == pytest.approx(expected, rel=1e-5)
    # large distances exercise the linear part of the Huber loss
    big = VEC_S * np.array([[1.0], [1.0], [1.0], [30.0]])
    assert rkd_distance(t(big), t(VEC_T)).item() == pytest.approx(np_rkd_distance(big, VEC_T), rel=1e-5)


def test_rkd_angle_golden_and_offset_invariance():
    expected = np_rkd_angle(VEC_S, VEC_T)
    assert rkd_angle(t(VEC_S), t(VEC_T)).item() == pytest.approx(expected, rel=1e-5)
    # features far from the origin: centring keeps the Gram-matrix formula accurate
    shifted = VEC_S + 1000.0
    assert rkd_angle(t(shifted), t(VEC_T)).item() == pytest.approx(expected, rel=1e-3)


def test_crd_golden_in_batch_info_nce():
    s, tt = VEC_S, RNG.normal(size=VEC_S.shape)
    scores = np_normalize(s) @ np_normalize(tt).T / 0.07
    expected = (-np.diag(np_log_softmax(scores)) - np.diag(np_log_softmax(scores.T))).mean()
    assert crd(t(s), t(tt)).item() == pytest.approx(expected, rel=1e-5)
    assert crd(t(s), t(tt), nce_t=0.5).item() != pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("eps", [1.0, 1.5])
def test_ofa_golden(eps):
    s, tt = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    target = np.array([0, 3, 1])
    p = np.exp(np_log_softmax(tt))
    log_q = np_log_softmax(s)
    expected = []
    for row, y in enumerate(target):
        value = -((1 + p[row, y]) ** eps - 1) * log_q[row, y]
        value -= sum(p[row, c] ** eps * log_q[row, c] for c in range(4) if c != y)
        expected.append(value)
    got = ofa(t(s), t(tt), torch.tensor(target), eps=eps)
    assert got.item() == pytest.approx(np.mean(expected), rel=1e-5)
    if eps == 1.0:  # cross-entropy with the teacher's distribution
        assert got.item() == pytest.approx(-(p * log_q).sum(-1).mean(), rel=1e-5)


def test_ofa_temperature_without_t_squared():
    s, tt = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3))
    p, log_q = np.exp(np_log_softmax(tt / 2.0)), np_log_softmax(s / 2.0)
    got = ofa(t(s), t(tt), torch.tensor([1, 2]), temperature=2.0)
    assert got.item() == pytest.approx(-(p * log_q).sum(-1).mean(), rel=1e-5)


def np_relation_kl(student, teacher, heads, mask):
    """MiniLMv2's relation loss written out loop by loop: per sample, head and valid query, KL over valid keys."""
    per_sample = []
    for b in range(student.shape[0]):
        valid = np.flatnonzero(mask[b])
        values = []
        for r in range(heads):
            def relation(x):
                d = x.shape[-1] // heads
                part = x[b][valid][:, r * d:(r + 1) * d]
                return np_log_softmax(part @ part.T / math.sqrt(d))
            log_s, log_t = relation(student), relation(teacher)
            values.append((np.exp(log_t) * (log_t - log_s)).sum(-1))  # (valid queries,)
        per_sample.append(np.mean(values))
    return np.array(per_sample)


def test_attention_relation_golden_with_padding_masked():
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    for heads in (1, 3, 12):
        expected = np_relation_kl(REL_S, REL_T, heads, mask)
        got = attention_relation(t(REL_S), t(REL_T), heads=heads, mask=torch.tensor(mask), reduction="none")
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)
    changed_s, changed_t = REL_S.copy(), REL_T.copy()
    changed_s[1, 3:], changed_t[2, 2:] = 100.0, -7.0  # what padding holds does not matter
    np.testing.assert_allclose(attention_relation(t(changed_s), t(changed_t), heads=3, mask=torch.tensor(mask)).item(),
                               np_relation_kl(REL_S, REL_T, 3, mask).mean(), rtol=1e-4)
    wider = torch.tensor(np.concatenate([mask, np.zeros((3, 4), dtype=int)], 1))  # a model trimmed padding columns
    assert attention_relation(t(REL_S), t(REL_T), heads=3, mask=wider).item() == pytest.approx(
        np_relation_kl(REL_S, REL_T, 3, mask).mean(), rel=1e-4)
    assert attention_relation(t(REL_S), t(REL_T), heads=3).item() == pytest.approx(
        np_relation_kl(REL_S, REL_T, 3, np.ones((3, 5))).mean(), rel=1e-4)


def test_attention_relation_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="heads=5 does not divide the student's width 12"):
        attention_relation(t(REL_S), t(REL_T), heads=5)
    with pytest.raises(ValueError, match="differ in length"):
        attention_relation(t(REL_S), t(REL_T[:, :4]))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        attention_relation(t(VEC_S), t(VEC_T))
    with pytest.raises(ValueError, match="a longer mask may only add padding"):
        attention_relation(t(REL_S), t(REL_T), mask=torch.ones(3, 6))


# ----------------------------------------------------------------------------- contracts
ZERO_AT_EQUALITY = ["hint", "cosine", "attention_transfer", "similarity_preserving", "rkd_distance", "rkd_angle",
                    "attention_relation"]


def example(name):
    """(student, teacher, target) inputs each loss accepts."""
    if name in ("hint", "cosine"):
        return t(TOK_S), t(TOK_T), None
    if name == "attention_transfer":
        return t(MAP_S), t(MAP_T), None
    if name == "attention_relation":
        return t(REL_S), t(REL_T), None
    if name == "crd":
        return t(VEC_S), t(RNG.normal(size=VEC_S.shape)), None
    if name == "ofa":
        return t(VEC_S), t(RNG.normal(size=VEC_S.shape)), torch.tensor([0, 1, 2, 0])
    return t(VEC_S), t(VEC_T), None


def test_registry_and_needs_cover_the_same_losses():
    assert set(FEATURE_LOSSES) == set(FEATURE_LOSS_NEEDS)
    assert FEATURE_LOSS_NEEDS["hint"] == {"projector"} and FEATURE_LOSS_NEEDS["rkd_angle"] == set()


@pytest.mark.parametrize("name", sorted(FEATURE_LOSSES))
def test_finite_reductions_and_float32(name):
    student, teacher, target = example(name)
    fn = FEATURE_LOSSES[name]
    value = fn(student.half(), teacher.half(), target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    per_sample = fn(student, teacher, target, reduction="none")
    assert per_sample.shape == (student.shape[0],)
    assert fn(student, teacher, target).item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
    assert fn(student, teacher, target, reduction="sum").item() == pytest.approx(per_sample.sum().item(), rel=1e-5)
    assert fn(student.double(), teacher.double(), target).dtype == torch.float64
    with pytest.raises(ValueError, match="reduction"):
        fn(student, teacher, target, reduction="batchmean")


@pytest.mark.parametrize("name", ZERO_AT_EQUALITY)
def test_zero_when_student_equals_teacher_with_finite_gradient(name):
    student, _, target = example(name)
    student = student.clone().requires_grad_(True)
    value = FEATURE_LOSSES[name](student, student.detach().clone(), target)
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    value.backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("name", sorted(FEATURE_LOSSES))
def test_gradient_reaches_the_student_never_the_teacher(name):
    student_in, teacher_in, target = example(name)
    torch.manual_seed(0)

    def layer(x):  # a 1x1 conv on maps, a linear layer on the last dim otherwise
        return torch.nn.Conv2d(x.shape[1], x.shape[1], 1) if x.dim() == 4 else torch.nn.Linear(x.shape[-1], x.shape[-1])

    student_layer, teacher_layer = layer(student_in), layer(teacher_in)
    s, tt = student_layer(student_in), teacher_layer(teacher_in)
    if name == "crd":
        tt = tt.detach()  # the teacher network is frozen; only a head on top of it may train
    FEATURE_LOSSES[name](s, tt, target).backward()
    assert student_layer.weight.grad is not None and student_layer.weight.grad.abs().sum() > 0
    assert teacher_layer.weight.grad is None


def test_crd_trains_the_teacher_side_head():
    teacher_features = t(RNG.normal(size=(4, 5)))  # from the frozen teacher, no graph
    head = torch.nn.Linear(5, 3)
    crd(t(VEC_S), head(teacher_features)).backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_rkd_gradient_finite_with_duplicate_samples():
    student = t(np.stack([VEC_S[0], VEC_S[0], VEC_S[1], VEC_S[2]])).requires_grad_(True)
    (rkd_distance(student, t(VEC_T)) + rkd_angle(student, t(VEC_T))).backward()
    assert torch.isfinite(student.grad).all()


# ----------------------------------------------------------------------------- errors
def test_elementwise_losses_refuse_unprojected_features():
    with pytest.raises(ValueError, match=r"project the student feature.*build_projector"):
        hint(t(MAP_S), t(MAP_T))
    with pytest.raises(ValueError, match="student"):
        cosine(t(VEC_S), t(VEC_T))


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="batch sizes differ"):
        similarity_preserving(t(VEC_S), t(MAP_T))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        attention_transfer(t(TOK_S), t(TOK_T))
    with pytest.raises(ValueError, match="at least 3"):
        rkd_angle(t(VEC_S[:2]), t(VEC_T[:2]))
    with pytest.raises(ValueError, match="needs target"):
        ofa(t(VEC_S), t(VEC_S))
    with pytest.raises(ValueError, match="same dim"):
        crd(t(VEC_S), t(VEC_T))
    with pytest.raises(ValueError, match="over"):
        cosine(t(TOK_S), t(TOK_T), over="token")
    assert math.isfinite(rkd_distance(t(VEC_S[:2]), t(VEC_T[:2])).item())


@pytest.mark.parametrize("name", sorted(FEATURE_LOSSES))
def test_teacher_features_from_inference_mode_are_accepted(name):
    student, teacher, target = example(name)
    with torch.inference_mode():  # how the managed teacher runs
        teacher = teacher.clone()
    student = student.clone().requires_grad_(True)
    FEATURE_LOSSES[name](student, teacher, target).backward()
    assert torch.isfinite(student.grad).all()
