"""Shared test fixtures: deterministic single-threaded torch, and the shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from shared_data import require_shared

torch.set_num_threads(1)
# train.mixed_precision "auto" picks bf16 on CPUs with AMX / AVX-512 BF16 and fp32 elsewhere; the suite's
# golden values and parity checks are fp32 ones, so "auto" means fp32 here and in the processes tests start
# (tests/training/test_precision.py checks the choice itself)
os.environ["DISTILL_AUTO_PRECISION"] = "no"
# likewise train.channels_last "auto" (NHWC weights for convolutional students) is pinned off: convolutions in
# another memory format round differently (tests/training/test_precision.py checks the layout itself)
os.environ["DISTILL_AUTO_CHANNELS_LAST"] = "0"


@pytest.fixture
def shared_data() -> Path:
    return require_shared()
