"""Consistency distillation: boundary condition, scalings as published, EMA, teacher solver, smoke."""
import copy

import pytest
import torch
from torch import nn

from distill.diffusion.consistency import (ConsistencyModel, boundary_scalings, consistency_distillation,
                                           consistency_sample, distance, edm_scalings, multistep_sigmas,
                                           teacher_step)
from distill.diffusion.training import ema_update
from distill.diffusion.samplers import Heun, sample
from distill.diffusion.schedules import CosineSchedule
from distill.diffusion.toy import OracleDenoiser


def test_boundary_condition_is_exact(tiny_teacher):
    teacher, _ = tiny_teacher
    model = ConsistencyModel(copy.deepcopy(teacher), sigma_data=0.5, sigma_min=0.002)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x, 0.002), x)
    assert not torch.equal(model(x, 0.5), x)


def test_scalings_as_published():
    sigma = torch.tensor([0.002, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out = boundary_scalings(sigma, 0.5, 0.002)
    torch.testing.assert_close(c_skip, 0.25 / ((sigma - 0.002) ** 2 + 0.25))
    torch.testing.assert_close(c_out, 0.5 * (sigma - 0.002) / (0.25 + sigma ** 2).sqrt())
    edm_skip, edm_out, c_in, c_noise = edm_scalings(sigma, 0.5)
    torch.testing.assert_close(c_noise, 0.25 * sigma.log())
    torch.testing.assert_close(c_in, 1 / (sigma ** 2 + 0.25).sqrt())
    torch.testing.assert_close(c_skip[1:], edm_skip[1:], rtol=0.01, atol=0)  # they agree away from sigma_min


def test_student_starts_from_the_teacher_and_sees_c_noise(tiny_teacher):
    teacher, _ = tiny_teacher
    model = ConsistencyModel(copy.deepcopy(teacher), sigma_data=1.0)
    x, sigma = torch.randn(8, 2), torch.full((8,), 5.0)
    alpha = 1 / (1 + 25.0) ** 0.5  # cosine VP: x_t = alpha * x_karras
    t = teacher.schedule.t_from_karras_sigma(sigma)
    v = teacher(alpha * x, t)
    torch.testing.assert_close(model.edm_output(x, sigma), -v, rtol=1e-4, atol=1e-5)  # F = -v at sigma_data = 1
    denoised = teacher.predict(alpha * x, t).x0
    assert (model(x, sigma) - denoised).abs().max() < 0.01 * (1 + denoised.abs().max())


def test_ema_update():
    target, online = nn.Linear(2, 2), nn.Linear(2, 2)
    before = target.weight.detach().clone()
    ema_update(target, online, 0.9)
    torch.testing.assert_close(target.weight, 0.9 * before + 0.1 * online.weight)
    ema_update(target, online, 0.0)
    assert torch.equal(target.weight, online.weight)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ema_update(target, online, 1.5)


def test_teacher_heun_step_follows_the_ode():
    oracle = OracleDenoiser(CosineSchedule())
    x_karras = 3.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma, sigma_next = torch.full((64,), 3.0, dtype=torch.float64), torch.full((64,), 2.8, dtype=torch.float64)
    schedule = oracle.schedule
    t0, t1 = schedule.t_from_karras_sigma(torch.tensor(3.0, dtype=torch.float64)), schedule.t_from_karras_sigma(torch.tensor(2.8, dtype=torch.float64))
    sampler = Heun(schedule, 200, timesteps=torch.linspace(float(t0), float(t1), 201))
    alpha0, _ = schedule.alpha_sigma(t0)
    alpha1, _ = schedule.alpha_sigma(t1)
    x = alpha0 * x_karras
    for index in range(200):
        x = sampler.step(oracle, x, index)
    exact = x / alpha1
    heun = teacher_step(oracle, x_karras, sigma, sigma_next, "heun")
    ddim = teacher_step(oracle, x_karras, sigma, sigma_next, "ddim")
    assert (heun - exact).abs().max() < 5e-4 < 1e-3 < (ddim - exact).abs().max()


def test_distances():
    a, b = torch.zeros(2, 4), torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(distance(a, b, "l2"), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(distance(a, b, "l1"), torch.tensor([0.0, 1.0]))
    c = 0.00054 * 2
    torch.testing.assert_close(distance(a, b, "pseudo_huber"), torch.tensor([0.0, (4 + c * c) ** 0.5 - c]))
    with pytest.raises(ValueError, match="pseudo_huber"):
        distance(a, b, "huber")


@pytest.mark.parametrize("solver,kind,mu", [("heun", "pseudo_huber", 0.95), ("ddim", "l1", 0.0)])
def test_two_step_smoke_and_sampling(tiny_teacher, solver, kind, mu):
    teacher, data = tiny_teacher
    model, history = consistency_distillation(teacher, data, num_steps=2, batch_size=16, solver=solver, kind=kind,
                                              mu=mu, progress=False)
    assert len(history["losses"]) == 2 and all(torch.isfinite(torch.tensor(history["losses"])))
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        one = consistency_sample(model, noise, 1)
        two = consistency_sample(model, noise, 2, generator=torch.Generator().manual_seed(1))
    assert one.shape == two.shape == (8, 2) and torch.isfinite(two).all()
    assert multistep_sigmas(2)[0] == pytest.approx(80.0) and 0.002 < multistep_sigmas(2)[1] < 80.0
