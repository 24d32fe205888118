"""Sparse top-k teacher: parity with the dense loss at k = C, numpy references at k < C, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill.losses import LOGIT_LOSSES, SPARSE_TEACHER_LOSSES, SparseTeacher, cross_entropy, kl
from np_reference import np_kl, np_softmax

PARAMS = {"jsd": {"beta": 0.3}, "skew_kl": {"alpha": 0.2}, "skew_reverse_kl": {"alpha": 0.2}}
MODES = ("renormalized", "tail")


def make(shape=(6, 5), seed=0, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale, torch.randn(*shape, generator=generator) * scale)


def loss(name, student, teacher, **kwargs):
    return LOGIT_LOSSES[name](student, teacher, **PARAMS.get(name, {}), **kwargs)


# ----------------------------------------------------------------------------- k = C is the dense loss
@pytest.mark.parametrize("name", SPARSE_TEACHER_LOSSES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 7)])
def test_k_equal_c_equals_dense(name, mode, shape):
    student, teacher = make(shape, seed=len(shape))
    mask = torch.rand(shape[:-1], generator=torch.Generator().manual_seed(1)) > 0.3
    for temperature in (1.0, 3.0):
        sparse = SparseTeacher.from_dense(teacher, shape[-1], mode=mode, temperature=temperature)
        assert torch.isneginf(sparse.log_tail).all()
        for kwargs in ({}, {"mask": mask}, {"mask": mask, "reduction": "none"}, {"reduction": "sum"}):
            dense_value = loss(name, student, teacher, temperature=temperature, **kwargs)
            sparse_value = loss(name, student, sparse, temperature=temperature, **kwargs)
            torch.testing.assert_close(sparse_value, dense_value, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SPARSE_TEACHER_LOSSES)
@pytest.mark.parametrize("mode", MODES)
def test_k_equal_c_gradient_equals_dense(name, mode):
    student, teacher = make((4, 6), seed=3)
    grads = []
    for target in (teacher, SparseTeacher.from_dense(teacher, 6, mode=mode, temperature=2.0)):
        leaf = student.clone().requires_grad_(True)
        loss(name, leaf, target, temperature=2.0).backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- k < C against numpy


def np_divergence(name, p, q):
    if name == "kl":
        return np_kl(p, q)
    if name == "reverse_kl":
        return np_kl(q, p)
    if name == "jsd":
        m = 0.3 * p + 0.7 * q
        return 0.3 * np_kl(p, m) + 0.7 * np_kl(q, m)
    if name == "skew_kl":
        return np_kl(p, 0.2 * p + 0.8 * q)
    if name == "skew_reverse_kl":
        return np_kl(q, 0.2 * q + 0.8 * p)
    if name == "tvd":
        return 0.5 * np.abs(p - q).sum(-1)
    raise AssertionError(name)


STUDENT = [[1.0, 2.0, 0.5, -1.0, 0.0], [0.0, -1.0, 3.0, 1.5, 0.2]]
TEACHER = [[2.0, 0.0, 1.0, -0.5, 0.7], [0.5, 0.4, -0.5, 2.5, 1.0]]
TOP2 = [[0, 2], [3, 4]]  # the teacher's two largest logits per row, by hand


def np_buckets(mode, temperature):
    """Teacher and student distributions over the buckets, from the full softmaxes."""
    p, q = np_softmax(TEACHER, temperature), np_softmax(STUDENT, temperature)
    rows = np.arange(2)[:, None]
    p_top, q_top = p[rows, TOP2], q[rows, TOP2]
    if mode == "renormalized":
        return p_top / p_top.sum(-1, keepdims=True), q_top / q_top.sum(-1, keepdims=True)
    return (np.concatenate([p_top, 1 - p_top.sum(-1, keepdims=True)], -1),
            np.concatenate([q_top, 1 - q_top.sum(-1, keepdims=True)], -1))


def test_from_dense_matches_numpy():
    sparse = SparseTeacher.from_dense(torch.tensor(TEACHER), 2, mode="tail", temperature=2.0)
    assert sparse.indices.tolist() == TOP2 and sparse.indices.dtype == torch.int64
    np.testing.assert_allclose(sparse.values.numpy(), np.take_along_axis(np.array(TEACHER), np.array(TOP2), -1))
    p = np_softmax(TEACHER, 2.0)
    tail = np.array([p[0, [1, 3, 4]].sum(), p[1, [0, 1, 2]].sum()])
    np.testing.assert_allclose(sparse.log_tail.numpy(), np.log(tail), rtol=1e-6)
    assert sparse.tail_temperature == 2.0 and sparse.mode == "tail"


@pytest.mark.parametrize("name", SPARSE_TEACHER_LOSSES)
@pytest.mark.parametrize("mode", MODES)
def test_top_k_against_numpy(name, mode):
    temperature = 2.0
    p, q = np_buckets(mode, temperature)
    expected = temperature**2 * np_divergence(name, p, q)
    for dtype, rtol, atol in ((torch.float64, 1e-10, 1e-13), (torch.float32, 1e-4, 1e-6)):
        sparse = SparseTeacher.from_dense(torch.tensor(TEACHER, dtype=dtype), 2, mode=mode, temperature=temperature)
        value = loss(name, torch.tensor(STUDENT, dtype=dtype), sparse, temperature=temperature, reduction="none")
        assert value.dtype == dtype
        np.testing.assert_allclose(value.numpy(), expected, rtol=rtol, atol=atol)


def test_renormalized_works_at_any_temperature_tail_refuses_another():
    sparse = SparseTeacher.from_dense(torch.tensor(TEACHER, dtype=torch.float64), 2, temperature=2.0)
    p, q = np_buckets("renormalized", 4.0)
    value = kl(torch.tensor(STUDENT, dtype=torch.float64), sparse, temperature=4.0)
    assert value.item() == pytest.approx(16 * np_kl(p, q).mean(), rel=1e-10)
    with pytest.raises(ValueError, match=r"stored at T=2\.0 but the loss asks for T=4\.0"):
        kl(torch.tensor(STUDENT), sparse.with_mode("tail"), temperature=4.0)


@pytest.mark.parametrize("mode", MODES)
def test_zero_when_student_equals_teacher(mode):
    student, _ = make((5, 9), seed=4)
    sparse = SparseTeacher.from_dense(student, 3, mode=mode, temperature=2.0)
    for name in SPARSE_TEACHER_LOSSES:
        assert loss(name, student, sparse, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_tail_mode_is_stable_for_extreme_logits():
    # row 0: the student puts all its mass outside the teacher's top-2 (tail ~ 1, top-k ~ e^-1000);
    # row 1: the student puts all its mass inside (its tail ~ e^-1000, where 1 - sum(top-k) = 0)
    student = torch.tensor([[-1000.0, 1000.0, -1000.0, 0.0], [1000.0, -1000.0, 990.0, -1000.0]], dtype=torch.float64)
    teacher = torch.tensor([[5.0, 0.0, 4.0, -2.0], [5.0, 0.0, 4.0, -2.0]], dtype=torch.float64)
    sparse = SparseTeacher.from_dense(teacher, 2, mode="tail")
    log_q_full = student - torch.logsumexp(student, -1, keepdim=True)
    others = torch.tensor([[1, 3], [1, 3]])
    log_q = torch.cat([log_q_full[:, [0, 2]], torch.logsumexp(log_q_full.gather(-1, others), -1, keepdim=True)], -1)
    log_p_full = torch.log_softmax(teacher, -1)
    log_p = torch.cat([log_p_full[:, [0, 2]], torch.logsumexp(log_p_full.gather(-1, others), -1, keepdim=True)], -1)
    expected_kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    expected_reverse = (log_q.exp() * (log_q - log_p)).sum(-1)
    for name, expected in (("kl", expected_kl), ("reverse_kl", expected_reverse)):
        for dtype in (torch.float64, torch.float32):
            leaf = student.detach().to(dtype).clone().requires_grad_(True)
            value = LOGIT_LOSSES[name](leaf, sparse, reduction="none")
            assert torch.isfinite(value).all(), (name, dtype, value)
            torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-5)
            value.sum().backward()
            assert torch.isfinite(leaf.grad).all()
    assert expected_kl[0] > 900 and torch.isfinite(expected_reverse).all()


@pytest.mark.parametrize("name", SPARSE_TEACHER_LOSSES)
@pytest.mark.parametrize("mode", MODES)
def test_student_only_gradient_and_mask_garbage(name, mode):
    student, teacher = make((6, 7), seed=5)
    sparse = SparseTeacher.from_dense(teacher, 3, mode=mode)
    mask = torch.tensor([True, False, True, True, False, True])
    values = sparse.values.clone()
    values[~mask] = float("nan")
    indices = sparse.indices.clone()
    indices[~mask] = -1
    log_tail = sparse.log_tail.clone()
    log_tail[~mask] = float("inf")
    values.requires_grad_(True)
    bad = SparseTeacher(values, indices, log_tail, 1.0, mode)
    bad_student = student.clone()
    bad_student[~mask] = float("nan")
    bad_student.requires_grad_(True)
    value = loss(name, bad_student, bad, mask=mask)
    kept = SparseTeacher(sparse.values[mask], sparse.indices[mask], sparse.log_tail[mask], 1.0, mode)
    torch.testing.assert_close(value, loss(name, student[mask], kept))
    value.backward()
    assert values.grad is None
    assert torch.isfinite(bad_student.grad).all() and (bad_student.grad[~mask] == 0).all()
    assert bad_student.grad[mask].abs().sum() > 0


def test_low_precision_values_and_small_index_dtypes():
    student, teacher = make((4, 10), seed=6)
    sparse = SparseTeacher.from_dense(teacher, 4, mode="tail")
    reference = kl(student, sparse)
    for dtype in (torch.float16, torch.bfloat16):
        cheap = SparseTeacher(sparse.values.to(dtype), sparse.indices.to(torch.uint8), sparse.log_tail.to(dtype), 1.0, "tail")
        assert cheap.indices.dtype == torch.int64
        value = kl(student.to(dtype), cheap)
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, reference, rtol=5e-2, atol=5e-2)
    int16 = SparseTeacher(sparse.values, sparse.indices.to(torch.int16), sparse.log_tail, 1.0, "tail")
    torch.testing.assert_close(kl(student, int16), reference)


@pytest.mark.parametrize("name", ["dkd", "dist", "mse"])
def test_dense_only_losses_refuse_sparse(name):
    student, teacher = make((4, 5), seed=7)
    sparse = SparseTeacher.from_dense(teacher, 3)
    with pytest.raises(ValueError, match=rf"{name} needs dense teacher_logits.*SparseTeacher"):
        LOGIT_LOSSES[name](student, sparse, torch.zeros(4, dtype=torch.long))


def test_cross_entropy_ignores_sparse_teacher():
    student, teacher = make((4, 5), seed=8)
    target = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(cross_entropy(student, SparseTeacher.from_dense(teacher, 2), target),
                               cross_entropy(student, None, target))


def test_invalid_sparse_teachers():
    student, teacher = make((4, 5), seed=9)
    sparse = SparseTeacher.from_dense(teacher, 3)
    with pytest.raises(ValueError, match="positions"):
        kl(student[:3], sparse)
    with pytest.raises(ValueError, match=r"k=3 > C=2"):
        kl(student[:, :2], sparse)
    bad = SparseTeacher(sparse.values, sparse.indices.clone().fill_(5), sparse.log_tail, 1.0)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        kl(student, bad)
    with pytest.raises(ValueError, match="mode='tail' needs log_tail"):
        SparseTeacher(sparse.values, sparse.indices, mode="tail")
    with pytest.raises(ValueError, match="mode="):
        SparseTeacher(sparse.values, sparse.indices, mode="topk")
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\]"):
        SparseTeacher.from_dense(teacher, 6)
    with pytest.raises(ValueError, match="indices shape"):
        SparseTeacher(sparse.values, sparse.indices[:, :2])
    assert math.isclose(SparseTeacher.from_dense(teacher, 5, temperature=3.0).tail_temperature, 3.0)
