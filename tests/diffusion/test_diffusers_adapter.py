"""A tiny randomly initialised diffusers UNet2DModel through the adapter, checked against diffusers' DDIM."""
import os

import pytest
import torch

from distill.diffusion.diffusers_adapter import from_diffusers, schedule_from_scheduler_config
from distill.diffusion.samplers import DDIM, sample

if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
    import diffusers  # CI installs the dev extra, which includes diffusers: never skipped there
else:
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional extra 'diffusion': pip install -e '.[diffusion]'")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


def test_adapter_feeds_integer_scale_timesteps(unet):
    denoiser = from_diffusers(unet)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(denoiser(x, torch.tensor([0.5, 1.0])), unet(x, torch.tensor([499.5, 999.0])).sample)


def test_one_ddim_step_matches_diffusers_ddim_scheduler(unet):
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                        set_alpha_to_one=False, timestep_spacing="leading")
    scheduler.set_timesteps(2)
    assert scheduler.timesteps.tolist() == [500, 0]
    denoiser = from_diffusers(unet, schedule=schedule_from_scheduler_config(scheduler.config))
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = scheduler.step(unet(x, 500).sample, 500, x).prev_sample  # 500 -> 0
        ours = DDIM(denoiser.schedule, 1, timesteps=torch.tensor([500 / 999, 0.0])).step(denoiser, x, 0)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_two_step_sampling_and_errors(unet):
    denoiser = from_diffusers(unet, "v_prediction")
    with torch.no_grad():
        out = sample(DDIM(denoiser.schedule, 2), denoiser, torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="valid: epsilon"):
        from_diffusers(unet, "eps")
    with pytest.raises(ValueError, match="beta_schedule='linear'"):
        schedule_from_scheduler_config({"beta_schedule": "squaredcos_cap_v2"})
