"""Samplers driven by the exact mixture denoiser (oracle teacher)."""
import pytest
import torch

from distill.diffusion.metrics import mmd2
from distill.diffusion.samplers import DDIM, Euler, Heun, build_sampler, sample
from distill.diffusion.schedules import CosineSchedule, FlowSchedule
from distill.diffusion.toy import OracleDenoiser, nearest_mode, sample_mixture

NOISE = torch.randn(800, 2, generator=torch.Generator().manual_seed(0))
DATA = sample_mixture(800, torch.Generator().manual_seed(1))


def test_ddim_with_the_oracle_converges_to_the_mixture():
    oracle = OracleDenoiser(CosineSchedule())
    samples = sample(DDIM(oracle.schedule, 64), oracle, NOISE)
    assert mmd2(samples, DATA) < 0.01
    counts = torch.bincount(nearest_mode(samples), minlength=8)
    assert counts.min() > 0.08 * len(NOISE)  # all eight modes, none starved
    radius = samples.norm(dim=1)
    assert (radius - 2.0).abs().median() < 0.1  # on the ring, not between modes


def test_one_ddim_step_collapses_and_mmd_sees_it():
    oracle = OracleDenoiser(CosineSchedule())
    samples = sample(DDIM(oracle.schedule, 1), oracle, NOISE)
    assert samples.norm(dim=1).max() < 0.5  # the posterior mean of pure noise: the data mean
    assert mmd2(samples, DATA) > 1.0


def _reference(oracle, noise):
    return sample(Heun(oracle.schedule, 1024), oracle, noise)  # float64, second order: error < 1e-4


@pytest.mark.parametrize("name", ["ddim", "euler", "heun"])
def test_every_sampler_converges_with_more_steps(name):
    oracle, noise = OracleDenoiser(CosineSchedule()), NOISE[:200].double()
    exact = _reference(oracle, noise)
    errors = [(sample(build_sampler(name, oracle.schedule, n), oracle, noise) - exact).norm(dim=1).mean()
              for n in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_convergence_orders():
    """Halving the step size divides Euler's/DDIM's error by ~2 and Heun's by ~4."""
    oracle, noise = OracleDenoiser(CosineSchedule()), NOISE[:200].double()
    exact = _reference(oracle, noise)
    error = {name: [float((sample(build_sampler(name, oracle.schedule, n), oracle, noise) - exact).norm(dim=1).mean())
                    for n in (32, 64)] for name in ("ddim", "euler", "heun")}
    for name in ("ddim", "euler"):
        assert 1.6 < error[name][0] / error[name][1] < 2.5
    assert error["heun"][0] / error["heun"][1] > 3.3
    assert error["heun"][1] < error["euler"][1] / 5


def test_euler_equals_ddim_on_the_flow_schedule():
    oracle = OracleDenoiser(FlowSchedule())
    sampler_args = dict(t_max=0.999)
    a = sample(Euler(oracle.schedule, 8, **sampler_args), oracle, NOISE[:50].double())
    b = sample(DDIM(oracle.schedule, 8, **sampler_args), oracle, NOISE[:50].double())
    torch.testing.assert_close(a, b)


def test_caller_owns_the_loop_and_calls_are_counted():
    schedule = FlowSchedule()
    sampler = Heun(schedule, 3)
    assert sampler.timesteps.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert sampler.calls == 5  # the last step ends at sigma = 0: Euler
    assert Heun(CosineSchedule(), 3).calls == 6
    with pytest.raises(IndexError):
        sampler.step(OracleDenoiser(schedule), NOISE[:2], 3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        DDIM(schedule, 2, timesteps=torch.tensor([1.0, 0.2, 0.5]))
