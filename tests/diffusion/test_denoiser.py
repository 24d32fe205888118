"""Parameterisation round trips and the Denoiser adapter."""
import pytest
import torch
from torch import nn

from distill.diffusion.denoiser import PREDICTIONS, Denoiser, from_x0_eps, to_x0_eps
from distill.diffusion.schedules import CosineSchedule, EDMSchedule, FlowSchedule, LinearSchedule


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("schedule", [CosineSchedule(), LinearSchedule(), EDMSchedule(), FlowSchedule()],
                         ids=lambda s: type(s).__name__)
def test_round_trip(prediction, schedule):
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=generator, dtype=torch.float64), torch.randn(6, 3, generator=generator, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(t)
    x_t = alpha[:, None] * x0 + sigma[:, None] * eps
    output = from_x0_eps(x0, eps, alpha, sigma, prediction)
    back = to_x0_eps(output, x_t, alpha, sigma, prediction)
    torch.testing.assert_close(back.x0, x0)
    torch.testing.assert_close(back.eps, eps)


def test_v_is_salimans_ho_definition():
    alpha, sigma = torch.tensor(0.6), torch.tensor(0.8)
    x0, eps = torch.tensor([1.0]), torch.tensor([2.0])
    assert from_x0_eps(x0, eps, alpha, sigma, "v").item() == pytest.approx(0.6 * 2.0 - 0.8 * 1.0)
    assert from_x0_eps(x0, eps, alpha, sigma, "flow").item() == pytest.approx(1.0)


class Recorder(nn.Module):
    def forward(self, x, time):
        self.time = time
        self.x = x
        return torch.zeros_like(x)


def test_time_inputs_and_input_scaling():
    schedule = EDMSchedule()
    t = torch.tensor([0.5, 0.9])
    sigma = schedule.karras_sigma(t)
    for time_input, expected in [("t", t), ("c_noise", 0.25 * sigma.log()), ("logsnr", -2 * sigma.log()),
                                 ("timestep", t * 999)]:
        net = Recorder()
        Denoiser(net, schedule, "eps", time_input)(torch.ones(2, 3), t)
        torch.testing.assert_close(net.time, expected)
    net = Recorder()
    Denoiser(net, schedule, "eps", input_scaling="unit_variance")(torch.ones(2, 3), t)
    torch.testing.assert_close(net.x, (1 / (1 + sigma ** 2).sqrt())[:, None].expand(2, 3))


def test_loud_errors():
    with pytest.raises(ValueError, match="valid: eps, v, x0, flow"):
        Denoiser(Recorder(), CosineSchedule(), "epsilon")
    with pytest.raises(ValueError, match=r"shaped \(batch,\)"):
        Denoiser(Recorder(), CosineSchedule())(torch.ones(2, 3), torch.ones(3))


@pytest.mark.parametrize("arch", ["time_mlp", "tiny_unet"])
def test_default_networks_keep_the_shape_and_train(arch):
    from distill.diffusion.pipeline import teacher_denoiser
    from distill.diffusion.teacher import denoising_loss

    torch.manual_seed(0)
    denoiser = teacher_denoiser("mnist", (1, 28, 28), "small", arch)
    x = torch.randn(4, 1, 28, 28)
    assert denoiser(x, torch.rand(4)).shape == x.shape
    loss = denoising_loss(denoiser, x, torch.randn_like(x), torch.rand(4))
    loss.backward()
    assert all(p.grad is not None for p in denoiser.parameters())
    with pytest.raises(ValueError, match="valid: time_mlp, tiny_unet"):
        teacher_denoiser("mnist", (1, 28, 28), arch="resnet")
