"""ODE-pair regression smoke test, and the metrics against independent formulas."""
import numpy as np
import pytest
import scipy.linalg
import torch

from distill.diffusion.metrics import distance_to_teacher, frechet_distance, mmd2, sliced_wasserstein, time_per_sample
from distill.diffusion.regression import ode_pairs, regression_distillation
from distill.diffusion.samplers import DDIM, sample


def test_ode_pairs_are_the_teacher_samples(tiny_teacher):
    teacher, _ = tiny_teacher
    noise = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    states, times, endpoints = ode_pairs(teacher, noise, teacher_steps=8, max_student_steps=4)
    assert states.shape == (10, 4, 2) and times.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25])
    with torch.no_grad():
        torch.testing.assert_close(endpoints, sample(DDIM(teacher.schedule, 8), teacher, noise))
    torch.testing.assert_close(states[:, 0], DDIM(teacher.schedule, 8).init_noise(noise))


def test_regression_two_step_smoke(tiny_teacher):
    teacher, _ = tiny_teacher
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    student, history = regression_distillation(teacher, noise, teacher_steps=4, max_student_steps=2, num_steps=2,
                                               batch_size=8, progress=False)
    assert len(history["losses"]) == 2 and history["seconds"] >= history["pairs_seconds"] > 0
    assert not any(p.requires_grad for p in student.parameters())


def test_frechet_distance_matches_scipy_sqrtm():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(300, 5, generator=generator, dtype=torch.float64) @ torch.randn(5, 5, generator=generator, dtype=torch.float64) + 1.0
    mu_x, mu_y = x.mean(0).numpy(), y.mean(0).numpy()
    cov_x, cov_y = np.cov(x.numpy().T), np.cov(y.numpy().T)
    expected = ((mu_x - mu_y) ** 2).sum() + np.trace(cov_x + cov_y - 2 * scipy.linalg.sqrtm(cov_x @ cov_y).real)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_mmd_and_sliced_wasserstein_separate_distributions():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 3, generator=generator), torch.randn(400, 3, generator=generator)
    shifted = b + torch.tensor([1.0, 0.0, 0.0])
    assert abs(mmd2(a, b)) < 0.01 < mmd2(a, shifted)
    # a shift by 1 along one axis: E over random directions of (theta_1)^2 is 1/3, so SW_2 ~ sqrt(1/3)
    assert sliced_wasserstein(a, b) < 0.15
    assert sliced_wasserstein(a, shifted) == pytest.approx(3 ** -0.5, abs=0.1)


def test_distance_to_teacher_and_timing():
    a = torch.zeros(4, 1, 2, 2)
    assert distance_to_teacher(a, a + 2.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="one shape"):
        distance_to_teacher(a, torch.zeros(4, 4))
    calls = []
    assert time_per_sample(lambda: calls.append(1), batch_size=8, repeats=3, warmup=2) >= 0
    assert len(calls) == 5
