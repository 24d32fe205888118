"""Logit losses: golden values from independent numpy formulas, and a contract over the registry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.losses import LOGIT_LOSSES, LOSS_NEEDS, jsd, kl, mse, reverse_kl, skew_kl, skew_reverse_kl
from np_reference import np_kl, np_softmax

ALL = sorted(LOGIT_LOSSES)
PER_POSITION = [name for name in ALL if name != "dist"]  # dist is a batch statistic
ZERO_AT_EQUALITY = [name for name in ALL if name != "cross_entropy"]


# ----------------------------------------------------------------------------- numpy references


STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [0.5, 0.5, -0.5]]
TARGET = [1, 2]
TEMP = 2.0


def np_dkd(s, t, y, temperature, alpha, beta):
    p, q = np_softmax(t, temperature), np_softmax(s, temperature)
    total = []
    for row, cls in enumerate(y):
        pt, qt = p[row, cls], q[row, cls]
        tckd = pt * math.log(pt / qt) + (1 - pt) * math.log((1 - pt) / (1 - qt))
        others = [c for c in range(p.shape[1]) if c != cls]
        nckd = np_kl(p[row, others] / (1 - pt), q[row, others] / (1 - qt))
        total.append(alpha * tckd + beta * nckd)
    return temperature**2 * np.mean(total)


def np_dist(s, t, temperature):
    p, q = np_softmax(t, temperature), np_softmax(s, temperature)
    inter = np.mean([1 - np.corrcoef(q[i], p[i])[0, 1] for i in range(p.shape[0])])
    intra = np.mean([1 - np.corrcoef(q[:, c], p[:, c])[0, 1] for c in range(p.shape[1])])
    return temperature**2 * (inter + intra)


def golden(name):
    s, t, y = np.array(STUDENT), np.array(TEACHER), np.array(TARGET)
    p, q = np_softmax(t, TEMP), np_softmax(s, TEMP)
    if name == "kl":
        return {}, TEMP**2 * np_kl(p, q).mean()
    if name == "reverse_kl":
        return {}, TEMP**2 * np_kl(q, p).mean()
    if name == "jsd":
        m = 0.3 * p + 0.7 * q
        return {"beta": 0.3}, TEMP**2 * (0.3 * np_kl(p, m) + 0.7 * np_kl(q, m)).mean()
    if name == "skew_kl":
        return {"alpha": 0.2}, TEMP**2 * np_kl(p, 0.2 * p + 0.8 * q).mean()
    if name == "skew_reverse_kl":
        return {"alpha": 0.2}, TEMP**2 * np_kl(q, 0.2 * q + 0.8 * p).mean()
    if name == "tvd":
        return {}, TEMP**2 * (0.5 * np.abs(p - q).sum(-1)).mean()
    if name == "dkd":
        return {"alpha": 0.7, "beta": 8.0}, np_dkd(s, t, y, TEMP, 0.7, 8.0)
    if name == "mse":
        return {}, ((s - t) ** 2).mean()
    if name == "cosine_distance":
        cos = (s * t).sum(-1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
        return {}, (1 - cos).mean()
    if name == "cross_entropy":
        log_q = np.log(np_softmax(s))
        eps = 0.1
        per_row = [-(1 - eps) * log_q[i, y[i]] - eps / 3 * log_q[i].sum() for i in range(2)]
        return {"label_smoothing": eps, "temperature": 1.0}, np.mean(per_row)
    raise AssertionError(name)


@pytest.mark.parametrize("name", PER_POSITION)
def test_golden_values(name):
    params, expected = golden(name)
    params = {"temperature": TEMP, **params}
    value = LOGIT_LOSSES[name](torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(TARGET), **params)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_dist_golden_value():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.3, 0.1, -0.2], [2.0, 1.0, 0.0]]
    teacher = [[2.0, 0.0, 1.0], [0.5, 0.5, -0.5], [1.0, -1.0, 0.0], [0.0, 3.0, 1.0]]
    value = LOGIT_LOSSES["dist"](torch.tensor(student), torch.tensor(teacher), temperature=TEMP)
    assert value.item() == pytest.approx(np_dist(np.array(student), np.array(teacher), TEMP), rel=1e-5)


def test_kl_by_hand():
    # q = [1/2, 1/2], p = [1/4, 3/4]: KL = 1/4 log(1/2) + 3/4 log(3/2)
    value = kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]]))
    assert value.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)


def test_kl_matches_torch_kl_div_batchmean():
    torch.manual_seed(0)
    student, teacher, temperature = torch.randn(5, 7), torch.randn(5, 7) * 2, 3.0
    expected = F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                        log_target=True, reduction="batchmean") * temperature**2
    torch.testing.assert_close(kl(student, teacher, temperature=temperature), expected)


def test_kl_temperature_is_t_squared_times_softened_kl():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 6), torch.randn(4, 6)
    for temperature in (0.5, 1.0, 4.0):
        p = np_softmax(teacher.numpy(), temperature)
        q = np_softmax(student.numpy(), temperature)
        expected = temperature**2 * np_kl(p, q).mean()
        assert kl(student, teacher, temperature=temperature).item() == pytest.approx(expected, rel=1e-5)


def test_mse_ignores_temperature_and_matches_mse_loss():
    torch.manual_seed(2)
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(mse(student, teacher, temperature=5.0), F.mse_loss(student, teacher))


def test_cross_entropy_mask_matches_ignore_index():
    torch.manual_seed(3)
    student, target = torch.randn(6, 4), torch.tensor([0, -100, 3, 2, -100, 1])
    value = LOGIT_LOSSES["cross_entropy"](student, None, target, mask=target != -100, label_smoothing=0.2)
    torch.testing.assert_close(value, F.cross_entropy(student, target, ignore_index=-100, label_smoothing=0.2))


# ----------------------------------------------------------------------------- contract
def make_inputs(seed=0, shape=(6, 5), scale=2.0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    student = (torch.randn(*shape, generator=generator) * scale).to(dtype)
    teacher = (torch.randn(*shape, generator=generator) * scale).to(dtype)
    target = torch.randint(0, shape[-1], shape[:-1], generator=generator)
    return student, teacher, target


@pytest.mark.parametrize("name", ALL)
def test_finite_and_nonnegative(name):
    for seed in range(3):
        for temperature in ((1.0,) if name == "cross_entropy" else (1.0, 4.0)):
            value = LOGIT_LOSSES[name](*make_inputs(seed), temperature=temperature)
            assert torch.isfinite(value) and value.item() >= 0.0


@pytest.mark.parametrize("name", ZERO_AT_EQUALITY)
def test_zero_when_student_equals_teacher(name):
    student, _, target = make_inputs(4)
    value = LOGIT_LOSSES[name](student, student.clone(), target)
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    assert LOGIT_LOSSES[name](*make_inputs(4)).item() > 1e-3  # and not zero otherwise


@pytest.mark.parametrize("name", ALL)
def test_mask_ignores_garbage_and_averages_kept_rows(name):
    student, teacher, target = make_inputs(5)
    mask = torch.tensor([True, False, True, True, False, True])
    bad_student, bad_teacher, bad_target = student.clone(), teacher.clone(), target.clone()
    bad_student[~mask], bad_teacher[~mask], bad_target[~mask] = float("nan"), float("inf"), -100
    bad_student.requires_grad_(True)
    loss = LOGIT_LOSSES[name](bad_student, bad_teacher, bad_target, mask=mask)
    kept = LOGIT_LOSSES[name](student[mask], teacher[mask], target[mask])
    torch.testing.assert_close(loss, kept)
    loss.backward()
    assert torch.isfinite(bad_student.grad).all() and (bad_student.grad[~mask] == 0).all()
    if name in PER_POSITION:
        per_position = LOGIT_LOSSES[name](bad_student, bad_teacher, bad_target, mask=mask, reduction="none")
        assert per_position.shape == mask.shape and (per_position[~mask] == 0).all()
        torch.testing.assert_close(per_position[mask], LOGIT_LOSSES[name](
            student[mask], teacher[mask], target[mask], reduction="none"))


@pytest.mark.parametrize("name", ALL)
def test_sum_is_mean_times_valid_count(name):
    inputs, mask = make_inputs(6), torch.tensor([True, True, False, True, False, True])
    mean = LOGIT_LOSSES[name](*inputs, mask=mask)
    torch.testing.assert_close(LOGIT_LOSSES[name](*inputs, mask=mask, reduction="sum"), mean * 4)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_float32(name, dtype):
    student, teacher, target = make_inputs(7, dtype=dtype)
    value = LOGIT_LOSSES[name](student, teacher, target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, LOGIT_LOSSES[name](student.float(), teacher.float(), target))


@pytest.mark.parametrize("name", ALL)
def test_student_gets_gradient_teacher_none(name):
    student, teacher, target = make_inputs(8)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    LOGIT_LOSSES[name](student, teacher, target).backward()
    assert teacher.grad is None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_tokens_with_mask(name):
    student, teacher, target = make_inputs(9, shape=(2, 4, 5))
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    value = LOGIT_LOSSES[name](student, teacher, target, mask=mask)
    torch.testing.assert_close(value, LOGIT_LOSSES[name](student[mask], teacher[mask], target[mask]))
    if name in PER_POSITION:
        assert LOGIT_LOSSES[name](student, teacher, target, mask=mask, reduction="none").shape == (2, 4)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd", "dkd", "dist"])
def test_minus_inf_logits_in_both_models(name):
    """A class at -inf in both (masked vocabulary) has probability 0: no NaN, value unchanged."""
    student, teacher, target = make_inputs(10)
    target = target.clamp(max=3)
    student, teacher = student.clone(), teacher.clone()
    student[:, 4], teacher[:, 4] = -math.inf, -math.inf
    student.requires_grad_(True)
    value = LOGIT_LOSSES[name](student, teacher, target, temperature=2.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    if name != "dist":  # dist's Pearson over classes sees the extra zero entry
        dropped = LOGIT_LOSSES[name](student[:, :4].detach(), teacher[:, :4], target, temperature=2.0)
        torch.testing.assert_close(value, dropped)


def test_registry_needs():
    assert set(LOSS_NEEDS) == set(LOGIT_LOSSES)
    assert LOSS_NEEDS["dkd"] == {"teacher", "target"} and LOSS_NEEDS["cross_entropy"] == {"target"}
    student, teacher, target = make_inputs(11)
    for name, fn in LOGIT_LOSSES.items():
        for need, argument, call in (("teacher", "teacher_logits", lambda: fn(student, None, target)),
                                     ("target", "target", lambda: fn(student, teacher, None))):
            if need in LOSS_NEEDS[name]:
                with pytest.raises(ValueError, match=f"{name} needs {argument}"):
                    call()
            else:
                assert torch.isfinite(call())


@pytest.mark.parametrize("call, message", [
    (lambda s, t, y: kl(s, t, reduction="batchmean"), "'mean', 'sum', 'none'"),
    (lambda s, t, y: kl(s, t, temperature=0.0), "temperature must be > 0"),
    (lambda s, t, y: kl(s, t[:, :3]), r"\(6, 5\) != teacher_logits shape \(6, 3\)"),
    (lambda s, t, y: kl(s, t, mask=torch.ones(6)), "mask must be a bool"),
    (lambda s, t, y: jsd(s, t, beta=1.5), r"beta must be in \[0, 1\]"),
    (lambda s, t, y: skew_kl(s, t, alpha=-0.1), r"alpha must be in \[0, 1\]"),
    (lambda s, t, y: LOGIT_LOSSES["cross_entropy"](s, None, y, temperature=2.0), "temperature must be 1.0"),
    (lambda s, t, y: LOGIT_LOSSES["cross_entropy"](s, None, y.float()), "target must be integer"),
    (lambda s, t, y: LOGIT_LOSSES["dkd"](s, t, y + 5), "outside"),
    (lambda s, t, y: LOGIT_LOSSES["dist"](s, t, reduction="none"), "not meaningful"),
])
def test_loud_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(*make_inputs(12))


# ----------------------------------------------------------------------------- jsd and skew
def entropy_bound(beta):
    return -sum(w * math.log(w) for w in (beta, 1 - beta) if w > 0)


@pytest.mark.parametrize("beta", [0.05, 0.3, 0.5, 0.9])
def test_jsd_bounds(beta):
    for seed in range(3):
        student, teacher, _ = make_inputs(seed, shape=(32, 8), scale=10.0)  # near-disjoint rows too
        values = jsd(student, teacher, beta=beta, reduction="none")
        assert (values >= 0).all() and (values <= entropy_bound(beta) + 1e-5).all()
        assert values.max() > 0.5 * entropy_bound(beta)  # the bound is approached, so it is tight


def test_jsd_is_continuous_and_zero_at_both_ends():
    student, teacher, _ = make_inputs(13)
    for end, near in ((0.0, 1e-6), (1.0, 1 - 1e-6)):
        assert jsd(student, teacher, beta=end).item() == 0.0
        assert jsd(student, teacher, beta=near).item() == pytest.approx(0.0, abs=1e-4)


def test_jsd_over_beta_tends_to_forward_kl_and_reverse_kl():
    student, teacher, _ = make_inputs(14, dtype=torch.float64)
    student = student / 4  # a flat student and a sharp teacher: forward and reverse KL differ
    forward, reverse, eps = kl(student, teacher), reverse_kl(student, teacher), 1e-4
    assert abs(forward - reverse) > 0.2 * forward
    torch.testing.assert_close(jsd(student, teacher, beta=eps) / eps, forward, rtol=1e-2, atol=0)
    torch.testing.assert_close(jsd(student, teacher, beta=1 - eps) / eps, reverse, rtol=1e-2, atol=0)


def test_skew_ends():
    student, teacher, _ = make_inputs(15)
    torch.testing.assert_close(skew_kl(student, teacher, alpha=0.0), kl(student, teacher))
    torch.testing.assert_close(skew_reverse_kl(student, teacher, alpha=0.0), reverse_kl(student, teacher))
    assert skew_kl(student, teacher, alpha=1.0).item() == 0.0
    assert skew_reverse_kl(student, teacher, alpha=1.0).item() == 0.0
