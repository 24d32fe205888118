"""A tiny trained 2-D teacher shared by the diffusion smoke tests."""
import pytest
import torch

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import CosineSchedule
from distill.diffusion.teacher import train_teacher
from distill.diffusion.toy import sample_mixture
from distill.models.unet import TimeMLP


@pytest.fixture(scope="session")
def tiny_teacher():
    """(frozen v-parameterised TimeMLP teacher after 20 steps, its 2-D training data)."""
    torch.manual_seed(0)
    data = sample_mixture(512, torch.Generator().manual_seed(0))
    teacher, _ = train_teacher(Denoiser(TimeMLP((2,), hidden=32, depth=1, time_dim=16), CosineSchedule(), "v"),
                               data, num_steps=20, batch_size=64, progress=False)
    return teacher, data
