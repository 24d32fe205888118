"""Schedules against closed forms, and the conversions between alpha/sigma, logSNR and Karras sigma."""
import math

import pytest
import torch

from distill.diffusion.schedules import (CosineSchedule, EDMSchedule, FlowSchedule, LinearSchedule, build_schedule,
                                         karras_grid, karras_sigma_from_logsnr, vp_alpha_sigma_from_logsnr)

T = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)
ALL = [CosineSchedule(), LinearSchedule(), EDMSchedule(), FlowSchedule()]


def test_cosine_is_cos_sin_of_half_pi_t():
    alpha, sigma = CosineSchedule().alpha_sigma(T)  # truncation at +-20 moves it by < 1e-4
    torch.testing.assert_close(alpha, torch.cos(math.pi / 2 * T), atol=1e-4, rtol=0)
    torch.testing.assert_close(sigma, torch.sin(math.pi / 2 * T), atol=1e-4, rtol=0)


def test_cosine_truncation_endpoints():
    schedule = CosineSchedule(-15.0, 12.0)
    ends = schedule.logsnr(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([12.0, -15.0], dtype=torch.float64))


def test_linear_matches_ddpm_cumprod_at_integer_steps():
    schedule = LinearSchedule(1e-4, 0.02, 1000)
    betas = [1e-4 + (0.02 - 1e-4) * n / 999 for n in range(1000)]
    alpha_bar = [math.prod(1 - b for b in betas[: n + 1]) for n in (0, 10, 500, 999)]
    alpha, sigma = schedule.alpha_sigma(torch.tensor([0, 10, 500, 999], dtype=torch.float64) / 999)
    torch.testing.assert_close(alpha ** 2, torch.tensor(alpha_bar, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sigma ** 2, 1 - torch.tensor(alpha_bar, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_edm_is_the_karras_grid():
    schedule = EDMSchedule(0.002, 80.0, 7.0)
    alpha, sigma = schedule.alpha_sigma(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(sigma, torch.tensor([0.002, 80.0], dtype=torch.float64))
    assert torch.equal(alpha, torch.ones(2, dtype=torch.float64))
    grid = karras_grid(18)
    expected = [(0.002 ** (1 / 7) + i / 17 * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7 for i in range(18)]
    torch.testing.assert_close(grid, torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_time_round_trips_through_logsnr_and_karras_sigma(schedule):
    torch.testing.assert_close(schedule.t_from_logsnr(schedule.logsnr(T)), T, atol=1e-6, rtol=0)
    torch.testing.assert_close(schedule.t_from_karras_sigma(schedule.karras_sigma(T)), T, atol=1e-6, rtol=0)


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_conversions_agree(schedule):
    alpha, sigma = schedule.alpha_sigma(T)
    torch.testing.assert_close(karras_sigma_from_logsnr(schedule.logsnr(T)), sigma / alpha)
    if schedule.variance_preserving:
        torch.testing.assert_close(alpha ** 2 + sigma ** 2, torch.ones_like(T))
        a2, s2 = vp_alpha_sigma_from_logsnr(schedule.logsnr(T))
        torch.testing.assert_close((a2, s2), (alpha, sigma))


def test_spec_round_trip_and_unknown_name():
    schedule = CosineSchedule(-10.0, 10.0)
    assert repr(build_schedule(schedule.spec())) == repr(schedule)
    with pytest.raises(ValueError, match="valid names are cosine"):
        build_schedule("cosin")
