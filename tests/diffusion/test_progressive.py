"""Progressive distillation: the two-step target is exact, and one round on the oracle halves the steps."""
import pytest
import torch

from distill.diffusion.denoiser import Denoiser, broadcast_to
from distill.diffusion.progressive import distill_round, init_student, progressive_distillation, progressive_target
from distill.diffusion.samplers import DDIM, ddim_step, sample
from distill.diffusion.schedules import CosineSchedule
from distill.diffusion.toy import OracleDenoiser, sample_mixture
from distill.models.unet import TimeMLP


def test_one_student_step_on_the_target_equals_two_teacher_steps():
    oracle = OracleDenoiser(CosineSchedule())
    num_student_steps = 4
    generator = torch.Generator().manual_seed(0)
    z_t = torch.randn(64, 2, generator=generator, dtype=torch.float64)
    for index in range(num_student_steps, 0, -1):
        t = torch.full((64,), index / num_student_steps, dtype=torch.float64)
        target = progressive_target(oracle, z_t, t, num_student_steps)
        alpha, sigma = oracle.schedule.alpha_sigma(t)
        alpha_next, sigma_next = oracle.schedule.alpha_sigma(t - 1 / num_student_steps)
        eps = (z_t - broadcast_to(alpha, z_t) * target) / broadcast_to(sigma, z_t)
        student_step = broadcast_to(alpha_next, z_t) * target + broadcast_to(sigma_next, z_t) * eps
        teacher = DDIM(oracle.schedule, 2 * num_student_steps)
        k = 2 * (num_student_steps - index)
        two_steps = teacher.step(oracle, teacher.step(oracle, z_t, k), k + 1)
        torch.testing.assert_close(student_step, two_steps)


def test_the_second_teacher_call_is_at_t_prime_not_t_double_prime():
    """The known mix-up (evaluating the teacher at t'' from z_t') gives a different target."""
    oracle, schedule = OracleDenoiser(CosineSchedule()), CosineSchedule()
    z_t = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.full((32,), 0.5, dtype=torch.float64)
    right = progressive_target(oracle, z_t, t, 2)
    a_mid, s_mid = schedule.alpha_sigma(t - 0.25)
    a_next, s_next = schedule.alpha_sigma(t - 0.5)
    z_mid = ddim_step(oracle.predict(z_t, t), z_t, a_mid, s_mid)
    z_wrong = ddim_step(oracle.predict(z_mid, t - 0.5), z_mid, a_next, s_next)
    alpha, sigma = schedule.alpha_sigma(t)
    ratio = broadcast_to(s_next / sigma, z_t)
    wrong = (z_wrong - ratio * z_t) / (broadcast_to(a_next, z_t) - ratio * broadcast_to(alpha, z_t))
    assert (right - wrong).abs().max() > 1e-2


def test_one_round_on_the_oracle_halves_the_steps_with_small_error():
    torch.manual_seed(0)
    schedule = CosineSchedule()
    oracle = OracleDenoiser(schedule)
    data = sample_mixture(4000, torch.Generator().manual_seed(3))
    student = Denoiser(TimeMLP((2,), hidden=64, depth=2), schedule, "v")
    history = distill_round(oracle, student, data, 2, num_steps=400, batch_size=128, lr=3e-3, progress=False)
    assert history["losses"][-1] < history["losses"][0] / 20
    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        teacher_4 = sample(DDIM(schedule, 4), oracle, noise)
        teacher_2 = sample(DDIM(schedule, 2), oracle, noise)
        student_2 = sample(DDIM(schedule, 2), student, noise)
    teacher_gap = (teacher_2 - teacher_4).norm(dim=1).mean()
    student_gap = (student_2 - teacher_4).norm(dim=1).mean()
    assert teacher_gap > 0.4  # halving the teacher's steps costs a lot ...
    assert student_gap < teacher_gap / 5  # ... and the student recovers most of it


def test_rounds_halve_and_students_start_from_the_teacher(tiny_teacher):
    teacher, data = tiny_teacher
    students, history = progressive_distillation(teacher, data, start_steps=4, end_steps=1, num_steps_per_round=2,
                                                 batch_size=16, progress=False)
    assert sorted(students) == [1, 2] and [h["num_student_steps"] for h in history] == [2, 1]
    assert not any(p.requires_grad for p in students[1].parameters())
    copy = init_student(teacher)
    x = torch.randn(4, 2)
    torch.testing.assert_close(copy.predict(x, 0.5).x0, teacher.predict(x, 0.5).x0)


def test_refuses_eps_teachers_and_bad_step_counts(tiny_teacher):
    teacher, data = tiny_teacher
    eps_teacher = Denoiser(TimeMLP((2,)), CosineSchedule(), "eps")
    with pytest.raises(ValueError, match="v-parameterised teacher"):
        init_student(eps_teacher)
    with pytest.raises(ValueError, match="power of two"):
        progressive_distillation(teacher, data, start_steps=6)
